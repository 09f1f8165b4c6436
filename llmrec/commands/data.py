"""`llmrec data list | prepare | info`: datasets in, run tables out."""

from __future__ import annotations

import json
from pathlib import Path

import typer

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
def prepare(
    dataset: str | None = typer.Argument(None, help="Dataset name (see `llmrec data list`); default ml-latest-small."),
    run: Path = typer.Option(..., "--run", help="Run directory to write the tables into."),
    config: Path | None = typer.Option(None, "--config", help="TOML file; its [data] table sets options."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the random split."),
    min_rating: float | None = typer.Option(None, "--min-rating", help="Ratings >= this are positives (default 4)."),
    keep_all_ratings: bool | None = typer.Option(
        None, "--keep-all-ratings/--threshold-ratings", help="Treat every rating as a positive."
    ),
    kcore: int | None = typer.Option(None, "--kcore", help="Iterative k-core filter (0 = off)."),
    split: str | None = typer.Option(None, "--split", help="random | temporal | leave-last."),
    min_user_interactions: int | None = typer.Option(
        None, "--min-user-interactions", help="Users with fewer interactions go entirely to train (default 3)."
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Folder holding the dataset's files."),
    trust_pickle: bool | None = typer.Option(
        None, "--trust-pickle", help="Load pickled files of an LLMRec release (runs code from them)."
    ),
    interactions: str | None = typer.Option(None, "--interactions", help="csv: interactions file in --data-dir."),
    items: str | None = typer.Option(None, "--items", help="csv: item metadata file in --data-dir."),
    user_col: str | None = typer.Option(None, "--user-col", help="csv: user id column."),
    item_col: str | None = typer.Option(None, "--item-col", help="csv: item id column of the interactions."),
    rating_col: str | None = typer.Option(None, "--rating-col", help="csv: rating column ('' = implicit)."),
    timestamp_col: str | None = typer.Option(None, "--timestamp-col", help="csv: timestamp column ('' = none)."),
    item_id_col: str | None = typer.Option(None, "--item-id-col", help="csv: item id column of the items file."),
    title_col: str | None = typer.Option(None, "--title-col", help="csv: title column."),
    genres_col: str | None = typer.Option(None, "--genres-col", help="csv: genres column ('' = none)."),
    delimiter: str | None = typer.Option(None, "--delimiter", help="csv: field delimiter."),
    encoding: str | None = typer.Option(None, "--encoding", help="csv / llmrec-format: file encoding (e.g. latin-1)."),
    llmrec_val_from_train: float | None = typer.Option(
        None, "--llmrec-val-from-train",
        help="llmrec-format: move this fraction of each user's train items to validation, ignoring val.json "
             "(the released val.json equals test.json).",
    ),
) -> None:
    """Turn a dataset into train/val/test/items/users parquet tables in RUN."""
    from llmrec.config import load_toml
    from llmrec.data.prepare import config_from_layers, prepare_run

    overrides = {
        "dataset": dataset,
        "seed": seed,
        "min_rating": min_rating,
        "keep_all_ratings": keep_all_ratings,
        "kcore": kcore,
        "split": split,
        "min_user_interactions": min_user_interactions,
        "data_dir": str(data_dir) if data_dir else None,
        "trust_pickle": trust_pickle,
        "csv_interactions": interactions,
        "csv_items": items,
        "csv_user_column": user_col,
        "csv_item_column": item_col,
        "csv_rating_column": rating_col,
        "csv_timestamp_column": timestamp_col,
        "csv_item_id_column": item_id_col,
        "csv_title_column": title_col,
        "csv_genres_column": genres_col,
        "csv_delimiter": delimiter,
        "encoding": encoding,
        "llmrec_val_from_train": llmrec_val_from_train,
    }
    prepare_config = config_from_layers(load_toml(config).get("data"), overrides)
    result = prepare_run(run, prepare_config)
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
