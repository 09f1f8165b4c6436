"""Ray backend throughput: vLLM replicas vs prompts/s, Ray Data against llmrec's own HTTP client.

Starts two vLLM-CPU servers of the bundled SmolLM2 (prefix caching off, each
bound to its own core with VLLM_CPU_OMP_THREADS_BIND, as replicas on one box
would be), then sends the same greedy prompts, each mode through a fresh
completion store (so every figure includes committing the answers):
- `vllm` backend, llmrec's threaded client with `--base-url` routing (the baseline);
- `ray` backend, Ray Data's HTTP-request processor on a local Ray, one processor
  per server; its job (Ray start, actors) is started by a 2-prompt warm-up that
  is timed on its own, since a run pays it once.
Both on one replica, then on two. Run: `python -m bench ray` (writes
bench/results/ray.md). The CPU is shared with other work: read the load
averages printed with the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

from llmrec.artifacts import write_text
from llmrec.backends import get_backend
from llmrec.backends.gguf_convert import ensure_converted
from llmrec.backends.vllm_server import VLLMServer
from llmrec.bundled import smollm2_gguf_path
from llmrec.backends.store import CompletionStore
from bench.bench_backends import MODEL, bench_requests

RESULTS = Path(__file__).parent / "results" / "ray.md"


class PinnedServer(VLLMServer):
    """A vLLM-CPU server whose compute threads are bound to the given cores."""

    def __init__(self, cores: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cores = cores

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "VLLM_CPU_OMP_THREADS_BIND": self.cores}


@dataclasses.dataclass
class Row:
    mode: str
    replicas: int
    prompts: int
    seconds: float
    start_s: float | None = None  # the Ray job's start-up (warm-up), outside `seconds`

    @property
    def prompts_per_s(self) -> float:
        return self.prompts / self.seconds


def _through_store(backend, requests, store_path: Path) -> float:
    started = time.perf_counter()
    with CompletionStore(store_path) as store:
        result = store.generate(backend, requests, progress=False)
    assert result.usage.generated == len(requests), result.usage
    return time.perf_counter() - started


def measure(kind: str, urls: list[str], requests, workdir: Path, in_flight: int) -> Row:
    if kind == "vllm":
        backend = get_backend("vllm", model=MODEL, base_url=urls, max_in_flight=in_flight)
    else:
        backend = get_backend("ray", model=MODEL, base_url=urls, batch_size=1, batches_in_flight=in_flight)
    with backend:
        start_s = None
        if kind == "ray":  # the warm-up starts the job: Ray and the dataset machinery
            start_s = _through_store(backend, bench_requests(2, 4), workdir / f"warm-{kind}-{len(urls)}.sqlite")
        seconds = _through_store(backend, requests, workdir / f"{kind}-{len(urls)}.sqlite")
    row = Row(f"{kind} backend", len(urls), len(requests), seconds, start_s)
    print(f"{row.mode:<14} x{row.replicas}: {row.prompts_per_s:.2f} prompts/s ({seconds:.1f} s; start {start_s})", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--in-flight", type=int, default=32, help="requests in flight per mode")
    args = parser.parse_args(argv if argv is not None else [])

    folder = ensure_converted(smollm2_gguf_path())
    servers = [PinnedServer(str(core), folder, MODEL, extra_args=["--no-enable-prefix-caching"]) for core in (0, 1)]
    workdir = Path(tempfile.mkdtemp(prefix="llmrec-bench-ray-"))
    starting = [threading.Thread(target=server.start) for server in servers]
    for thread in starting:
        thread.start()
    for thread in starting:
        thread.join()
    try:
        urls = [server.base_url for server in servers]
        load_before = os.getloadavg()
        rows = []
        for replicas in (1, 2):
            for kind in ("vllm", "ray"):
                requests = bench_requests(args.prompts, args.max_tokens)
                rows.append(measure(kind, urls[:replicas], requests, workdir, args.in_flight))
        load_after = os.getloadavg()
    finally:
        for server in servers:
            server.stop()
    write_text(RESULTS, report(rows, args, load_before, load_after))
    print(f"wrote {RESULTS}")


def report(rows: list[Row], args: argparse.Namespace, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> str:
    baseline = rows[0].prompts_per_s
    lines = [
        f"| {row.mode} | {row.replicas} | {row.prompts} | {row.seconds:.1f} | {row.prompts_per_s:.2f} | "
        f"{row.prompts_per_s / baseline:.2f}x | {'' if row.start_s is None else f'{row.start_s:.0f}'} |"
        for row in rows
    ]
    return "\n".join([
        "# Ray backend throughput: replicas vs prompts/s",
        "",
        f"`python -m bench ray` on {platform.machine()} with {os.cpu_count()} cores, shared with other jobs: load "
        f"average {load_before[0]:.1f} before and {load_after[0]:.1f} after the measurements (so the figures are "
        "noisy; compare rows, not machines).",
        f"vLLM-CPU 0.32 serving SmolLM2-135M (float32, --enforce-eager, prefix caching off), each server bound to "
        f"one core; {args.prompts} prompts, greedy, max_tokens {args.max_tokens}, {args.in_flight} requests in "
        "flight; every mode through a fresh completion store. One round (no medians).",
        "",
        "| mode | vLLM replicas | prompts | seconds | prompts/s | vs vllm backend x1 | Ray job start s |",
        "|---|---|---|---|---|---|---|",
        *lines,
        "",
        "The Ray job's start (local Ray, Ray Data's actors; timed on a 2-prompt warm-up) is paid once per run, "
        "outside the seconds column.",
        "",
    ])  # fmt: skip
