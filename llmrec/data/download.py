"""Fetching a GroupLens zip and installing it into the dataset cache.

Download and installation are separate steps so the checks that protect the
cache (published checksum, zip integrity, required files, atomic rename) run
on any local zip, and are tested on real files without a network. A cache
folder only ever appears by `os.replace` of a fully unpacked, verified copy.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from llmrec.artifacts import create_unique, sha256_file
from llmrec.errors import DataError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, destination: Path, timeout_s: float = 60.0) -> Path:
    """Stream `url` to `destination` with a progress bar; a short body is an error.

    Raises `OSError` (`URLError` is one) when the source cannot be reached (the caller
    turns that into the "no copy found" message) and `DataError` when the
    transfer ends before the announced size.
    """
    received = 0
    total = None
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - http(s)/file only
            announced = response.headers.get("Content-Length")
            total = int(announced) if announced and announced.isdigit() else None
            with open(destination, "wb") as out, tqdm(
                total=total, unit="B", unit_scale=True, desc=f"download {Path(url).name}", leave=False
            ) as bar:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except http.client.IncompleteRead as exc:
        received += len(exc.partial)
    if total is not None and received != total:
        raise DataError(f"{url}: download truncated ({received} of {total} bytes); try again")
    return destination


def _member_prefix(archive: zipfile.ZipFile, name: str, required: tuple[str, ...]) -> str:
    """The folder inside the zip that holds the files (GroupLens zips hold `<name>/`)."""
    names = set(archive.namelist())
    for prefix in (f"{name}/", ""):
        if all(prefix + f in names for f in required):
            return prefix
    absent = [f for f in required if f"{name}/{f}" not in names]
    raise DataError(f"zip does not contain {name}/{absent[0]} (expected files {list(required)})")


def _verify_zip(zip_path: Path, name: str, required: tuple[str, ...], md5: str | None) -> str:
    if md5 is not None:
        actual = _md5_file(zip_path)
        if actual != md5:
            raise DataError(
                f"{zip_path}: checksum mismatch for {name}.zip (md5 {actual}, published {md5}); "
                f"the download is corrupt or not the GroupLens release"
            )
    try:
        with zipfile.ZipFile(zip_path) as archive:
            prefix = _member_prefix(archive, name, required)
            broken = archive.testzip()
    except (zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{zip_path}: not a complete zip archive ({exc}); truncated download?") from None
    if broken is not None:
        raise DataError(f"{zip_path}: member {broken} fails its CRC check; truncated or corrupt download")
    return prefix


def _extract(zip_path: Path, prefix: str, into: Path) -> None:
    """Unpack the members under `prefix` flat into `into`, refusing paths that escape it."""
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            relative = PurePosixPath(info.filename[len(prefix):])
            if relative.is_absolute() or ".." in relative.parts:
                raise DataError(f"{zip_path}: member {info.filename} escapes the archive folder")
            target = into.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)


def install_zip(
    zip_path: Path,
    name: str,
    destination: Path,
    required: tuple[str, ...],
    md5: str | None = None,
    member_sha256: Mapping[str, str] | None = None,
) -> Path:
    """Verify `zip_path` and unpack it atomically as the folder `destination`.

    Checks, in order: the published md5 of the zip (when known), that it opens
    and every member passes its CRC, that the required files exist, and the
    sha256 of members with known checksums. Nothing appears at `destination`
    unless all pass.
    """
    prefix = _verify_zip(zip_path, name, required, md5)
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Not mkdtemp: its 0700 would become the cache folder's mode; this one gets the umask's.
    staging = create_unique(destination.parent, f".{name}.", ".unpack", directory=True)
    try:
        _extract(zip_path, prefix, staging)
        for member, expected in (member_sha256 or {}).items():
            actual = sha256_file(staging / member)
            if actual != expected:
                raise DataError(
                    f"{zip_path}: {name}/{member} checksum mismatch (sha256 {actual}, expected {expected})"
                )
        if destination.exists():
            # An incomplete copy (files deleted by hand) is replaced, never merged.
            shutil.rmtree(destination)
        os.replace(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("installed %s into %s (zip sha256 %s)", name, destination, sha256_file(zip_path))
    return destination


def download_and_install(
    url: str,
    name: str,
    destination: Path,
    required: tuple[str, ...],
    md5: str | None = None,
    member_sha256: Mapping[str, str] | None = None,
) -> Path:
    """Download `url` next to `destination` and install it; the zip is removed afterwards."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    zip_path = create_unique(destination.parent, f".{name}.", ".zip")
    try:
        fetch(url, zip_path)
        return install_zip(zip_path, name, destination, required, md5, member_sha256)
    finally:
        zip_path.unlink(missing_ok=True)
