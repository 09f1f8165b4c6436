"""Run-directory artifacts: atomic writes, checksums and the provenance manifest.

Every stage reads and writes plain files (parquet / npy / json) in a run
directory. Writes go to a temporary file in the same directory and are renamed
into place, so a crash or a bad input never leaves a half-written artifact and
never destroys the previous good one. `manifest.json` records, per stage, its
parameters, the checksums of what it read and wrote, and library versions, so a
rerun with identical inputs can be recognised and skipped.

What a stage reads from a run goes through `open_run_artifact` (and the
readers built on it: `read_run_parquet`, `load_run_npy`, `read_run_json`): the
file is hashed and compared with the sha256 the manifest recorded for it
before it is parsed, so a damaged, truncated or missing artifact stops the
reader with one line that names the file and the command that rebuilds it
(`llmrec.rebuild`), instead of a parser's traceback or silently wrong numbers.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import platform
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from llmrec import __version__
from llmrec.errors import ArtifactError

MANIFEST_NAME = "manifest.json"

# Run-directory file names, relative to the run. A stage that writes a file and every stage
# or report that reads it name it from here, so renaming an artifact is a change in one line.
USERS = "users.parquet"
ITEMS = "items.parquet"
TRAIN = "train.parquet"
VAL = "val.parquet"
TEST = "test.parquet"
SPLIT_FILES = {"train": TRAIN, "val": VAL, "test": TEST}  # split name -> its interactions table
CANDIDATES = "candidates.parquet"
AUGMENTED_EDGES = "augmented_edges.parquet"
EDGE_SCORES = "edge_scores.parquet"
USER_PROFILES = "user_profiles.parquet"
ITEM_ATTRIBUTES = "item_attributes.parquet"
AUGMENT_REPORT = "augment_report.json"
AUDIT_PROFILES = "audit_profiles.json"
AUDIT_EDGES = "audit_edges.json"
EMBEDDINGS_DIR = "embeddings"
ITEM_TEXT_EMBEDDINGS = f"{EMBEDDINGS_DIR}/item_text.npy"
ITEM_ATTRIBUTES_EMBEDDINGS = f"{EMBEDDINGS_DIR}/item_attributes.npy"
ITEM_ATTRIBUTES_MASK = f"{EMBEDDINGS_DIR}/item_attributes_mask.npy"
USER_PROFILES_EMBEDDINGS = f"{EMBEDDINGS_DIR}/user_profiles.npy"
USER_PROFILES_MASK = f"{EMBEDDINGS_DIR}/user_profiles_mask.npy"
IMAGE_EMBEDDINGS = f"{EMBEDDINGS_DIR}/image.npy"
MODEL_DIR = "model"
COMPARISON = f"{MODEL_DIR}/comparison.json"
CONFIG = "config.json"
REPORT = "report.md"


def create_unique(folder: Path, prefix: str, suffix: str, *, directory: bool = False) -> Path:
    """Create a new, uniquely named empty file (or folder) in `folder` with the mode `open()` would give.

    `tempfile.mkstemp` / `mkdtemp` create 0600 / 0700 entries, and renaming one
    into place would make a run unreadable to a teammate on a shared server.
    Creating with 0666 / 0777 lets the kernel apply the umask (and default
    ACLs) exactly as for an ordinary `open(path, "w")` / `mkdir`, without
    touching the process-wide umask. O_EXCL makes the name ours alone.
    """
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            if directory:
                os.mkdir(path, 0o777)
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{folder}: no free temporary name {prefix}*{suffix} after 100 tries")


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` on success.

    The temporary file lives in the same directory so the final `os.replace`
    is atomic on POSIX. On any exception the temporary file is removed and the
    old `target` (if any) is left untouched. The final file has the mode an
    ordinary `open()` would give it (umask applied), not mkstemp's 0600.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = create_unique(target.parent, f".{target.name}.", ".tmp")
    try:
        yield tmp_path
        with open(tmp_path, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path | str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path | str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (expected a JSON artifact)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None


def write_parquet(path: Path | str, frame: Any) -> None:
    """Write a pandas DataFrame as parquet, atomically, without the index."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def read_parquet(path: Path | str, columns: list[str] | None = None) -> Any:
    """Read a parquet artifact, failing with a one-line error when it is missing."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (run the stage that writes it first)")
    frame = pd.read_parquet(path)
    if columns is not None:
        absent = [c for c in columns if c not in frame.columns]
        if absent:
            raise ArtifactError(f"{path}: missing column(s) {absent}; has {list(frame.columns)}")
    return frame


def save_npy(path: Path | str, array: Any) -> None:
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)


def load_npy(path: Path | str) -> Any:
    """Load a numeric .npy artifact; object arrays (pickles) are refused."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (expected a .npy array)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ArtifactError(f"{path}: not a numeric .npy array ({exc})") from None


def sha256_file(path: Path | str, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions that decide whether a stage's output can be reproduced."""
    from importlib import metadata

    versions = {"python": platform.python_version(), "llmrec": __version__}
    for dist in ("numpy", "pandas", "torch", "dgl", "sentence-transformers", "transformers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


@contextlib.contextmanager
def _locked_manifest(run_dir: Path) -> Iterator[Path]:
    """Serialise read-modify-write of the manifest between processes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_path = run_dir / ".manifest.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield run_dir / MANIFEST_NAME
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_manifest(run_dir: Path | str) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST_NAME
    if not path.exists():
        return {"llmrec_version": __version__, "stages": {}}
    return read_json(path)


def record_stage(
    run_dir: Path | str,
    stage: str,
    params: Mapping[str, Any],
    inputs: Mapping[str, str],
    outputs: list[str],
    stats: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Record a finished stage: params, input checksums, output checksums, versions.

    `inputs` maps a name (a source file, an upstream artifact) to its sha256;
    `outputs` lists paths relative to `run_dir` that the stage wrote.
    """
    run_dir = Path(run_dir)
    entry = {
        "params": dict(params),
        "inputs": dict(inputs),
        "outputs": {rel: sha256_file(run_dir / rel) for rel in outputs},
        "stats": dict(stats or {}),
        "versions": library_versions(),
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    with _locked_manifest(run_dir) as manifest_path:
        manifest = read_manifest(run_dir)
        manifest["stages"][stage] = entry
        write_json(manifest_path, manifest)
    return entry


def stage_is_current(
    run_dir: Path | str, stage: str, params: Mapping[str, Any], inputs: Mapping[str, str]
) -> bool:
    """True when `stage` already ran with these params and inputs and its outputs are intact."""
    run_dir = Path(run_dir)
    entry = read_manifest(run_dir)["stages"].get(stage)
    if entry is None:
        return False
    # Round-trip through JSON so tuples/paths compare the way they were stored.
    if json.loads(json.dumps(dict(params), default=str)) != entry["params"]:
        return False
    if dict(inputs) != entry["inputs"]:
        return False
    for rel, digest in entry["outputs"].items():
        path = run_dir / rel
        if not path.is_file() or _file_digest(path) != digest:
            return False
    return True


def stage_output_digest(run_dir: Path | str, stage: str, rel: str) -> str:
    """Checksum of an upstream artifact as recorded by its stage (for downstream `inputs`)."""
    entry = read_manifest(run_dir)["stages"].get(stage)
    if entry is None or rel not in entry["outputs"]:
        raise ArtifactError(f"{Path(run_dir) / rel}: not recorded by stage '{stage}'; run it first")
    return entry["outputs"][rel]


# --- reading a run's artifacts, checked against the manifest ---------------------------------------

#: sha256 of file versions hashed by this process: (device, inode, size, mtime, ctime) -> digest. A file
#: rewritten in place changes its mtime and ctime, an atomic replacement its inode, so a hit is the same
#: bytes; only files unchanged for `_SETTLED_SECONDS` when hashed are kept, because timestamps are coarse
#: (a few ms) and a write right after the hash could otherwise leave all five equal.
_DIGESTS: dict[tuple[int, int, int, int, int], str] = {}
_SETTLED_SECONDS = 2.0


def _handle_digest(handle: IO[bytes]) -> str:
    """sha256 of an open file from its start (streamed), once per file version; leaves it at offset 0."""
    stat = os.fstat(handle.fileno())
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    digest = _DIGESTS.get(key)
    if digest is None:
        handle.seek(0)
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) > _SETTLED_SECONDS * 1e9:
            _DIGESTS[key] = digest
    handle.seek(0)
    return digest


def _file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return _handle_digest(handle)


#: The outputs a manifest version records, by the manifest file's identity (as `_DIGESTS`; a manifest is always
#: replaced whole, `write_json`): rel -> (stage, sha256). Parsed once, not once per artifact read.
_RECORDS: dict[tuple[int, int, int, int, int], dict[str, tuple[str, str]]] = {}


def _recorded_outputs(run_dir: Path) -> dict[str, tuple[str, str]]:
    path = run_dir / MANIFEST_NAME
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    records = _RECORDS.get(key)
    if records is None:
        latest: dict[str, tuple[str, str, str]] = {}
        for stage, entry in read_manifest(run_dir)["stages"].items():
            finished = entry.get("finished_at", "")
            for rel, digest in entry.get("outputs", {}).items():
                if rel not in latest or finished >= latest[rel][2]:  # a file two stages list: the later one's
                    latest[rel] = (stage, digest, finished)
        records = {rel: (stage, digest) for rel, (stage, digest, _) in latest.items()}
        if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) > _SETTLED_SECONDS * 1e9:
            _RECORDS[key] = records
    return records


def recorded_output(run_dir: Path | str, rel: str) -> tuple[str, str] | None:
    """(stage, sha256) of the manifest entry that lists `rel` among its outputs; None when none does."""
    return _recorded_outputs(Path(run_dir)).get(rel)


def _rebuild_hint(run_dir: Path, rel: str, recorded_by: str | None) -> str:
    """"rerun `<command>`" for the stage that recorded `rel` (else the stage that writes such a file)."""
    from llmrec.rebuild import producing_stage, rebuild_command

    stage = recorded_by or producing_stage(rel)
    if stage is None:
        return "rerun the stage that writes it"
    return f"{'rerun' if recorded_by else 'make it with'} `{rebuild_command(run_dir, stage)}`"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def artifact_error(run_dir: Path | str, rel: str, problem: str) -> ArtifactError:
    """The one-line error for `rel`: `<run>/<rel>: <problem>; rerun `<the command that rebuilds it>``."""
    run_dir = Path(run_dir)
    record = recorded_output(run_dir, rel)
    return ArtifactError(f"{run_dir / rel}: {problem}; {_rebuild_hint(run_dir, rel, record and record[0])}")


@contextlib.contextmanager
def open_run_artifact(run_dir: Path | str, rel: str) -> Iterator[IO[bytes]]:
    """The artifact `<run_dir>/<rel>` open for reading, checked against the sha256 the manifest recorded.

    The one place where a stage's reader meets the file: a missing file, or
    one whose bytes differ from the manifest's record (truncated, a flipped
    byte, replaced), raises a one-line `ArtifactError` naming the file and the
    command that rebuilds it, before anything parses it. The digest is taken
    from the open handle, so what is checked is what is then read, and each
    file version is hashed once per process (`_handle_digest`). A file no
    stage recorded (a hand-made run, an older llmrec's) is read unchecked.
    """
    run_dir = Path(run_dir)
    path = run_dir / rel
    record = recorded_output(run_dir, rel)
    try:
        handle = open(path, "rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ArtifactError(f"{path}: missing; {_rebuild_hint(run_dir, rel, record and record[0])}") from None
    with handle:
        if record is not None and _handle_digest(handle) != record[1]:
            raise ArtifactError(
                f"{path}: damaged (sha256 differs from {MANIFEST_NAME}); {_rebuild_hint(run_dir, rel, record[0])}"
            )
        yield handle


def run_artifact_present(run_dir: Path | str, rel: str) -> bool:
    """Whether an optional artifact is part of the run: on disk, or recorded by a stage (then its absence is
    damage, which reading it reports, not an ablation)."""
    return (Path(run_dir) / rel).is_file() or recorded_output(run_dir, rel) is not None


def run_artifact_digest(run_dir: Path | str, rel: str) -> str:
    """The sha256 of a checked artifact (for a stage's `inputs`): free after it was read."""
    with open_run_artifact(run_dir, rel) as handle:
        return _handle_digest(handle)


def verify_run_artifacts(run_dir: Path | str, rels: Iterable[str]) -> None:
    """Check artifacts against the manifest without parsing them (a command's check before it writes anything)."""
    for rel in rels:
        with open_run_artifact(run_dir, rel):
            pass


def _check_columns(path: Path, frame: Any, columns: list[str] | None) -> None:
    if columns is not None:
        absent = [c for c in columns if c not in frame.columns]
        if absent:
            raise ArtifactError(f"{path}: missing column(s) {absent}; has {list(frame.columns)}")


def read_run_parquet(run_dir: Path | str, rel: str, columns: list[str] | None = None) -> Any:
    """A checked parquet artifact of the run as a DataFrame (`open_run_artifact`); `columns` must be present."""
    import pandas as pd

    with open_run_artifact(run_dir, rel) as handle:
        try:
            frame = pd.read_parquet(handle)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... for a bad file
            raise artifact_error(run_dir, rel, f"not a readable parquet table ({_one_line(exc)})") from None
    _check_columns(Path(run_dir) / rel, frame, columns)
    return frame


def load_run_npy(run_dir: Path | str, rel: str) -> Any:
    """A checked numeric .npy artifact of the run (`open_run_artifact`); object arrays (pickles) are refused."""
    import numpy as np

    with open_run_artifact(run_dir, rel) as handle:
        try:
            return np.load(handle, allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise artifact_error(run_dir, rel, f"not a numeric .npy array ({_one_line(exc)})") from None


def read_run_json(run_dir: Path | str, rel: str) -> Any:
    """A checked JSON artifact of the run (`open_run_artifact`)."""
    with open_run_artifact(run_dir, rel) as handle:
        try:
            return json.loads(handle.read().decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise artifact_error(run_dir, rel, f"not valid JSON ({_one_line(exc)})") from None
