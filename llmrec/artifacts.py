"""Run-directory artifacts: atomic writes, checksums and the provenance manifest.

Every stage reads and writes plain files (parquet / npy / json) in a run
directory. Writes go to a temporary file in the same directory and are renamed
into place, so a crash or a bad input never leaves a half-written artifact and
never destroys the previous good one. `manifest.json` records, per stage, its
parameters, the checksums of what it read and wrote, and library versions, so a
rerun with identical inputs can be recognised and skipped.
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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

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
        if not path.is_file() or sha256_file(path) != digest:
            return False
    return True


def stage_output_digest(run_dir: Path | str, stage: str, rel: str) -> str:
    """Checksum of an upstream artifact as recorded by its stage (for downstream `inputs`)."""
    entry = read_manifest(run_dir)["stages"].get(stage)
    if entry is None or rel not in entry["outputs"]:
        raise ArtifactError(f"{Path(run_dir) / rel}: not recorded by stage '{stage}'; run it first")
    return entry["outputs"][rel]
