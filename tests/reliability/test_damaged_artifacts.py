"""Damaged run artifacts are refused by name: one line, exit 2, nothing written; rerunning their stage rebuilds them.

A small real run: ml-latest-small restricted to a few users (their real ratings,
the real movie table), prepared, augmented (edges by the no-LLM `control`
method, so the report and the augmented tables exist without a model) and
embedded (the bundled MiniLM), each by the real CLI. For every kind of artifact
a later stage reads (a split table, a table written by augment, an embedding,
the augmentation report) the file is truncated, a byte of its data is changed,
or it is deleted, and the command that reads it must print exactly the line
naming the file, what is wrong and the command that rebuilds it, exit 2 and
leave the run as it was. The printed command is then run as printed and must
restore the file the manifest recorded.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tests.reliability.figures import FIGURES
from tests.reliability.processes import llmrec_command, run_llmrec

#: ml-latest-small users kept: the first few with 40-150 ratings (a few hundred items to embed).
SUBSET_USERS = 8
AUGMENT_FLAGS = ("--what", "edges", "--edge-method", "control", "--candidates-epochs", "2", "--limit-users", "0")


@pytest.fixture(scope="module")
def small_run(data_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The prepared, augmented (control edges) and embedded small run, read-only: tests copy it."""
    root = tmp_path_factory.mktemp("damaged_artifacts")
    source = data_mirror / "ml-latest-small"
    ratings = pd.read_csv(source / "ratings.csv")
    counts = ratings.groupby("userId").size()
    keep = counts[(counts >= 40) & (counts <= 150)].index[:SUBSET_USERS]
    data_dir = root / "ml-latest-small"
    data_dir.mkdir()
    ratings[ratings["userId"].isin(keep)].to_csv(data_dir / "ratings.csv", index=False)
    shutil.copy(source / "movies.csv", data_dir / "movies.csv")
    home, run = root / "home", root / "run"
    env = {"LLMREC_HOME": str(home)}
    for args in (("data", "prepare", "--data-dir", str(data_dir), "--run", str(run)),
                 ("augment", str(run), *AUGMENT_FLAGS), ("embed", str(run))):  # fmt: skip
        result = run_llmrec(*args, env=env, timeout=600)
        assert result.returncode == 0, (args, result.stderr[-3000:])
    return {"run": run, "data_dir": data_dir, "home": home}


@pytest.fixture
def run_copy(small_run: dict[str, Path], tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(small_run["run"], target)
    return target


# --- damage ---------------------------------------------------------------------------------------------


def _data_region(path: Path) -> tuple[int, int]:
    """[start, end) of the file's data: past the parquet magic and before its footer, past the .npy header,
    the whole of a JSON file."""
    data = path.read_bytes()
    if path.suffix == ".parquet":
        footer = struct.unpack("<I", data[-8:-4])[0]
        return 4, len(data) - 8 - footer
    if path.suffix == ".npy":
        major = data[6]
        header = struct.unpack("<H", data[8:10])[0] + 10 if major == 1 else struct.unpack("<I", data[8:12])[0] + 12
        return header, len(data)
    return 0, len(data)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip(path: Path) -> None:
    """Change one byte in the middle of the data; in JSON a digit becomes another digit, so it still parses."""
    data = bytearray(path.read_bytes())
    start, end = _data_region(path)
    at = (start + end) // 2
    if path.suffix == ".json":
        at = next(i for i in range(at, end) if chr(data[i]).isdigit())
        data[at] = ord("7") if data[at] != ord("7") else ord("3")
    else:
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def delete(path: Path) -> None:
    path.unlink()


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (truncate, "damaged (sha256 differs from manifest.json)"),
    "flipped": (flip, "damaged (sha256 differs from manifest.json)"),
    "deleted": (delete, "missing"),
}


# --- the artifact kinds, the command that reads each and the one that rebuilds it -----------------------


def _augment_command(run: Path, data_dir: Path) -> str:
    return f"llmrec augment {run} --what edges --limit-users 0 --edge-method control --candidates-epochs 2"


KINDS: dict[str, tuple[str, Callable[[Path], list[str]], Callable[[Path, Path], str]]] = {
    # kind: (artifact, the command that reads it, the command that rebuilds it)
    "split table": ("train.parquet", lambda run: ["data", "info", str(run)],
                    lambda run, data_dir: f"llmrec data prepare ml-latest-small --run {run} --data-dir {data_dir}"),
    "augmented table": ("augmented_edges.parquet", lambda run: ["audit", "edges", str(run)], _augment_command),
    "embedding": ("embeddings/item_text.npy", lambda run: ["train", str(run), "--epochs", "1"],
                  lambda run, data_dir: f"llmrec embed {run}"),
    "augment report": ("augment_report.json", lambda run: ["augment", str(run), "--what", "profiles",
                                                           "--limit-users", "1"], _augment_command),
}  # fmt: skip


def _snapshot(run: Path) -> dict[str, str]:
    return {str(path.relative_to(run)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(run.rglob("*")) if path.is_file()}  # fmt: skip


def _recorded(run: Path, rel: str) -> str:
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    return next(entry["outputs"][rel] for entry in stages.values() if rel in entry["outputs"])


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("kind", list(KINDS))
def test_damaged_artifact_is_refused_in_one_line_naming_it_and_its_rebuild(
    kind: str, damage: str, run_copy: Path, small_run: dict[str, Path]
) -> None:
    rel, reader, rebuild = KINDS[kind]
    damage_file, problem = DAMAGE[damage]
    damage_file(run_copy / rel)
    before = _snapshot(run_copy)
    result = run_llmrec(*reader(run_copy), env={"LLMREC_HOME": str(small_run["home"])})
    expected = f"error: {run_copy / rel}: {problem}; rerun `{rebuild(run_copy, small_run['data_dir'])}`"
    assert result.stderr.splitlines() == [expected], result.stderr[-3000:]
    assert result.returncode == 2
    assert _snapshot(run_copy) == before, "the refused command changed the run"
    FIGURES["damaged run artifacts refused"][f"{kind}, {damage}"] += 1


@pytest.mark.parametrize("kind", ["split table", "embedding", "augment report"])
def test_rerunning_the_printed_command_rebuilds_the_damaged_artifact(
    kind: str, run_copy: Path, small_run: dict[str, Path]
) -> None:
    """The existing equivalent of --force: a stage whose outputs differ from the manifest is not up to date."""
    rel, reader, _ = KINDS[kind]
    env = {"LLMREC_HOME": str(small_run["home"])}  # the embedding cache of the fixture's run: no re-encoding
    original = (run_copy / rel).read_bytes()
    recorded = _recorded(run_copy, rel)
    flip(run_copy / rel)
    refused = run_llmrec(*reader(run_copy), env=env)
    assert refused.returncode == 2, refused.stderr[-3000:]
    command = shlex.split(refused.stderr.strip().split("rerun `", 1)[1].rstrip("`"))
    assert command[0] == "llmrec"
    rebuilt = run_llmrec(*command[1:], env=env, timeout=600)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert hashlib.sha256((run_copy / rel).read_bytes()).hexdigest() == _recorded(run_copy, rel)
    if rel.endswith(".json"):  # the report is rebuilt from the same answers: the same content
        assert json.loads((run_copy / rel).read_text()) == json.loads(original)
    else:  # deterministic stages: the very bytes (and record) of before
        assert (run_copy / rel).read_bytes() == original and _recorded(run_copy, rel) == recorded
    FIGURES["damaged run artifacts rebuilt by rerunning their stage"][kind] += 1



def test_a_refusal_after_pyarrow_failed_to_decode_exits_2_not_134(run_copy: Path) -> None:
    """A table damaged before its stage recorded it passes the checksum, and pyarrow fails inside its worker threads:
    the refusal must still exit 2 with its one line. Without `cli._leave`'s `os._exit` the interpreter's
    finalization aborted ("terminate called without an active exception", exit 134) in 5 of 40 such runs on the
    loaded 2-core box, and this test (32 runs, 4 at a time) failed in 3 of 3 sessions."""
    path = run_copy / "train.parquet"
    original = path.read_bytes()
    start, end = _data_region(path)
    for at in range((start + end) // 2, end):  # the first changed byte that pyarrow cannot decode past
        data = bytearray(original)
        data[at] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            pd.read_parquet(path)
        except Exception:  # noqa: BLE001 - whatever pyarrow raises
            break
    else:
        pytest.fail("no changed byte of the data region made the table unreadable")
    manifest = json.loads((run_copy / "manifest.json").read_text())
    manifest["stages"]["prepare"]["outputs"]["train.parquet"] = hashlib.sha256(
        (run_copy / "train.parquet").read_bytes()).hexdigest()
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    expected_start = f"error: {run_copy / 'train.parquet'}: not a readable parquet table ("
    for _ in range(8):
        processes = [subprocess.Popen(llmrec_command("data", "info", str(run_copy)), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True) for _ in range(4)]  # fmt: skip
        for process in processes:
            _, stderr = process.communicate(timeout=120)
            assert process.returncode == 2, (process.returncode, stderr[-2000:])
            assert len(stderr.splitlines()) == 1 and stderr.startswith(expected_start), stderr[-2000:]
