"""Measured figures of the reliability tests, printed once at the end of the session.

The tests that produce a figure also assert it (kills landed, fuzzers ran,
cases were checked); this module only collects what they measured so that
`pytest tests/reliability` ends with the numbers docs/reliability.md quotes,
without a "test" that asserts nothing (see `pytest_terminal_summary` in
tests/reliability/conftest.py).
"""

from __future__ import annotations

from collections import Counter, defaultdict

#: topic -> counter of what was measured (e.g. "kills" -> {"augment": 10, ...}).
FIGURES: defaultdict[str, Counter[str]] = defaultdict(Counter)
#: topic -> free-form lines (e.g. the progress at every kill).
NOTES: defaultdict[str, list[str]] = defaultdict(list)


def summary_lines() -> list[str]:
    """One line per topic that was measured in this session (nothing when none ran)."""
    lines = [f"{topic}: {dict(counts)}" for topic, counts in sorted(FIGURES.items()) if counts]
    for topic, notes in sorted(NOTES.items()):
        lines += [f"{topic}: {note}" for note in notes]
    return lines
