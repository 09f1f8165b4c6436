"""Augmentation throughput end to end: prompts/s and valid answers/s per backend.

Each mode runs the whole pipeline (render prompts, one batch per augmentation
through a fresh completion store, validate, one repair round, write
artifacts) for edges, profiles and attributes of the same users on a prepared
ml-latest-small run, with SmolLM2-135M:
- `vllm sequential (baseline)`: the vLLM backend at concurrency 1 - one request
  at a time, what the original LLMRec scripts did;
- `vllm` / `openai`: the same server at concurrency 32 (vLLM decoding
  constrained to each answer's JSON schema; the openai backend's `auto` mode);
- `cached rerun`: the vllm mode again on a fresh run directory, every answer
  from the store, server stopped;
- `transformers`: in-process, batch 8, on fewer users (after the server stops,
  so it has the cores to itself).
The vLLM modes need `.venv-vllm` (`make setup-vllm`); without it only the
transformers mode runs.

Run: `python -m bench augment` (writes bench/results/augment.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from llmrec.artifacts import write_text
from llmrec.augment.candidates import generate_candidates
from llmrec.augment.config import AugmentConfig
from llmrec.augment.pipeline import AugmentSummary, run_augmentation
from llmrec.backends import get_backend
from llmrec.backends.base import Backend

RESULTS = Path(__file__).parent / "results" / "augment.md"
MODEL = "smollm2-135m"


@dataclasses.dataclass
class Measurement:
    mode: str
    users: int
    prompts: int
    generated: int
    valid: int
    requested: int
    seconds: float
    per_what: dict[str, str]

    @property
    def prompts_per_s(self) -> float:
        return self.prompts / self.seconds

    @property
    def valid_per_s(self) -> float:
        return self.valid / self.seconds


def _prepared_run(workdir: Path, candidate_epochs: int) -> Path:
    from llmrec.data.prepare import PrepareConfig, prepare_run

    run_dir = workdir / "base"
    prepare_run(run_dir, PrepareConfig(dataset="ml-latest-small"))
    generate_candidates(run_dir, 10, epochs=candidate_epochs)
    return run_dir


def _measure(mode: str, base_run: Path, workdir: Path, backend: Backend, options: AugmentConfig, store: Path) -> Measurement:
    run_dir = workdir / mode.replace(" ", "_").replace("(", "").replace(")", "")
    shutil.copytree(base_run, run_dir)
    started = time.perf_counter()
    # Candidates were made once in the base run; epochs=None reuses them.
    summary: AugmentSummary = run_augmentation(run_dir, backend, dataclasses.replace(options, store=str(store)))
    seconds = time.perf_counter() - started
    counts = summary.counts.values()
    measurement = Measurement(
        mode=mode,
        users=options.limit_users,
        prompts=sum(c.usage["prompts"] for c in counts),
        generated=sum(c.usage["generated"] for c in counts),
        valid=sum(c.valid + c.repaired for c in counts),
        requested=sum(c.requested for c in counts),
        seconds=seconds,
        per_what={w: f"{c.valid}+{c.repaired}/{c.requested}" for w, c in summary.counts.items()},
    )
    print(f"{mode:<34} {measurement.prompts:>4} prompts {seconds:7.1f} s  {measurement.prompts_per_s:6.2f} prompts/s  "
          f"{measurement.valid_per_s:6.2f} valid/s  {measurement.per_what}", flush=True)  # fmt: skip
    return measurement


def _run_modes(args: argparse.Namespace, workdir: Path) -> list[Measurement]:
    base_run = _prepared_run(workdir, args.candidate_epochs)
    options = lambda users: AugmentConfig(limit_users=users, limit_items=users, temperature=args.temperature)  # noqa: E731
    results: list[Measurement] = []
    from llmrec.backends.vllm_server import VLLMServer, default_vllm_python

    if default_vllm_python().exists():
        from llmrec.backends.gguf_convert import ensure_converted
        from llmrec.bundled import smollm2_gguf_path

        with VLLMServer(ensure_converted(smollm2_gguf_path()), MODEL, extra_args=["--no-enable-prefix-caching"]) as server:
            url = server.base_url
            sequential = get_backend("vllm", model=MODEL, base_url=url, max_in_flight=1)
            results.append(_measure("vllm sequential (baseline)", base_run, workdir, sequential,
                                    options(args.sequential_users), workdir / "seq.sqlite"))  # fmt: skip
            concurrent = get_backend("vllm", model=MODEL, base_url=url, max_in_flight=32)
            results.append(_measure("vllm backend, 32 in flight", base_run, workdir, concurrent,
                                    options(args.users), workdir / "vllm.sqlite"))  # fmt: skip
            openai = get_backend("openai", model=MODEL, base_url=url, max_in_flight=32)
            results.append(_measure("openai backend, 32 in flight", base_run, workdir, openai,
                                    options(args.users), workdir / "openai.sqlite"))  # fmt: skip
        offline = get_backend("vllm", model=MODEL, base_url=url, max_in_flight=32)
        results.append(_measure("cached rerun (server stopped)", base_run, workdir, offline,
                                options(args.users), workdir / "vllm.sqlite"))  # fmt: skip
    else:
        print(f"no vLLM venv at {default_vllm_python()}: vLLM/openai modes skipped", flush=True)
    if args.transformers_users:
        with get_backend("transformers", model=MODEL, batch_size=8) as local:
            results.append(_measure("transformers in-process, batch 8", base_run, workdir, local,
                                    options(args.transformers_users), workdir / "hf.sqlite"))  # fmt: skip
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=16, help="users (and attribute items) for the vLLM modes")
    parser.add_argument("--sequential-users", type=int, default=6, help="users for the sequential baseline (slow)")
    parser.add_argument("--transformers-users", type=int, default=4, help="0 skips the in-process backend")
    parser.add_argument("--candidate-epochs", type=int, default=3, help="throughput does not depend on candidate quality")
    parser.add_argument(
        "--temperature", type=float, default=0.0,
        help="greedy by default: vLLM-CPU 0.32 crashes on seeded sampling with concurrent chunked prefill",
    )
    args = parser.parse_args(argv if argv is not None else [])

    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="llmrec-bench-augment-"))
    try:
        results = _run_modes(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write_text(RESULTS, report(results, args, load_before, os.getloadavg()))
    print(f"wrote {RESULTS}")


def report(results: list[Measurement], args: argparse.Namespace, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> str:
    baseline = next((m for m in results if "baseline" in m.mode), None)
    rows = []
    for m in results:
        speedup = f"{m.prompts_per_s / baseline.prompts_per_s:.1f}x" if baseline else "-"
        valid_rate = f"{m.valid / m.requested:.0%}" if m.requested else "-"
        detail = ", ".join(f"{w} {v}" for w, v in m.per_what.items())
        rows.append(f"| {m.mode} | {m.users} | {m.prompts} | {m.generated} | {m.seconds:.1f} | {m.prompts_per_s:.2f} | "
                    f"{m.valid_per_s:.2f} | {valid_rate} | {speedup} | {detail} |")  # fmt: skip
    return "\n".join([
        "# Augmentation throughput (end to end)",
        "",
        f"`python -m bench augment` on {platform.machine()} with {os.cpu_count()} cores; load average "
        f"{load_before[0]:.1f} before and {load_after[0]:.1f} after (other jobs on the machine slow every mode).",
        "ml-latest-small, SmolLM2-135M (bundled GGUF; vLLM-CPU 0.32 float32 --enforce-eager, prefix caching off), "
        f"edges + profiles + attributes of the first N users (attributes: N items), temperature {args.temperature} "
        "(vLLM-CPU 0.32 crashes on seeded sampling under concurrent chunked prefill), one repair round. `prompts` counts first asks + repairs; "
        "`valid` is valid + repaired answers; `detail` is valid+repaired/requested per augmentation.",
        "",
        "| mode | users | prompts | generated | seconds | prompts/s | valid/s | valid rate | vs sequential | detail |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Validity is the model's, not the pipeline's: vLLM constrains decoding to each answer's JSON schema, "
        "and so does the transformers backend (xgrammar) unless `constrained=false` puts the schema in the prompt.",
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
