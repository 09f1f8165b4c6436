"""Config layering and run-directory path safety."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from llmrec.config import build, load_toml
from llmrec.errors import ConfigError
from llmrec.paths import inside_run


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    seed: int = 0
    lr: float = 1e-3
    ks: tuple[int, ...] = (10, 20)
    name: str | None = None


def test_cli_overrides_file_and_none_means_unset(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("[train]\nseed = 3\nlr = 1\nks = [5]\n")
    section = load_toml(cfg_file)["train"]
    config = build(DemoConfig, "train", section, {"seed": 7, "name": None})
    assert config == DemoConfig(seed=7, lr=1, ks=(5,), name=None)


def test_unknown_key_and_wrong_type_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[train\] unknown option 'lrate'"):
        build(DemoConfig, "train", {"lrate": 0.1})
    with pytest.raises(ConfigError, match=r"option 'seed' = 'x'"):
        build(DemoConfig, "train", {"seed": "x"})
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nseed=")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_toml(bad)


def test_paths_cannot_escape_the_run_directory(tmp_path: Path) -> None:
    assert inside_run(tmp_path, "model/x.pt") == (tmp_path / "model/x.pt").resolve()
    for escape in ("../outside.json", "/etc/passwd", "model/../../x"):
        with pytest.raises(ConfigError, match="escapes the run directory"):
            inside_run(tmp_path, escape)
