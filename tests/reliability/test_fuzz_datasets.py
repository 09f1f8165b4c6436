"""Fuzzed dataset files through `llmrec data prepare`, for every loader.

Each case damages one file of a tiny dataset written in the exact published
format (tests/data/fixtures.py): truncation at seeded random offsets, wrong
delimiter, wrong encoding (UTF-16, BOM, latin-1 bytes), duplicate rows, negative,
fractional, infinite or 20-digit ids, NaN / inf / empty ratings, random byte
flips, extra fields, dropped lines. The command runs through the real CLI entry
(`llmrec.cli.main`, in-process for speed; a few cases also in a subprocess) and
must end in exactly one of two ways:

- exit 2 with one `error: ...` line naming the file and no traceback; the run
  directory is then absent (fresh run) or byte-for-byte unchanged (rerun over a
  good run);
- exit 0 with a complete, consistent run, where any damage was a documented,
  counted cleaning step (`duplicates_dropped`, `items_without_metadata`, ...) or
  is indistinguishable from a valid file (a cut exactly at a line end).

Anything else - a traceback, an exception other than SystemExit, a half-written
run - fails the test. An accepted file must also still say what the original
said wherever its bytes did not change (checked against the test's own parse
of the original, see `_check_same_content`). Case counts per outcome go into
`tests.reliability.figures` for docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.data import fixtures
from tests.reliability.figures import FIGURES

REPO_ROOT = Path(__file__).resolve().parents[2]
CASES = FIGURES["damaged dataset files"]
OUTCOMES = ("clear error, nothing written", "accepted, counted cleaning", "accepted as valid")
RANDOM_CASES_PER_FILE = 10

LOADERS: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "ml-latest-small": (fixtures.write_movielens_csv, ("ratings.csv", "movies.csv")),
    "csv": (fixtures.write_movielens_csv, ("ratings.csv", "movies.csv")),
    "ml-100k": (fixtures.write_ml_100k, ("u.data", "u.item", "u.user")),
    "ml-1m": (fixtures.write_ml_1m, ("ratings.dat", "movies.dat", "users.dat")),
    "llmrec-format": (fixtures.write_llmrec_release, ("train.json", "val.json", "item_attribute.csv", "text_feat.npy")),
}
# Files whose rows are interactions: appending a copy of every row must be counted as duplicates.
INTERACTION_FILES = {"ratings.csv", "u.data", "ratings.dat"}
BAD_TOKENS = ["NaN", "inf", "", "-7", "1.5", "1e400", "99999999999999999999999", "²", "\x00"]


# --- mutations ---------------------------------------------------------------------------


def _separator(line: bytes) -> bytes | None:
    for sep in (b"::", b"\t", b"|", b","):
        if sep in line:
            return sep
    return None


def _replace_field(data: bytes, line_no: int, field: int, token: bytes) -> bytes:
    lines = data.split(b"\n")
    line = lines[line_no]
    sep = _separator(line)
    if sep is None:
        return data.replace(b"1", token, 1)
    fields = line.split(sep)
    fields[min(field, len(fields) - 1)] = token
    lines[line_no] = sep.join(fields)
    return b"\n".join(lines)


def fixed_mutations(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """The catalogue every text file gets."""
    yield "empty file", b""
    yield "utf-16", data.decode("latin-1").encode("utf-16")
    yield "utf-8 BOM", b"\xef\xbb\xbf" + data
    yield "latin-1 byte", data.replace(b"o", b"\xe9", 1)
    yield "duplicate rows", data + (data if data.endswith(b"\n") else b"\n" + data)
    yield "CRLF", data.replace(b"\n", b"\r\n")
    yield "no final newline", data.rstrip(b"\n")
    sep = _separator(data.split(b"\n")[0])
    if sep is not None:
        for wrong in (b";", b"\t", b",", b" "):
            if wrong != sep:
                yield f"delimiter {sep!r} -> {wrong!r}", data.replace(sep, wrong)
        yield "extra fields", data.replace(b"\n", sep + b"x" + sep + b"y\n", 2)
        row = 1 if len(data.split(b"\n")) > 2 else 0
        for token in BAD_TOKENS:
            for field in (0, 2):
                yield f"field {field} = {token!r}", _replace_field(data, row, field, token.encode())
    if name.endswith(".json"):
        for text in ['[]', 'null', '{"0": [1, -2]}', '{"-1": [1]}', '{"²": [1]}', '{"0": [1.5]}', '{"0": [NaN]}',
                     '{"0": [1e400]}', '{"0": [99999999999999999999]}', '{"0": [1, 1, 1]}', '{"0": "1"}',
                     '{"0": [true]}', '{"0": [' + "[" * 5000 + "]" * 5000 + ']}']:  # fmt: skip
            yield f"json {text[:30]}", text.encode()


def random_mutations(data: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """Seeded random damage: cuts, byte flips, dropped / repeated lines, bad tokens."""
    for _ in range(RANDOM_CASES_PER_FILE):
        kind = rng.choice(["truncate", "truncate", "flip", "drop line", "repeat line", "token"])
        if kind == "truncate":
            cut = rng.randrange(0, max(1, len(data)))
            yield f"truncated at byte {cut}", data[:cut]
        elif kind == "flip":
            buf = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            yield "byte flips", bytes(buf)
        else:
            lines = data.split(b"\n")
            i = rng.randrange(len(lines))
            if kind == "drop line":
                yield f"line {i + 1} dropped", b"\n".join(lines[:i] + lines[i + 1 :])
            elif kind == "repeat line":
                yield f"line {i + 1} repeated", b"\n".join(lines[: i + 1] + lines[i:])
            else:
                token = rng.choice(BAD_TOKENS)
                yield f"line {i + 1} field = {token!r}", _replace_field(data, i, rng.randrange(4), token.encode())


def npy_mutations(good: np.ndarray) -> Iterator[tuple[str, bytes]]:
    def dump(array: np.ndarray, allow_pickle: bool = False) -> bytes:
        import io

        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=allow_pickle)
        return buffer.getvalue()

    whole = dump(good)
    yield "npy truncated", whole[: len(whole) // 2]
    yield "npy header only", whole[:128]
    yield "npy empty", b""
    yield "npy wrong rows", dump(good[:-1])
    yield "npy 1-D", dump(good[:, 0])
    yield "npy object array (a pickle)", dump(np.array([{"a": 1}] * good.shape[0], dtype=object), allow_pickle=True)
    yield "npy strings", dump(np.array([["x"] * good.shape[1]] * good.shape[0]))
    nan = good.copy()
    nan[1, 1] = np.nan
    yield "npy NaN value", dump(nan)
    inf = good.copy()
    inf[0, 0] = np.inf
    yield "npy inf value", dump(inf)
    yield "not npy at all", b"PK\x03\x04 this is a zip, not an array"


# --- what an accepted file must still say ----------------------------------------------------

# Interaction files of the line formats: (file, field separator, header lines).
INTERACTION_FORMAT = {"ratings.csv": (b",", 1), "u.data": (b"\t", 0), "ratings.dat": (b"::", 0)}
LLMREC_SPLITS = ("train.json", "val.json", "test.json")
MIN_RATING = 4.0  # prepare's default positive threshold


def _lines(data: bytes) -> list[bytes]:
    """Lines without the byte-level differences a loader must ignore (BOM, CRLF, a final newline)."""
    data = data.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n")
    return [line for line in data.split(b"\n") if line]


def _int(text: bytes | str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _record(line: bytes, sep: bytes) -> tuple[int, int, float, int] | None:
    """(user, item, rating, timestamp) of a well-formed interaction line, else None."""
    fields = line.split(sep)
    if len(fields) != 4:
        return None
    user, item, timestamp = _int(fields[0]), _int(fields[1]), _int(fields[3])
    try:
        rating = float(fields[2])
    except ValueError:
        return None
    if None in (user, item, timestamp) or not np.isfinite(rating):
        return None
    return user, item, rating, timestamp


def _run_interactions(run: Path) -> dict[str, set[tuple]]:
    """Per split, the run's interactions in the dataset's own ids: {(user, item, rating, timestamp)}."""
    users = pd.read_parquet(run / "users.parquet").set_index("user")["original_id"].map(_int)
    items = pd.read_parquet(run / "items.parquet").set_index("item")["original_id"].map(_int)
    out = {}
    for split in ("train", "val", "test"):
        frame = pd.read_parquet(run / f"{split}.parquet")
        out[split] = {
            (users[row.user], items[row.item], float(row.rating), int(row.timestamp)) if "timestamp" in frame
            else (users[row.user], items[row.item]) for row in frame.itertuples()
        }  # fmt: skip
    return out


def _check_same_content(loader: str, file: str, damaged: bytes, run: Path, pristine: Path) -> str | None:
    """An accepted damaged file still says what the original said wherever its bytes did not change.

    Interactions are checked against the test's own parse of the original
    file, not against the loader: every positive of an unchanged line is in
    the run with the same ids, rating and timestamp, and every interaction in
    the run comes from an unchanged line or from a changed line that names
    that user and item. Damage to any other file must leave the interactions
    exactly as the original files say. Returns what differs, or None.
    """
    got = _run_interactions(run)
    if loader == "llmrec-format":
        for split_file in LLMREC_SPLITS:
            data = damaged if split_file == file else (pristine / split_file).read_bytes()
            try:
                parsed = json.loads(data.decode("utf-8-sig"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                return f"{split_file} was accepted but is not JSON the test can read"
            expected = {(int(user), int(item)) for user, items in parsed.items() for item in items}
            split = split_file.removesuffix(".json")
            if {pair[:2] for pair in got[split]} != expected:
                return f"{split} interactions differ from {split_file}: run {sorted(got[split])[:6]}, file {sorted(expected)[:6]}"
        return None
    interaction_file = next(name for name in LOADERS[loader][1] if name in INTERACTION_FORMAT)
    sep, header = INTERACTION_FORMAT[interaction_file]
    before = _lines((pristine / interaction_file).read_bytes())[header:]
    after = _lines(damaged if file == interaction_file else (pristine / interaction_file).read_bytes())
    unchanged = Counter(before) & Counter(after)
    changed = [_record(line, sep) for line in (Counter(after) - unchanged).elements()]
    touched = {(r[0], r[1]) for r in changed if r is not None}  # pairs a changed line may have altered
    kept = {r for r in (_record(line, sep) for line in unchanged.elements()) if r is not None}
    expected = {r for r in kept if r[2] >= MIN_RATING and (r[0], r[1]) not in touched}
    found = set().union(*got.values())
    missing = expected - found
    if missing:
        return f"interactions of unchanged lines missing or altered: {sorted(missing)[:5]}"
    foreign = {r for r in found - expected if (r[0], r[1]) not in touched}
    if foreign:
        return f"interactions that no line of the file says: {sorted(foreign)[:5]}"
    return None


# --- running one case ----------------------------------------------------------------------


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    from llmrec.cli import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["llmrec", *args])
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    else:  # pragma: no cover - main always exits
        code = 0
    return code, capsys.readouterr().err


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _check_complete_run(run: Path) -> dict[str, object]:
    """A successful prepare: every table readable, ids contiguous, ratings finite; returns its stats."""
    manifest = json.loads((run / "manifest.json").read_text())
    stats = manifest["stages"]["prepare"]["stats"]
    items = pd.read_parquet(run / "items.parquet")
    users = pd.read_parquet(run / "users.parquet")
    assert items["item"].tolist() == list(range(len(items)))
    assert users["user"].tolist() == list(range(len(users)))
    for split in ("train", "val", "test"):
        frame = pd.read_parquet(run / f"{split}.parquet")
        assert frame["user"].between(0, len(users) - 1).all() and frame["item"].between(0, len(items) - 1).all()
        assert np.isfinite(frame["rating"].to_numpy()).all()
    for rel in manifest["stages"]["prepare"]["outputs"]:
        assert (run / rel).is_file(), rel
        if rel.endswith(".npy"):
            assert np.isfinite(np.load(run / rel)).all(), rel
    return stats


def _check_case(
    loader: str, file: str, label: str, data: bytes, tmp: Path, good_run: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> str | None:  # fmt: skip
    """Run one damaged dataset; returns a description of what went wrong, or None."""
    write, _ = LOADERS[loader]
    source = tmp / "source"
    shutil.rmtree(source, ignore_errors=True)
    write(source)
    (source / file).write_bytes(data)
    fresh = tmp / "fresh-run"
    shutil.rmtree(fresh, ignore_errors=True)
    code, err = _run_cli(["data", "prepare", loader, "--data-dir", str(source), "--run", str(fresh)], capsys, monkeypatch)
    where = f"{loader}/{file} [{label}]"
    if "Traceback" in err:
        return f"{where}: traceback\n{err[-800:]}"
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        if len(errors) != 1:
            return f"{where}: expected one 'error:' line, got {err[-400:]!r}"
        if str(source) not in errors[0] and loader not in errors[0]:
            return f"{where}: the error does not name the file or dataset: {errors[0]}"
        if fresh.exists():
            return f"{where}: failed but left a run directory behind"
        # The same bad input over an existing good run must leave it untouched.
        rerun = tmp / "rerun"
        shutil.rmtree(rerun, ignore_errors=True)
        shutil.copytree(good_run, rerun)
        before = _snapshot(rerun)
        code_again, _ = _run_cli(["data", "prepare", loader, "--data-dir", str(source), "--run", str(rerun)], capsys, monkeypatch)
        if code_again != 2 or _snapshot(rerun) != before:
            return f"{where}: rerun over a good run changed it (exit {code_again})"
        CASES["clear error, nothing written"] += 1
        return None
    if code != 0:
        return f"{where}: exit {code}: {err[-400:]}"
    stats = _check_complete_run(fresh)
    differs = _check_same_content(loader, file, data, fresh, tmp / "pristine")
    if differs:
        return f"{where}: accepted, but {differs}"
    if label == "duplicate rows" and file in INTERACTION_FILES:
        if not stats.get("duplicates_dropped"):
            return f"{where}: duplicate interactions were not counted ({stats})"
        CASES["accepted, counted cleaning"] += 1
    elif any(stats.get(k) for k in ("duplicates_dropped", "items_without_metadata")):
        CASES["accepted, counted cleaning"] += 1
    else:
        CASES["accepted as valid"] += 1
    return None


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A scratch folder on tmpfs when there is one: hundreds of prepared runs fsync their files."""
    import tempfile

    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="llmrec-fuzz-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def good_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One good prepared run per loader (what a bad rerun must not touch)."""
    from llmrec.data import PrepareConfig, prepare_run

    runs = {}
    for loader, (write, _) in LOADERS.items():
        base = tmp_path_factory.mktemp(f"good-{loader}")
        source = write(base / "source")
        prepare_run(base / "run", PrepareConfig(dataset=loader, data_dir=str(source)))
        runs[loader] = base / "run"
    return runs


@pytest.mark.parametrize(
    ("loader", "file"), [(loader, file) for loader, (_, files) in LOADERS.items() for file in files]
)
def test_damaged_file_gives_a_clear_error_or_a_counted_cleaning(
    loader: str, file: str, good_runs: dict[str, Path], scratch: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    write, _ = LOADERS[loader]
    tmp_path = scratch
    original = (write(tmp_path / "pristine") / file).read_bytes()
    if file.endswith(".npy"):
        cases = list(npy_mutations(np.load(tmp_path / "pristine" / file)))
    else:
        seed = int(hashlib.sha256(f"{loader}/{file}".encode()).hexdigest()[:8], 16)
        cases = list(fixed_mutations(file, original)) + list(random_mutations(original, random.Random(seed)))
    problems = []
    decided = sum(CASES[outcome] for outcome in OUTCOMES)
    for label, data in cases:
        CASES["cases"] += 1
        problem = _check_case(loader, file, label, data, tmp_path, good_runs[loader], capsys, monkeypatch)
        if problem:
            problems.append(problem)
    assert not problems, "\n".join(problems[:10]) + f"\n({len(problems)} of {len(cases)} cases failed)"
    assert len(cases) >= 10 and sum(CASES[outcome] for outcome in OUTCOMES) - decided == len(cases)


@pytest.mark.parametrize(
    ("loader", "file", "damage", "expected"),
    [
        ("ml-1m", "users.dat", lambda d: d + d, "repeats id 1"),
        ("csv", "ratings.csv", lambda d: d.replace(b"5.0", b"inf", 1), "is not a finite number"),
        ("ml-100k", "u.data", lambda d: d.replace(b"\t", b",", 3), "fewer than 4"),
        ("llmrec-format", "train.json", lambda d: d[: len(d) // 2], "not valid JSON"),
    ],
)
def test_real_process_exits_2_with_one_line(
    loader: str, file: str, damage: Callable[[bytes], bytes], expected: str, tmp_path: Path
) -> None:
    """The same contract in a real `python -m llmrec` process: exit 2, one line, no traceback, no run."""
    write, _ = LOADERS[loader]
    source = write(tmp_path / "source")
    (source / file).write_bytes(damage((source / file).read_bytes()))
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "llmrec", "data", "prepare", loader, "--data-dir", str(source), "--run", str(run)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, env={**os.environ},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0] and file in errors[0], result.stderr
    assert not run.exists()
