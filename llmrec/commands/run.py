"""`llmrec run`: the main job on a config file (or the embedded defaults).

Its flags are shortcuts to a few keys of several tables (`--device` sets the
device of every stage); the config file sets any key.
"""

from __future__ import annotations

from pathlib import Path

import typer

from llmrec.augment.config import AugmentConfig
from llmrec.data.config import PrepareConfig


def run(
    run_dir: Path = typer.Option(Path("runs/demo"), "--run", help="Run directory (created if absent)."),
    config: Path | None = typer.Option(None, "--config", help="TOML with [data] [augment] [embed] [train] tables."),
    dataset: str | None = typer.Option(None, "--dataset", help=f"Dataset name (default {PrepareConfig.dataset})."),
    backend: str | None = typer.Option(None, "--backend", help="LLM backend: transformers | vllm | openai | ray | an installed plug-in (docs/backends.md)."),
    model: str | None = typer.Option(
        None, "--model", help=f"LLM alias, HF id or path (default {AugmentConfig.model})."
    ),
    base_url: list[str] | None = typer.Option(None, "--base-url", help="LLM server URL (repeat for replicas)."),
    limit_users: int | None = typer.Option(
        None, "--limit-users", help=f"Users to augment (0 = all; default {AugmentConfig.limit_users})."
    ),
    seeds: int | None = typer.Option(None, "--seeds", help="Training seeds; metrics are mean ± std."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda for training and embeddings."),
) -> None:
    """Run the main job: prepare, candidates, LLM augmentation, embeddings, training vs baselines, report."""
    from llmrec.job import load_job_config, run_job

    overrides = {
        "data": {"dataset": dataset},
        "augment": {"backend": backend, "model": model, "base_url": base_url or None, "limit_users": limit_users,
                    "device": device},
        "embed": {"device": device},
        "train": {"seeds": seeds, "device": device},
    }  # fmt: skip
    result = run_job(run_dir, load_job_config(config, overrides))
    typer.echo(result.report_path.read_text(encoding="utf-8"))
    typer.echo(f"report: {result.report_path}")
