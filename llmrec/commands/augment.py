"""`llmrec augment`, `llmrec embed`, `llmrec audit profiles`: LLM answers in, embeddings out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

audit_app = typer.Typer(no_args_is_help=True, help="Check LLM-written data against ground truth.")


def _parse_backend_options(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs; values read as JSON when they parse (numbers, booleans), else as text."""
    from llmrec.errors import ConfigError

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--backend-option '{pair}': expected KEY=VALUE")
        try:
            options[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip()] = raw
    return options


def _limit(value: str | None, flag: str) -> int | None:
    from llmrec.errors import ConfigError

    if value is None:
        return None
    if value.strip().lower() == "all":
        return 0
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{flag} {value!r}: expected a number or 'all'") from None
    return number


def augment(
    run: Path = typer.Argument(..., help="Prepared run directory."),
    what: str | None = typer.Option(None, "--what", help="Comma-separated: edges,profiles,attributes (default all)."),
    backend: str | None = typer.Option(None, "--backend", help="transformers | vllm | openai (default transformers)."),
    model: str | None = typer.Option(None, "--model", help="Alias (smollm2-135m, qwen2.5-7b, ...), HF id or path."),
    base_url: list[str] | None = typer.Option(None, "--base-url", help="Server URL (repeat for replicas)."),
    backend_option: list[str] | None = typer.Option(
        None, "--backend-option", help="KEY=VALUE passed to the backend (e.g. batch_size=4, max_in_flight=64)."
    ),
    limit_users: str | None = typer.Option(None, "--limit-users", help="First N users with history (default 20; 0/all = all)."),
    limit_items: str | None = typer.Option(
        None, "--limit-items",
        help="Attributes: default the items in the chosen users' histories + candidates; N = first N of those; 0/all = every item.",
    ),  # fmt: skip
    history_budget: int | None = typer.Option(None, "--history-budget", help="Most recent training items per prompt (default 30)."),
    prompts_dir: Path | None = typer.Option(None, "--prompts-dir", help="Folder of <name>.jinja overriding the packaged prompts."),
    store: Path | None = typer.Option(None, "--store", help="Completion store (default $LLMREC_HOME/completions.sqlite)."),
    temperature: float | None = typer.Option(None, "--temperature", help="Override every augmentation's temperature."),
    top_p: float | None = typer.Option(None, "--top-p", help="Override every augmentation's top_p."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="Override every augmentation's answer budget."),
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed (also the candidate model's seed)."),
    candidates_k: int | None = typer.Option(None, "--candidates-k", help="Candidates per user for edges (default 10)."),
    candidates_epochs: int | None = typer.Option(None, "--candidates-epochs", help="Epochs of the candidate LightGCN."),
    edge_orders: int | None = typer.Option(
        None, "--edge-orders",
        help="Shuffled candidate orders per edge question; an edge is kept when a majority agree (default 3; 1 = no check).",
    ),  # fmt: skip
    device: str | None = typer.Option(None, "--device", help="Device of the candidate model (auto/cpu/cuda)."),
    config: Path | None = typer.Option(None, "--config", help="TOML file; its [augment] table sets options."),
) -> None:
    """Ask an LLM for augmented edges, user profiles and item attributes; validated, resumable."""
    from llmrec.augment.settings import AugmentConfig, augment_with_settings
    from llmrec.config import build, load_toml, write_effective_config

    overrides: dict[str, Any] = {
        "what": [w.strip() for w in what.split(",") if w.strip()] if what else None,
        "backend": backend, "model": model, "base_url": base_url or None,
        "backend_options": _parse_backend_options(backend_option) if backend_option else None,
        "store": str(store) if store else None, "limit_users": _limit(limit_users, "--limit-users"),
        "limit_items": _limit(limit_items, "--limit-items"), "history_budget": history_budget,
        "prompts_dir": str(prompts_dir) if prompts_dir else None, "temperature": temperature, "top_p": top_p,
        "max_tokens": max_tokens, "seed": seed, "candidates_k": candidates_k,
        "candidates_epochs": candidates_epochs, "edge_orders": edge_orders, "device": device,
    }  # fmt: skip
    settings = build(AugmentConfig, "augment", load_toml(config).get("augment"), overrides)
    summary = augment_with_settings(run, settings)
    write_effective_config(run, "augment", settings)
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
    typer.echo(f"report: {run / 'augment_report.json'}")


def embed(
    run: Path = typer.Argument(..., help="Run directory (after prepare; augment optional)."),
    model: str | None = typer.Option(None, "--model", help="sentence-transformers id or folder (default bundled all-MiniLM-L6-v2)."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda (default auto)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Texts per encoder batch."),
) -> None:
    """Embed item text, LLM item attributes and LLM user profiles into RUN/embeddings/*.npy."""
    from llmrec.embed import embed_run

    summary = embed_run(run, model=model, device=device, batch_size=batch_size)
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
    from llmrec.audit import AUDIT_FILE, audit_profiles as run_audit

    typer.echo(run_audit(run).describe())
    typer.echo(f"written: {run / AUDIT_FILE}")
