"""`llmrec train`, `evaluate`, `recommend`, `ablate`: the recommender stage.

torch and DGL are imported inside the commands so `llmrec --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

RUN_ARGUMENT = typer.Argument(..., help="Run directory (written by `llmrec data prepare`).")


def _config(
    config_file: Path | None, **overrides: object
):  # -> TrainConfig (imported lazily)
    from llmrec.config import build, load_toml
    from llmrec.recommender.options import TrainConfig

    return build(TrainConfig, "train", load_toml(config_file).get("train"), overrides)


def _compare_config(config_file: Path | None):  # -> CompareConfig (imported lazily)
    """The `[compare]` table of the config file: baselines (e.g. "text-only"), ablations, paired tests."""
    from llmrec.config import build, load_toml
    from llmrec.recommender.comparison import CompareConfig

    return build(CompareConfig, "compare", load_toml(config_file).get("compare"))


def _print_doc_table(doc: dict) -> None:
    from llmrec.recommender.reporting import metrics_table

    typer.echo(f"Protocol: {doc['protocol_label']}")
    several = len(doc["runs"]) > 1
    typer.echo(metrics_table([
        (f"{doc['name']} test", doc["test_mean"], doc["test_std"] if several else None),
        (f"{doc['name']} {doc['selection_split']}", doc["selection_mean"], doc["selection_std"] if several else None),
    ]))


def train(
    run: Path = RUN_ARGUMENT,
    model: str = typer.Option(None, "--model", help="llmrec | lightgcn | mf | popularity (default llmrec)."),
    name: str = typer.Option(None, "--name", help="Output folder under <run>/model/ (default: the model name)."),
    config: Path = typer.Option(None, "--config", help="TOML file; its [train] table sets any option."),
    epochs: int = typer.Option(None, "--epochs", help="Maximum epochs (default per model)."),
    lr: float = typer.Option(None, "--lr", help="Learning rate (default per model)."),
    seed: int = typer.Option(None, "--seed", help="First seed (default 0)."),
    seeds: int = typer.Option(None, "--seeds", help="Number of seeds; reports mean and std."),
    device: str = typer.Option(None, "--device", help="auto | cpu | cuda."),
    engine: str = typer.Option(None, "--engine", help="Graph engine: auto | dgl | torch."),
    protocol: str = typer.Option(
        None, "--protocol",
        help="standard (select on val, test once) | paper (the original code's test-set selection; labelled).",
    ),
    model_variant: str = typer.Option(
        None, "--model-variant",
        help="project (default) | original: the original LLMRec model's normalisation, softmax, AdamW, pruning "
             "and attribute BPR (for reproducing it; labelled in every output).",
    ),
    baselines: bool = typer.Option(
        False, "--baselines",
        help="Also train popularity, MF-BPR, LightGCN (or the config's [compare] baselines); write model/comparison.md.",
    ),
    stop_after_epochs: int = typer.Option(
        None, "--stop-after-epochs", help="Stop after N epochs, leaving a checkpoint that the next run resumes."
    ),
) -> None:
    """Train a recommender on RUN, select on validation, test once; write <run>/model/<name>/."""
    from llmrec.config import write_effective_config
    from llmrec.recommender.comparison import compare_with_baselines
    from llmrec.recommender.runner import train_and_evaluate
    from llmrec.recommender.trainer import TrainingInterrupted

    train_config = _config(config, model=model, max_epochs=epochs, lr=lr, seed=seed, seeds=seeds, device=device,
                           engine=engine, protocol=protocol, model_variant=model_variant,
                           stop_after_epochs=stop_after_epochs)
    write_effective_config(run, "train", train_config)
    try:
        if baselines:
            compare_with_baselines(run, train_config, name, _compare_config(config))
            typer.echo((run / "model" / "comparison.md").read_text())
            return
        doc = train_and_evaluate(run, train_config, name)
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


def ablate(
    run: Path = RUN_ARGUMENT,
    config: Path = typer.Option(None, "--config", help="TOML file; its [train] table sets shared options."),
    epochs: int = typer.Option(None, "--epochs", help="Maximum epochs per variant."),
    seeds: int = typer.Option(None, "--seeds", help="Seeds per variant."),
    device: str = typer.Option(None, "--device", help="auto | cpu | cuda."),
    engine: str = typer.Option(None, "--engine", help="Graph engine: auto | dgl | torch."),
    protocol: str = typer.Option(None, "--protocol", help="standard | paper."),
) -> None:
    """Train LLMRec and w/o-u-i, w/o-u, w/o-u&i, w/o-prune; write model/ablation.md/json."""
    from llmrec.recommender.comparison import ablate as run_ablation

    train_config = _config(config, model="llmrec", max_epochs=epochs, seeds=seeds, device=device, engine=engine,
                           protocol=protocol)
    entries = run_ablation(run, train_config)
    typer.echo((run / "model" / "ablation.md").read_text())
    typer.echo(f"({len(entries)} variants; outputs in {run / 'model'})")


def register(app: typer.Typer) -> None:
    """Add the recommender commands to the CLI."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("recommend")(recommend)
    app.command("ablate")(ablate)
