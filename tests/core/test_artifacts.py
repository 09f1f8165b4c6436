"""Atomic writes and the provenance manifest: the guarantees every stage relies on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec.artifacts import (
    atomic_path,
    load_npy,
    read_manifest,
    record_stage,
    save_npy,
    sha256_file,
    stage_is_current,
    write_json,
    write_parquet,
)
from llmrec.errors import ArtifactError


def test_failed_write_keeps_previous_artifact_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "table.json"
    write_json(target, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a file")
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]


def test_parquet_and_npy_round_trip(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user": [0, 1], "item": [3, 4]})
    write_parquet(tmp_path / "t.parquet", frame)
    assert pd.read_parquet(tmp_path / "t.parquet").equals(frame)
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_npy(tmp_path / "a.npy", array)
    assert np.array_equal(load_npy(tmp_path / "a.npy"), array)


def test_object_npy_is_refused(tmp_path: Path) -> None:
    """An object array is a pickle in disguise: loading it must need an explicit opt-in."""
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ArtifactError, match="evil.npy"):
        load_npy(path)


def test_stage_is_current_tracks_params_inputs_and_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    write_json(out, {"x": 1})
    record_stage(tmp_path, "demo", {"seed": 1, "ks": (10, 20)}, {"src": "abc"}, ["out.json"])
    assert stage_is_current(tmp_path, "demo", {"seed": 1, "ks": (10, 20)}, {"src": "abc"})
    assert not stage_is_current(tmp_path, "demo", {"seed": 2, "ks": (10, 20)}, {"src": "abc"})
    assert not stage_is_current(tmp_path, "demo", {"seed": 1, "ks": (10, 20)}, {"src": "xyz"})
    write_json(out, {"x": 2})  # output changed behind the manifest's back
    assert not stage_is_current(tmp_path, "demo", {"seed": 1, "ks": (10, 20)}, {"src": "abc"})
    entry = read_manifest(tmp_path)["stages"]["demo"]
    assert entry["outputs"]["out.json"] != sha256_file(out)
    assert entry["versions"]["python"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_artifacts_get_the_mode_open_would_give_them(tmp_path: Path, umask: int) -> None:
    """A run written under umask 022 is readable by a teammate (mkstemp alone would make it 0600)."""
    import os
    import stat

    previous = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as handle:  # what an ordinary open() gives
            handle.write("x")
        write_json(tmp_path / "a.json", {"x": 1})
        write_parquet(tmp_path / "t.parquet", pd.DataFrame({"user": [0]}))
        save_npy(tmp_path / "e.npy", np.zeros(2))
        with atomic_path(tmp_path / "raw.bin") as tmp:
            tmp.write_bytes(b"\0")
        record_stage(tmp_path, "demo", {}, {}, ["a.json"])  # manifest.json goes through the same helper
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == expected
    for name in ("a.json", "t.parquet", "e.npy", "raw.bin", "manifest.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
