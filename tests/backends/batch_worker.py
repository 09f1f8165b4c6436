"""A real separate process running one batch through the completion store.

Used by the crash and multi-process tests: `python -m tests.backends.batch_worker
STORE BASE_URL N [--prefix P] [--max-tokens M] [--max-in-flight C] [--claim-chunk K]
[--barrier DIR]`. With `--barrier`, the worker creates `DIR/ready-<pid>` once
imported and starts only when `DIR/go` exists, so two workers really overlap.
Prints the run's usage and answers as JSON on its last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

from llmrec.backends import ChatRequest, SamplingParams, get_backend
from llmrec.backends.store import CompletionStore


def worker_requests(n: int, prefix: str, max_tokens: int) -> list[ChatRequest]:
    sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    return [ChatRequest(({"role": "user", "content": f"{prefix} {i}: name one animal."},), sampling) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("base_url")
    parser.add_argument("n", type=int)
    parser.add_argument("--prefix", default="Prompt")
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--max-in-flight", type=int, default=4)
    parser.add_argument("--claim-chunk", type=int, default=1024)
    parser.add_argument("--barrier", type=Path)
    args = parser.parse_args()
    if args.barrier:
        (args.barrier / f"ready-{os.getpid()}").touch()
        while not (args.barrier / "go").exists():
            time.sleep(0.02)
    backend = get_backend("openai", model="smollm2-135m", base_url=args.base_url, max_in_flight=args.max_in_flight)
    with CompletionStore(args.store, claim_chunk=args.claim_chunk, poll_s=0.1) as store:
        result = store.generate(backend, worker_requests(args.n, args.prefix, args.max_tokens), progress=False)
    print(json.dumps({"usage": dataclasses.asdict(result.usage), "texts": [c.text for c in result.completions]}))


if __name__ == "__main__":
    main()
