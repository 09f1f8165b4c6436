"""`llmrec train`, `evaluate`, `recommend`, `ablate`: the recommender stage.

torch and DGL are imported inside the commands so `llmrec --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from llmrec.commands.flags import config_flags
from llmrec.recommender.options import TrainConfig

RUN_ARGUMENT = typer.Argument(..., help="Run directory (written by `llmrec data prepare`).")


def _print_doc_table(doc: dict) -> None:
    from llmrec.recommender.reporting import metrics_table

    typer.echo(f"Protocol: {doc['protocol_label']}")
    several = len(doc["runs"]) > 1
    typer.echo(metrics_table([
        (f"{doc['name']} test", doc["test_mean"], doc["test_std"] if several else None),
        (f"{doc['name']} {doc['selection_split']}", doc["selection_mean"], doc["selection_std"] if several else None),
    ]))


@config_flags(TrainConfig)
def train(
    run: Path = RUN_ARGUMENT,
    name: str = typer.Option(None, "--name", help="Output folder under <run>/model/ (default: the model name)."),
    config: Path = typer.Option(None, "--config", help="TOML file; its [train] table sets any option."),
    baselines: bool = typer.Option(
        False, "--baselines",
        help="Also train popularity, MF-BPR, LightGCN (or the config's [compare] baselines); write model/comparison.md.",
    ),
    *,
    overrides: dict[str, Any],
) -> None:
    """Train a recommender on RUN, select on validation, test once; write <run>/model/<name>/."""
    from llmrec.config import from_toml, write_effective_config
    from llmrec.recommender.comparison import CompareConfig, compare_with_baselines
    from llmrec.recommender.data import load_run_data
    from llmrec.recommender.runner import train_and_evaluate
    from llmrec.recommender.trainer import TrainingInterrupted

    train_config = from_toml(TrainConfig, config, overrides)
    compare_config = from_toml(CompareConfig, config) if baselines else None
    data = load_run_data(run)  # a damaged or missing input is refused here, before anything is written
    write_effective_config(run, train_config)
    try:
        if baselines:
            # the [compare] table: baselines (e.g. "text-only"), ablations, paired tests
            compare_with_baselines(run, train_config, name, compare_config, data=data)
            typer.echo((run / "model" / "comparison.md").read_text())
            return
        doc = train_and_evaluate(run, train_config, name, data=data)
    except TrainingInterrupted as stopped:
        typer.echo(str(stopped))
        raise typer.Exit(3) from None
    _print_doc_table(doc)
    typer.echo(f"-> {run / 'model' / doc['name']}")


def evaluate(
    run: Path = RUN_ARGUMENT,
    name: str = typer.Option("llmrec", "--name", help="Trained model folder under <run>/model/."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Re-evaluate a saved checkpoint and print its table."""
    from llmrec.recommender.reporting import metrics_table
    from llmrec.recommender.runner import evaluate_saved

    result = evaluate_saved(run, name, device)
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    typer.echo(f"Protocol: {result['protocol_label']}")
    typer.echo(f"Checkpoint: seed {result['seed']}, epoch {result['best_epoch']}")
    typer.echo(metrics_table([(f"{name} test", result["test"], None),
                              (f"{name} {result['selection_split']}", result["selection"], None)]))


def recommend(
    run: Path = RUN_ARGUMENT,
    user: str = typer.Option(..., "--user", help="The dataset's own user id (users.parquet original_id)."),
    k: int = typer.Option(10, "-k", help="Number of recommendations."),
    name: str = typer.Option("llmrec", "--name", help="Trained model folder under <run>/model/."),
) -> None:
    """Top-k unseen items for one user, with the history items closest to each."""
    from llmrec.recommender.explain import recommend_for_user

    for rank, rec in enumerate(recommend_for_user(run, name, user, k), start=1):
        because = "; ".join(f"{title} ({cosine:.2f})" for title, cosine in rec.because)
        typer.echo(f"{rank:>2}. {rec.title}  [score {rec.score:.3f}]")
        if because:
            typer.echo(f"    because you liked: {because}")


@config_flags(TrainConfig, only=("max_epochs", "seeds", "device", "engine", "protocol"))
def ablate(
    run: Path = RUN_ARGUMENT,
    config: Path = typer.Option(None, "--config", help="TOML file; its [train] table sets shared options."),
    *,
    overrides: dict[str, Any],
) -> None:
    """Train LLMRec and w/o-u-i, w/o-u, w/o-u&i, w/o-prune; write model/ablation.md/json."""
    from llmrec.config import from_toml
    from llmrec.recommender.comparison import ablate as run_ablation

    train_config = from_toml(TrainConfig, config, {**overrides, "model": "llmrec"})
    entries = run_ablation(run, train_config)
    typer.echo((run / "model" / "ablation.md").read_text())
    typer.echo(f"({len(entries)} variants; outputs in {run / 'model'})")


def register(app: typer.Typer) -> None:
    """Add the recommender commands to the CLI."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("recommend")(recommend)
    app.command("ablate")(ablate)
