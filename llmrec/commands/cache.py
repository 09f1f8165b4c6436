"""`llmrec cache stats | export | import | clear`: look after the completion store.

The store (`$LLMREC_HOME/completions.sqlite` unless `--store` says otherwise)
holds every LLM answer llmrec has paid for; these commands report its size,
dump it as JSON lines (to inspect answers or share them with a paper), load
such an export into another store (so a run elsewhere costs no generation) and
empty it when a model or prompt change makes old answers useless.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Inspect, export or clear the LLM completion store.")

_STORE_HELP = "Completion store file (default: $LLMREC_HOME/completions.sqlite)."


def _open(store: Path | None):  # noqa: ANN202 - a CompletionStore, imported lazily
    from llmrec.errors import ConfigError
    from llmrec.paths import default_store_path
    from llmrec.backends.store import CompletionStore

    path = store or default_store_path()
    if not path.is_file():
        raise ConfigError(f"{path}: no completion store here (pass --store PATH)")
    return CompletionStore(path)


@app.command("stats")
def stats(
    store: Path | None = typer.Option(None, "--store", help=_STORE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """How many completions are stored, per backend and model, with token totals."""
    with _open(store) as completion_store:
        figures = completion_store.stats()
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
        return
    lines = [
        f"store             {figures['path']} ({figures['bytes'] / 1e6:.1f} MB)",
        f"completions       {figures['completions']}",
        f"tokens in / out   {figures['prompt_tokens']} / {figures['completion_tokens']}",
        f"pending claims    {figures['claims_pending']}",
    ]
    lines += [f"  {row['backend']:<13} {row['model']}: {row['completions']}" for row in figures["by_model"]]
    typer.echo("\n".join(lines))


@app.command("export")
def export(
    output: Path = typer.Argument(..., help="JSON-lines file to write (one completion per line; .gz: gzip-compressed)."),
    store: Path | None = typer.Option(None, "--store", help=_STORE_HELP),
) -> None:
    """Write every stored completion, with its request, as JSON lines (gzip-compressed when OUTPUT ends in .gz)."""
    import gzip
    import io

    from llmrec.artifacts import atomic_path

    count = 0
    with _open(store) as completion_store, atomic_path(output) as tmp, open(tmp, "wb") as raw:
        # no name, mtime 0: the same store exports to the same bytes, so a committed export diffs cleanly
        binary = gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) if output.suffix == ".gz" else raw
        with io.TextIOWrapper(binary, encoding="utf-8") as handle:
            for record in completion_store.iter_records():
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
    typer.echo(f"exported {count} completions to {output}")


@app.command("import")
def import_(
    source: Path = typer.Argument(..., help="A `llmrec cache export` file (.jsonl or .jsonl.gz)."),
    store: Path | None = typer.Option(None, "--store", help=_STORE_HELP + " Created if absent."),
) -> None:
    """Add the completions of an export to a store (those already there are kept)."""
    from llmrec.errors import ConfigError
    from llmrec.paths import default_store_path
    from llmrec.backends.store import CompletionStore, read_export

    if not source.is_file():
        raise ConfigError(f"{source}: no such export file")
    records = read_export(source)
    with CompletionStore(store or default_store_path()) as completion_store:
        added, present = completion_store.import_records(records)
    typer.echo(f"imported {added} completions into {completion_store.path} ({present} were already there)")


@app.command("clear")
def clear(
    store: Path | None = typer.Option(None, "--store", help=_STORE_HELP),
    model: str | None = typer.Option(None, "--model", help="Only this model's completions."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete stored completions (all, or one model's)."""
    with _open(store) as completion_store:
        what = f"completions of model '{model}'" if model else "all completions"
        if not yes and not typer.confirm(f"Delete {what} in {completion_store.path}?"):
            raise typer.Abort()
        deleted = completion_store.clear(model)
    typer.echo(f"deleted {deleted} completions")
