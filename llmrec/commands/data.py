"""`llmrec data list | prepare | info`: datasets in, run tables out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from llmrec.commands.flags import config_flags
from llmrec.data.config import PrepareConfig

app = typer.Typer(no_args_is_help=True, help="Find, prepare and inspect datasets.")


@app.command("list")
def list_datasets(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Also look in this folder."),
) -> None:
    """Show the known datasets, where a copy was found and their licence."""
    from llmrec.data.registry import DATASETS
    from llmrec.data.sources import find_local
    from llmrec.errors import DataError

    blocks = []
    for spec in DATASETS.values():
        try:
            located = find_local(spec, data_dir)
        except DataError:
            located = None
        if located is not None:
            where = f"{located.origin}: {located.root}"
        elif spec.url is None:
            where = "your files (--data-dir)"
        else:
            where = f"not present (downloads from {spec.url})"
        blocks.append(f"{spec.name:<16} {spec.description}\n{'':<16} found: {where}\n{'':<16} licence: {spec.licence}")
    typer.echo("\n\n".join(blocks))


@app.command("prepare")
@config_flags(PrepareConfig)
def prepare(
    dataset: str | None = typer.Argument(None, help=f"Dataset name (see `llmrec data list`); default {PrepareConfig.dataset}."),
    run: Path = typer.Option(..., "--run", help="Run directory to write the tables into."),
    config: Path | None = typer.Option(None, "--config", help="TOML file; its [data] table sets options."),
    *,
    overrides: dict[str, Any],
) -> None:
    """Turn a dataset into train/val/test/items/users parquet tables in RUN."""
    from llmrec.config import from_toml
    from llmrec.data.prepare import prepare_run

    result = prepare_run(run, from_toml(PrepareConfig, config, {**overrides, "dataset": dataset}))
    stats = result.stats
    state = "up to date, nothing written" if result.skipped else f"written (source: {result.source})"
    typer.echo(
        f"{run}: {state}\n"
        f"users {stats['users']:,}  items {stats['items']:,}  train/val/test "
        f"{stats['train_interactions']:,}/{stats['val_interactions']:,}/{stats['test_interactions']:,}"
    )


@app.command("info")
def info(
    run: Path = typer.Argument(..., help="A prepared run directory."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Counts, density and interactions per user / item (quantiles) per split."""
    from llmrec.data.stats import describe, format_summary
    from llmrec.data.tables import load_split

    summary = describe(load_split(run))
    typer.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))
