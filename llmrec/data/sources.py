"""Where a dataset's files come from: --data-dir, the cache, the mirror, GroupLens.

The order is fixed so a run is explainable: an explicit folder wins, then a
copy already in `$LLMREC_HOME/datasets/<name>/`, then the offline mirror
(`LLMREC_DATA_MIRROR/<name>/`), then a download into the cache. When none is
available the user gets one error listing all four ways to provide the data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from llmrec.data.download import download_and_install
from llmrec.data.registry import DatasetSpec
from llmrec.errors import DataError
from llmrec.paths import data_mirror, datasets_cache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Located:
    """A folder holding the dataset's files and which source it came from."""

    root: Path
    origin: str  # "data-dir", "cache", "mirror" or "download"


def _complete(folder: Path, spec: DatasetSpec) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in spec.required_files)


def _data_dir_root(data_dir: Path, spec: DatasetSpec) -> Path:
    """`--data-dir` may be the dataset folder itself or a folder holding `<name>/`."""
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: --data-dir is not a folder")
    if not _complete(data_dir, spec) and _complete(data_dir / spec.name, spec):
        return data_dir / spec.name
    missing = [f for f in spec.required_files if not (data_dir / f).is_file()]
    if missing:
        raise DataError(
            f"{data_dir / missing[0]}: missing (dataset {spec.name} needs {list(spec.required_files)} in --data-dir)"
        )
    return data_dir


def find_local(spec: DatasetSpec, data_dir: Path | None = None) -> Located | None:
    """The first local copy in priority order, without downloading."""
    if data_dir is not None:
        return Located(_data_dir_root(Path(data_dir), spec), "data-dir")
    if spec.url is None:
        return None
    cached = datasets_cache() / spec.name
    if _complete(cached, spec):
        return Located(cached, "cache")
    mirror = data_mirror()
    if mirror is not None and _complete(mirror / spec.name, spec):
        return Located(mirror / spec.name, "mirror")
    return None


def locate(spec: DatasetSpec, data_dir: Path | None = None) -> Located:
    """Find the dataset locally or download it into the cache."""
    local = find_local(spec, data_dir)
    if local is not None:
        logger.info("%s: reading %s (%s)", spec.name, local.root, local.origin)
        return local
    if spec.url is None:
        raise DataError(f"dataset '{spec.name}' reads your own files: pass --data-dir DIR")
    cached = datasets_cache() / spec.name
    try:
        logger.info("%s: downloading %s into %s", spec.name, spec.url, cached)
        root = download_and_install(
            spec.url, spec.name, cached, spec.required_files, spec.zip_md5, spec.member_sha256
        )
    except OSError as exc:
        mirror = data_mirror()
        mirror_note = f"(now {mirror}, which has no {spec.name}/)" if mirror else "(not set)"
        raise DataError(
            f"{spec.name}: no local copy and the download failed ({exc}); provide it one of these ways: "
            f"--data-dir DIR holding {', '.join(spec.required_files)}; "
            f"LLMREC_DATA_MIRROR pointing at a folder with {spec.name}/ {mirror_note}; "
            f"unpack it into the cache {cached}; or connect to the network to fetch {spec.url}"
        ) from None
    return Located(root, "download")
