"""Each stage's config class is its TOML table, its CLI flags (with help and defaults) and its validation.

In-process through typer's runner: nothing here loads a model or a dataset.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from llmrec.augment.config import AugmentConfig
from llmrec.cli import app
from llmrec.commands.flags import config_flags
from llmrec.config import from_toml, option_help
from llmrec.data.config import PrepareConfig
from llmrec.embed_config import EmbedConfig
from llmrec.errors import ConfigError
from llmrec.recommender.options import TrainConfig

runner = CliRunner()
STAGE_COMMANDS = {PrepareConfig: ("data", "prepare"), AugmentConfig: ("augment",), EmbedConfig: ("embed",),
                  TrainConfig: ("train",)}  # fmt: skip


def _command(path: tuple[str, ...]) -> Any:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


def test_every_flagged_field_is_an_unset_flag_of_its_command_with_the_fields_help() -> None:
    for cls, path in STAGE_COMMANDS.items():
        params = {opt: param for param in _command(path).params for opt in param.opts}
        flagged = [field for field in dataclasses.fields(cls) if field.metadata.get("flag")]
        assert flagged, cls
        for field in flagged:
            flag = field.metadata["flag"].split("/")[0]
            assert flag in params, (cls.__name__, flag)
            assert params[flag].default is None  # an unset flag must not override the TOML table
            assert params[flag].help == option_help(field)
        assert "--config" in params, path


def test_defaults_are_written_once_and_shown_in_the_help() -> None:
    helps = {param.opts[0]: param.help for param in _command(("augment",)).params}
    assert helps["--limit-users"].startswith(f"First N users with history (default {AugmentConfig.limit_users};")
    assert f"(default {AugmentConfig.history_budget})" in helps["--history-budget"]
    assert f"(default {AugmentConfig.candidates_k})" in helps["--candidates-k"]
    assert f"(default {AugmentConfig.edge_orders};" in helps["--edge-orders"]


def test_flag_values_are_parsed_into_the_config(tmp_path: Path) -> None:
    built: list[AugmentConfig] = []
    probe = typer.Typer()

    @probe.command()
    @config_flags(AugmentConfig)
    def show(config: Path | None = typer.Option(None, "--config"), *, overrides: dict[str, Any]) -> None:
        built.append(from_toml(AugmentConfig, config, overrides))

    table = tmp_path / "job.toml"
    table.write_text('[augment]\nlimit_users = 7\nmodel = "from-the-file"\n', encoding="utf-8")
    result = runner.invoke(probe, ["--config", str(table), "--limit-users", "all", "--what", "edges,profiles",
                                   "--backend-option", "batch_size=4", "--base-url", "http://a", "--base-url",
                                   "http://b", "--store", str(tmp_path / "s.sqlite")])  # fmt: skip
    assert result.exit_code == 0, result.output
    config = built[0]
    assert config.limit_users == 0 and config.what == ("edges", "profiles")  # flags win over the file
    assert config.model == "from-the-file" and config.history_budget == AugmentConfig.history_budget
    assert config.backend_options == {"batch_size": 4} and config.base_url == ("http://a", "http://b")
    assert config.store == str(tmp_path / "s.sqlite")
    bad = runner.invoke(probe, ["--limit-users", "many"])
    assert isinstance(bad.exception, ConfigError)
    assert str(bad.exception) == "--limit-users 'many': expected a number or 'all'"


def test_embed_reads_its_table_and_its_flags_override_it(tmp_path: Path) -> None:
    table = tmp_path / "job.toml"
    table.write_text("[embed]\nbatch_size = 0\n", encoding="utf-8")
    run = tmp_path / "not-prepared"
    from_file = runner.invoke(app, ["embed", str(run), "--config", str(table)])
    assert isinstance(from_file.exception, ConfigError)
    assert "[embed] batch_size must be >= 1, got 0" in str(from_file.exception)
    overridden = runner.invoke(app, ["embed", str(run), "--config", str(table), "--batch-size", "8"])
    assert "items.parquet" in str(overridden.exception)  # the config was valid: it got as far as the run's files
