"""Zip verification, atomic install and download on real local files (no network here)."""

from __future__ import annotations

import dataclasses
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmrec.data import PrepareConfig, load_split, prepare_run
from llmrec.data.download import download_and_install, install_zip
from llmrec.data.registry import DATASETS, get_spec
from llmrec.data.sources import locate
from llmrec.errors import DataError

from . import fixtures


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture()
def ml_small_zip(tmp_path: Path, data_mirror: Path) -> Path:
    """A GroupLens-shaped zip of the mirror's ml-latest-small, built in tmp (never in the repo)."""
    return fixtures.zip_folder(data_mirror / "ml-latest-small", tmp_path / "ml-latest-small.zip", "ml-latest-small")


def test_verified_zip_installs_into_cache_and_prepare_reads_it(
    ml_small_zip: Path, tmp_path: Path, isolated_home: Path
) -> None:
    spec = get_spec("ml-latest-small")
    cache = isolated_home / "datasets" / "ml-latest-small"
    install_zip(ml_small_zip, spec.name, cache, spec.required_files, None, spec.member_sha256)
    assert _leftovers(cache.parent) == ["ml-latest-small"]
    assert locate(spec).origin == "cache"
    result = prepare_run(tmp_path / "run", PrepareConfig())
    assert result.source == "cache" and result.stats["raw_interactions"] == 100_836


def test_member_checksum_mismatch_installs_nothing(tmp_path: Path, data_mirror: Path) -> None:
    altered = tmp_path / "altered"
    shutil.copytree(data_mirror / "ml-latest-small", altered)
    with open(altered / "ratings.csv", "a") as handle:
        handle.write("1,1,5.0,964982703\r\n")
    zip_path = fixtures.zip_folder(altered, tmp_path / "ml-latest-small.zip", "ml-latest-small")
    spec = get_spec("ml-latest-small")
    cache = tmp_path / "cache" / "ml-latest-small"
    with pytest.raises(DataError, match=r"ml-latest-small/ratings.csv checksum mismatch .*expected aa289ca8"):
        install_zip(zip_path, spec.name, cache, spec.required_files, None, spec.member_sha256)
    assert _leftovers(cache.parent) == []


def test_published_md5_mismatch_is_refused(tmp_path: Path) -> None:
    zip_path = fixtures.zip_folder(fixtures.write_ml_100k(tmp_path / "src"), tmp_path / "ml-100k.zip", "ml-100k")
    spec = get_spec("ml-100k")
    cache = tmp_path / "cache" / "ml-100k"
    with pytest.raises(DataError, match=r"checksum mismatch for ml-100k.zip .*published 0e33842e"):
        install_zip(zip_path, spec.name, cache, spec.required_files, spec.zip_md5)
    assert not cache.parent.exists() or _leftovers(cache.parent) == []


def test_truncated_zip_is_refused(tmp_path: Path, ml_small_zip: Path) -> None:
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(ml_small_zip.read_bytes()[: ml_small_zip.stat().st_size // 2])
    spec = get_spec("ml-latest-small")
    cache = tmp_path / "cache" / "ml-latest-small"
    with pytest.raises(DataError, match="not a complete zip archive.*truncated"):
        install_zip(truncated, spec.name, cache, spec.required_files)
    assert _leftovers(cache.parent) == []


def test_zip_without_required_file_is_refused(tmp_path: Path) -> None:
    source = fixtures.write_ml_100k(tmp_path / "src")
    (source / "u.user").unlink()
    zip_path = fixtures.zip_folder(source, tmp_path / "ml-100k.zip", "ml-100k")
    with pytest.raises(DataError, match="does not contain ml-100k/u.user"):
        install_zip(zip_path, "ml-100k", tmp_path / "cache" / "ml-100k", get_spec("ml-100k").required_files)


def test_download_from_file_url_then_prepare_uses_cache(
    tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zip_path = fixtures.zip_folder(fixtures.write_ml_1m(tmp_path / "src"), tmp_path / "ml-1m.zip", "ml-1m")
    # The registry points at GroupLens; here the same code fetches a local file:// URL instead.
    spec = dataclasses.replace(get_spec("ml-1m"), url=zip_path.as_uri(), zip_md5=None)
    monkeypatch.setitem(DATASETS, "ml-1m", spec)
    run = tmp_path / "run"
    result = prepare_run(run, PrepareConfig(dataset="ml-1m"))
    assert result.source == "download"
    assert _leftovers(isolated_home / "datasets") == ["ml-1m"]  # the zip itself is removed
    assert prepare_run(tmp_path / "run2", PrepareConfig(dataset="ml-1m")).source == "cache"
    assert load_split(run).n_users == 5  # users 1-5 have positives


class _ShortBodyHandler(http.server.BaseHTTPRequestHandler):
    """Announces 10,000 bytes and sends 100: a connection dropped mid-download."""

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self.send_response(200)
        self.send_header("Content-Length", "10000")
        self.end_headers()
        self.wfile.write(b"PK" + b"\0" * 98)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def short_body_url() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _ShortBodyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ml-100k.zip"
    server.shutdown()
    server.server_close()


def test_interrupted_download_is_refused(tmp_path: Path, short_body_url: str) -> None:
    cache = tmp_path / "cache" / "ml-100k"
    with pytest.raises(DataError, match=r"download truncated \(100 of 10000 bytes\)"):
        download_and_install(short_body_url, "ml-100k", cache, get_spec("ml-100k").required_files)
    assert _leftovers(cache.parent) == []


def test_offline_without_copy_lists_every_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path
) -> None:
    monkeypatch.setenv("LLMREC_DATA_MIRROR", str(tmp_path / "empty-mirror"))
    # An unreachable URL stands in for "no network" whether or not CI has one.
    spec = dataclasses.replace(get_spec("ml-100k"), url=(tmp_path / "nowhere" / "ml-100k.zip").as_uri())
    monkeypatch.setitem(DATASETS, "ml-100k", spec)
    with pytest.raises(DataError) as caught:
        prepare_run(tmp_path / "run", PrepareConfig(dataset="ml-100k"))
    message = str(caught.value)
    for option in ("--data-dir", "LLMREC_DATA_MIRROR", str(isolated_home / "datasets" / "ml-100k"), "network"):
        assert option in message
    assert "\n" not in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_installed_dataset_gets_the_umask_mode(tmp_path: Path, umask: int) -> None:
    """The cache folder is a renamed staging folder: it must not keep mkdtemp's 0700."""
    import os
    import stat

    zip_path = fixtures.zip_folder(fixtures.write_ml_100k(tmp_path / "src"), tmp_path / "ml-100k.zip", "ml-100k")
    cache = tmp_path / "cache" / "ml-100k"
    previous = os.umask(umask)
    try:
        download_and_install(zip_path.as_uri(), "ml-100k", cache, get_spec("ml-100k").required_files)
    finally:
        os.umask(previous)
    files = sorted(cache.iterdir())
    assert [p.name for p in files] == sorted(p.name for p in (tmp_path / "src").iterdir())
    assert stat.S_IMODE(cache.stat().st_mode) == 0o777 & ~umask
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name
