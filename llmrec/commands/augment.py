"""`llmrec augment`, `llmrec embed`, `llmrec audit profiles | edges`: LLM answers in, embeddings out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmrec.augment.config import AugmentConfig
from llmrec.commands.flags import config_flags
from llmrec.embed_config import EmbedConfig

audit_app = typer.Typer(no_args_is_help=True, help="Check LLM-written data against ground truth.")


@config_flags(AugmentConfig)
def augment(
    run: Path = typer.Argument(..., help="Prepared run directory."),
    config: Path | None = typer.Option(None, "--config", help="TOML file; its [augment] table sets options."),
    *,
    overrides: dict[str, Any],
) -> None:
    """Ask an LLM for augmented edges, user profiles and item attributes; validated, resumable."""
    from llmrec.augment.pipeline import augment_run
    from llmrec.config import from_toml, write_effective_config

    augment_config = from_toml(AugmentConfig, config, overrides)
    summary = augment_run(run, augment_config)
    write_effective_config(run, augment_config)
    for name, counts in summary.counts.items():
        reasons = counts.as_dict()["failure_reasons"]
        note = " (up to date)" if counts.skipped else ""
        typer.echo(
            f"{name:<11} requested {counts.requested:>5}  valid {counts.valid:>5}  repaired {counts.repaired:>5}  "
            f"failed {counts.failed:>5}{note}" + (f"  top failure: {next(iter(reasons))}" if reasons else "")
        )
    edges = summary.counts.get("edges")
    if edges is not None and edges.consistency and edges.position_bias.get("answers"):
        check, bias = edges.consistency, edges.position_bias
        typer.echo(
            f"edges kept for {check['kept']} of {check['users']} users (same items in a majority of "
            f"{check['orders']} candidate orders: {check['agreed']}; same numbers under every order: "
            f"{check['position_locked']}); liked answered at number {bias['liked_top_position']} in "
            f"{bias['liked_top_share']:.0%} of answers (uniform {1 / bias['candidates']:.0%})"
        )
    if edges is not None and edges.audit.get("verdict"):
        typer.echo(f"edges audit: {edges.audit['verdict']}")
    typer.echo(f"report: {run / 'augment_report.json'}")


@config_flags(EmbedConfig)
def embed(
    run: Path = typer.Argument(..., help="Run directory (after prepare; augment optional)."),
    config: Path | None = typer.Option(None, "--config", help="TOML file; its [embed] table sets options."),
    *,
    overrides: dict[str, Any],
) -> None:
    """Embed item text, LLM item attributes and LLM user profiles into RUN/embeddings/*.npy."""
    from llmrec.config import from_toml, write_effective_config
    from llmrec.embed import embed_run

    embed_config = from_toml(EmbedConfig, config, overrides)
    summary = embed_run(run, embed_config)
    write_effective_config(run, embed_config)
    if summary.skipped:
        typer.echo(f"embeddings in {run / 'embeddings'} are up to date ({summary.model})")
    else:
        typer.echo(
            f"embeddings ({summary.model}, d={summary.dim}) in {run / 'embeddings'}: "
            f"{summary.encoded} texts encoded, {summary.cached} from the cache"
        )


@audit_app.command("profiles")
def audit_profiles(run: Path = typer.Argument(..., help="Run directory with user_profiles.parquet.")) -> None:
    """Accuracy of LLM-inferred age bracket and gender vs the dataset's demographics, next to a majority baseline."""
    from llmrec.artifacts import AUDIT_PROFILES
    from llmrec.audit import audit_profiles as run_audit

    typer.echo(run_audit(run).describe())
    typer.echo(f"written: {run / AUDIT_PROFILES}")


@audit_app.command("edges")
def audit_edges(run: Path = typer.Argument(..., help="Run directory with augmented_edges.parquet.")) -> None:
    """Liked edges vs a random candidate and the base top-1 on validation positives, with 95% intervals."""
    from llmrec.artifacts import AUDIT_EDGES
    from llmrec.augment.edge_audit import audit_run

    audit = audit_run(run)
    typer.echo(audit.describe())
    typer.echo(f"written: {run / AUDIT_EDGES}")
    typer.echo(audit.verdict)
