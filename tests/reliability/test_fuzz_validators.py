"""Property-based fuzzing of every LLM-answer parser and validator.

The contract (llmrec/augment/validate.py): whatever an LLM returns - random
text, JSON of the wrong shape, huge strings, any unicode, even a non-string -
the only exception that escapes is `AnswerValidationError`, and a value that
is accepted satisfies every invariant the downstream stages rely on
(candidate membership, not in the training history, liked != disliked, typed
and capped fields). The strategies aim close to the valid region (right keys,
odd values, chatter, fences, unicode digits) because that is where a parser's
edge cases live; `derandomize=True` makes every CI run try the same cases.

Each fuzzer is run by a test that asserts its own case count and that both
accepted and refused answers were reached; the counts also go to
`tests.reliability.figures` (printed at the end of the session).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmrec.augment import schemas
from llmrec.augment.validate import (
    AGE_RANGE,
    MAX_TEXT_CHARS,
    NULL_TOKENS,
    AnswerValidationError,
    EdgeChoice,
    extract_json_object,
    validate_attribute_answer,
    validate_edge_answer,
    validate_profile_answer,
)
from tests.reliability.figures import FIGURES

def fuzz(max_examples: int) -> settings:
    """Reproducible settings: the same cases on every run, no example database."""
    return settings(
        max_examples=max_examples, derandomize=True, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )  # fmt: skip

# --- strategies ---------------------------------------------------------------------------

_odd_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40
) | st.sampled_from(
    ["", " ", "unknown", "N/A", "null", "None", "-", "?", "various", "\u00a0", "\u200b", "e\u0301", "١٢", "²",
     "３０", "25-34", "30s", "65+", "1e3", "NaN", "Infinity", "true", "\x00", "{}", "[]", "🙂" * 3]
)  # fmt: skip
# Digit-like text: ASCII, other scripts' decimal digits (Nd) and lookalikes such as "²" or "①" (No).
_numberish = st.text(alphabet=st.sampled_from("0123456789 ²³¹①⑨٣３"), min_size=1, max_size=4) | st.text(
    alphabet=st.characters(whitelist_categories=("Nd", "No", "Zs")), min_size=1, max_size=4
)
_scalars = (
    _numberish | st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-3, max_value=14) | _odd_text
    | st.integers(min_value=-3, max_value=14).map(str)
)  # fmt: skip
_json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(_odd_text, inner, max_size=5),
    max_leaves=16,
)
_huge = st.builds(lambda piece, times: piece * times, st.text(min_size=1, max_size=8), st.integers(500, 30_000))
_field_values = _json_values | st.lists(_odd_text, max_size=15) | _huge

# Values aimed at each field's parser (the rest get `_field_values`).
_candidate_numbers = _numberish | st.integers(-3, 14) | st.integers(-3, 14).map(str) | st.floats(-3, 14) | _field_values
_FOCUSED_VALUES = {
    "liked": _candidate_numbers,
    "disliked": _candidate_numbers,
    "age": _numberish | st.integers(-5, 130) | st.floats() | st.sampled_from(["25-34", "30s", "65+", "18 to 24", "40 years old", "34-25"]) | _field_values,
    "gender": st.sampled_from(["M", "f", "Woman", "non binary", "robot", " MALE "]) | _field_values,
}
# Keys as models spell them: canonical, cased, spaced, aliased, or unrelated.
_KEY_SPELLINGS = {
    "liked": ["liked", "Liked", "LIKED", "like", " liked "],
    "disliked": ["disliked", "Disliked", "dislike", "DisLiked"],
    "age": ["age", "Age"],
    "gender": ["gender", "sex", "Gender"],
    "liked_genres": ["liked_genres", "liked genre", "Liked-Genres"],
    "disliked_genres": ["disliked_genres", "disliked genre"],
    "liked_directors": ["liked_directors", "liked director"],
    "country": ["country", "Country"],
    "language": ["language", "Language "],
    "director": ["director", "Director"],
}


_VALID = {
    "liked": 1, "disliked": 2, "age": 31, "gender": "female", "liked_genres": ["Drama"], "disliked_genres": [],
    "liked_directors": ["Agnès Varda"], "country": "France", "language": "French", "director": "Agnès Varda",
}  # fmt: skip


def _answer_dict(fields: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid answer with keys re-spelt, up to three fields given odd values, maybe one dropped, stray keys."""
    spellings = st.tuples(*(st.sampled_from(_KEY_SPELLINGS[f]) for f in fields))
    odd_values = st.tuples(*(_FOCUSED_VALUES.get(f, _field_values) for f in fields))
    mutated = st.sets(st.sampled_from(fields), max_size=3)
    dropped = st.sets(st.sampled_from(fields), max_size=1) | st.just(set())
    extras = st.dictionaries(_odd_text, _json_values, max_size=2)

    def assemble(keys: tuple[str, ...], odd: tuple[Any, ...], change: set[str], drop: set[str], extra: dict[str, Any]) -> dict[str, Any]:
        answer = dict(extra)
        for field, key, value in zip(fields, keys, odd):
            if field not in drop:
                answer[key] = value if field in change else _VALID[field]
        return answer

    return st.builds(assemble, spellings, odd_values, mutated, dropped, extras)


def _wrapped(objects: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """JSON text the way an LLM might send it: bare, fenced, amid chatter, truncated, or not a str at all."""
    dumped = st.builds(lambda obj, ascii_only: json.dumps(obj, ensure_ascii=ascii_only), objects, st.booleans())

    def wrap(text: str, how: str, chatter: str, cut: int) -> Any:
        return {
            "bare": text,
            "fence": f"```json\n{text}\n```",
            "chatter": f"{chatter} {text} {chatter}",
            "two": f"{{broken {chatter} {text}",
            "truncated": text[: max(0, len(text) - cut)],
            "padded": " " * 20_500 + text,  # past MAX_ANSWER_CHARS: must be refused, never half-read
            "bytes": text.encode("utf-8"),
        }[how]

    hows = st.sampled_from(["bare", "bare", "fence", "chatter", "two", "truncated", "padded", "bytes"])
    return st.builds(wrap, dumped, hows, _odd_text, st.integers(1, 5))


_any_answer = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.sampled_from('{}[]":,0123456789 likedsgaretn\\'), max_size=120),
    _wrapped(_json_values),
    st.none(), st.integers(), st.binary(max_size=50), st.lists(st.integers(), max_size=3),
)  # fmt: skip



def _mostly_near_valid(near_valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Three in four cases near the valid region, the rest anything at all (one_of would flatten 1:7)."""
    return st.integers(0, 3).flatmap(lambda pick: near_valid if pick else _any_answer)


# --- invariants -----------------------------------------------------------------------------


def _check_text(value: object, field: str) -> None:
    assert value is None or isinstance(value, str), (field, value)
    if isinstance(value, str):
        assert value and value == value.strip() and len(value) <= MAX_TEXT_CHARS, (field, value)
        assert value.lower() not in NULL_TOKENS, (field, value)


def _check_profile(profile: dict[str, Any]) -> None:
    assert tuple(profile) == schemas.PROFILE_FIELDS
    age = profile["age"]
    assert age is None or (type(age) is int and AGE_RANGE[0] <= age <= AGE_RANGE[1]), age
    assert profile["gender"] in (None, "male", "female", "other")
    for field in ("liked_genres", "disliked_genres", "liked_directors"):
        entries = profile[field]
        assert isinstance(entries, list) and len(entries) <= schemas.MAX_LIST_ITEMS
        for entry in entries:
            _check_text(entry, field)
            assert entry is not None
        assert len({e.lower() for e in entries}) == len(entries), (field, entries)
    _check_text(profile["country"], "country")
    _check_text(profile["language"], "language")
    assert any(profile.values()), profile


def _check_attributes(attributes: dict[str, Any]) -> None:
    assert tuple(attributes) == schemas.ATTRIBUTE_FIELDS
    for field, value in attributes.items():
        _check_text(value, field)
    assert any(attributes.values())


def _validate_or_reason(validate: Any, *args: Any) -> Any:
    """The accepted value, or None when refused with a non-empty reason (any other exception fails)."""
    try:
        return validate(*args)
    except AnswerValidationError as exc:
        assert isinstance(exc.reason, str) and exc.reason.strip()
        assert "\n" not in exc.reason and len(exc.reason) < 300, exc.reason
        return None


# --- properties -----------------------------------------------------------------------------

_candidates = st.lists(st.integers(0, 60), min_size=1, max_size=12, unique=True) | st.lists(
    st.integers(0, 60), min_size=5, max_size=12, unique=True
)


def _run_fuzzer(what: str, examples: int, check: Callable[..., bool], **strategies: st.SearchStrategy) -> Counter[str]:
    """Run `check` on `examples` generated cases; returns how many ran and how many were accepted.

    The hypothesis test is built here rather than collected, so the test that
    calls this can assert its own case counts (a fuzzer that ran 0 cases, or
    never reached an accepted answer, is a failure, not a quiet pass).
    """
    counts: Counter[str] = Counter()

    @fuzz(examples)
    @given(**strategies)
    def case(**kwargs: Any) -> None:
        counts["cases"] += 1
        if check(**kwargs):
            counts["accepted"] += 1

    case()
    FIGURES["validator fuzz cases"][what] += counts["cases"]
    if counts["accepted"]:
        FIGURES["validator fuzz accepted"][what] += counts["accepted"]
    return counts


def _check_edge(answer: object, candidates: list[int], history: set[int]) -> bool:
    choice = _validate_or_reason(validate_edge_answer, answer, candidates, history)
    if choice is None:
        return False
    assert isinstance(choice, EdgeChoice)
    assert type(choice.liked) is int and type(choice.disliked) is int
    assert choice.liked in candidates and choice.disliked in candidates
    assert choice.liked not in history and choice.disliked not in history
    assert choice.liked != choice.disliked
    return True


def test_edge_validator() -> None:
    counts = _run_fuzzer(
        "edge", 900, _check_edge,
        answer=_mostly_near_valid(_wrapped(_answer_dict(("liked", "disliked")))),
        candidates=_candidates,
        history=st.sets(st.integers(0, 60), max_size=15) | st.sets(st.integers(61, 90), max_size=15),
    )  # fmt: skip
    assert counts["cases"] == 900
    assert 0 < counts["accepted"] < counts["cases"], counts  # both sides of the contract were reached


def _check_profile_answer(answer: object) -> bool:
    profile = _validate_or_reason(validate_profile_answer, answer)
    if profile is not None:
        _check_profile(profile)
    return profile is not None


def test_profile_validator() -> None:
    counts = _run_fuzzer("profile", 900, _check_profile_answer,
                         answer=_mostly_near_valid(_wrapped(_answer_dict(schemas.PROFILE_FIELDS))))  # fmt: skip
    assert counts["cases"] == 900
    assert 0 < counts["accepted"] < counts["cases"], counts


def _check_attribute_answer(answer: object) -> bool:
    attributes = _validate_or_reason(validate_attribute_answer, answer)
    if attributes is not None:
        _check_attributes(attributes)
    return attributes is not None


def test_attribute_validator() -> None:
    counts = _run_fuzzer("attributes", 700, _check_attribute_answer,
                         answer=_mostly_near_valid(_wrapped(_answer_dict(schemas.ATTRIBUTE_FIELDS))))  # fmt: skip
    assert counts["cases"] == 700
    assert 0 < counts["accepted"] < counts["cases"], counts


def _check_extraction(answer: object) -> bool:
    found = _validate_or_reason(extract_json_object, answer)
    if found is not None:
        assert isinstance(found, dict)
    return found is not None


def test_json_extraction() -> None:
    counts = _run_fuzzer("extract", 500, _check_extraction, answer=_any_answer)
    assert counts["cases"] == 500
    assert 0 < counts["accepted"] < counts["cases"], counts


def _check_roundtrip(obj: dict[str, Any], chatter: str) -> bool:
    """An object after chatter without braces is found and equals what was sent (NaN aside)."""
    chatter = chatter.replace("{", "(").replace("`", "'")
    text = f"{chatter} {json.dumps(obj)}"
    found = extract_json_object(text)
    assert json.dumps(found, sort_keys=True) == json.dumps(obj, sort_keys=True) or _has_nan(obj)
    return True


def test_json_extraction_finds_an_embedded_object() -> None:
    counts = _run_fuzzer("extract roundtrip", 300, _check_roundtrip,
                         obj=st.dictionaries(st.text(max_size=8), _json_values, max_size=5), chatter=st.text(max_size=40))  # fmt: skip
    assert counts["cases"] == counts["accepted"] == 300


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    return False


@pytest.mark.parametrize(
    "text",
    [
        '{"liked": "²", "disliked": 1}',  # str.isdigit() is True for superscripts, int() refuses them
        '{"liked": "¹²", "disliked": "1"}',
        '{"liked": "①", "disliked": 1}',
    ],
)
def test_unicode_digit_lookalikes_are_refused_cleanly(text: str) -> None:
    """These once escaped as a bare ValueError from int() (`str.isdigit` accepts them, `int` does not)."""
    with pytest.raises(AnswerValidationError, match="candidate number"):
        validate_edge_answer(text, [40, 41, 42], set())


def test_edge_validator_accepts_unicode_decimal_digits() -> None:
    # Arabic-Indic and full-width digits are real decimal digits: int() reads them.
    assert validate_edge_answer('{"liked": "٢", "disliked": "３"}', [40, 41, 42], set()) == EdgeChoice(41, 42)
