"""In-process generation against vLLM-CPU on the same real prompts, and the grammar engines side by side.

Every mode answers the same requests (`bench.real_prompts`: ml-latest-small
edge, profile and attribute questions of the first users, greedy, the
pipeline's schemas and schema-sized token budgets), one mode after the other
in one run, with SmolLM2-135M:
- `vllm sequential`: a vLLM-CPU server at one request in flight (the baseline
  of `bench/results/augment.md`; structured output constrains its decoding);
- `transformers xgrammar`: the in-process default (float32, batch 8,
  constrained by xgrammar);
- `transformers xgrammar int8`: the same with `quantize=int8`;
- `transformers llguidance int8`: the other grammar engine in the same
  processor slot (bench-only adapter below);
- `transformers prompt-only`: `constrained=false`, the schema in the prompt
  (today's fallback and yesterday's default).
Start-up is timed apart: model load (+ int8 conversion), grammar-engine set-up
(tokenizer mapping) and the first compile of each schema kind; `seconds` and
the rates count generation only. The judge: the whole answer parses as JSON,
it validates against its schema, and it passes the pipeline's validator.

Run: `python -m bench inprocess [--prompts 64] [--modes ...]` (writes bench/results/inprocess.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.real_prompts import Question, judge, prepared_run, questions
from llmrec.artifacts import write_text
from llmrec.backends import get_backend
from llmrec.backends.base import Backend

RESULTS = Path(__file__).parent / "results" / "inprocess.md"
MODEL = "smollm2-135m"
MODES = ("vllm sequential", "transformers xgrammar", "transformers xgrammar int8", "transformers llguidance int8",
         "transformers prompt-only")  # fmt: skip


@dataclasses.dataclass
class Measurement:
    mode: str
    startup: str
    seconds: float
    prompts: int
    prompt_tokens: int
    completion_tokens: int
    json_ok: int
    schema_ok: int
    valid: int
    per_kind: dict[str, str]


class LlguidanceGrammars:
    """llguidance behind the backend's grammar interface (`compile`, `processor`), for this comparison only."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> None:
        import llguidance
        import llguidance.hf

        self._llg = llguidance
        self._tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=stop_token_ids[0])
        self.vocab_size = vocab_size

    def compile(self, schema: dict[str, Any]) -> Any:
        grammar = self._llg.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults={"whitespace_flexible": False})
        matcher = self._llg.LLMatcher(self._tokenizer, grammar)  # builds and checks the parser, as xgrammar's compile does
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return grammar

    def processor(self, grammars: list[Any]) -> Any:
        import torch
        from transformers import LogitsProcessor

        llg, tokenizer, vocab_size = self._llg, self._tokenizer, self.vocab_size

        class Processor(LogitsProcessor):
            def __init__(self) -> None:
                self.matchers = [llg.LLMatcher(tokenizer, g) if g is not None else None for g in grammars]
                self.bitmask = torch.full((len(grammars), (vocab_size + 31) // 32), -1, dtype=torch.int32)
                self.shifts = torch.arange(32, dtype=torch.int32)
                self.started = False

            def __call__(self, input_ids: Any, scores: Any) -> Any:
                import llguidance.torch

                if self.started:
                    for row, matcher in enumerate(self.matchers):
                        if matcher is not None and not matcher.is_stopped():
                            matcher.consume_token(int(input_ids[row, -1]))
                self.started = True
                self.bitmask.fill_(-1)
                for row, matcher in enumerate(self.matchers):
                    if matcher is not None:  # a stopped matcher (JSON complete) allows only end of sequence
                        llguidance.torch.fill_next_token_bitmask(matcher, self.bitmask, row)
                allowed = ((self.bitmask.unsqueeze(-1) >> self.shifts) & 1).view(len(self.matchers), -1)[:, : scores.shape[1]]
                return scores.masked_fill(allowed == 0, float("-inf"))

        return Processor()


def _score(mode: str, startup: str, asked: list[Question], completions: list[Any], seconds: float) -> Measurement:
    verdicts = [judge(q, c) for q, c in zip(asked, completions)]
    kinds = Counter(q.what for q in asked)
    valid_by_kind = Counter(q.what for q, v in zip(asked, verdicts) if v["valid"])
    measurement = Measurement(
        mode, startup, seconds, len(asked),
        sum(c.prompt_tokens for c in completions), sum(c.completion_tokens for c in completions),
        sum(v["json"] for v in verdicts), sum(v["schema"] for v in verdicts), sum(v["valid"] for v in verdicts),
        {what: f"{valid_by_kind[what]}/{n}" for what, n in kinds.items()},
    )  # fmt: skip
    print(f"{mode:<32} {seconds:7.1f} s {len(asked) / seconds:6.3f} prompts/s "
          f"{measurement.completion_tokens / seconds:6.1f} tok/s valid {measurement.valid}/{len(asked)} {startup}", flush=True)  # fmt: skip
    return measurement


def _generate(backend: Backend, asked: list[Question]) -> tuple[list[Any], float]:
    started = time.perf_counter()
    completions = backend.generate([q.request for q in asked])
    return completions, time.perf_counter() - started


def _in_process(mode: str, asked: list[Question]) -> Measurement:
    constrained = "prompt-only" not in mode
    backend: Any = get_backend("transformers", model=MODEL, batch_size=8, constrained=constrained,
                               quantize="int8" if "int8" in mode else "none")  # fmt: skip
    started = time.perf_counter()
    backend._load()  # timed apart from generation (bench only: the backend loads on its first request)
    load_s = time.perf_counter() - started
    startup = f"load {load_s:.1f} s"
    if constrained:
        if "llguidance" in mode:
            started = time.perf_counter()
            backend._grammars = LlguidanceGrammars(
                backend._tokenizer, backend._model.config.vocab_size, sorted(backend._stop_token_ids())
            )
            startup += f", engine set-up {time.perf_counter() - started:.2f} s"
        compile_s = {}
        for question in asked:
            if question.what not in compile_s:
                started = time.perf_counter()
                backend._grammars.compile(question.request.json_schema)
                compile_s[question.what] = time.perf_counter() - started
        startup += ", first compile " + " / ".join(f"{what} {s * 1000:.0f} ms" for what, s in compile_s.items())
    try:
        completions, seconds = _generate(backend, asked)
    finally:
        backend.close()
    return _score(mode, startup, asked, completions, seconds)


def _vllm_sequential(asked: list[Question]) -> Measurement | None:
    from llmrec.backends.gguf_convert import ensure_converted
    from llmrec.backends.vllm_server import VLLMServer, default_vllm_python
    from llmrec.bundled import smollm2_gguf_path

    if not default_vllm_python().exists():
        print(f"no vLLM venv at {default_vllm_python()}: vLLM mode skipped", flush=True)
        return None
    started = time.perf_counter()
    with VLLMServer(ensure_converted(smollm2_gguf_path()), MODEL, extra_args=["--no-enable-prefix-caching"]) as server:
        startup = f"server healthy after {time.perf_counter() - started:.0f} s"
        with get_backend("vllm", model=MODEL, base_url=server.base_url, max_in_flight=1) as client:
            completions, seconds = _generate(client, asked)
    return _score("vllm sequential", startup, asked, completions, seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64, help="questions, split evenly over edges, profiles, attributes")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, metavar="MODE")
    args = parser.parse_args(argv if argv is not None else [])

    load_before = os.getloadavg()
    workdir = Path(os.environ.get("LLMREC_BENCH_WORKDIR") or tempfile.mkdtemp(prefix="llmrec-bench-inprocess-"))
    try:
        asked = questions(prepared_run(workdir), -(-args.prompts // 3))[: args.prompts]
        results = []
        for mode in args.modes:
            measured = _vllm_sequential(asked) if mode == "vllm sequential" else _in_process(mode, asked)
            if measured is not None:
                results.append(measured)
                # Written after every mode: a long run that is stopped keeps the modes it finished.
                write_text(RESULTS, report(results, asked, load_before, os.getloadavg()))
    finally:
        if not os.environ.get("LLMREC_BENCH_WORKDIR"):
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote {RESULTS}")


def report(results: list[Measurement], asked: list[Question], load_before: tuple[float, ...], load_after: tuple[float, ...]) -> str:
    baseline = next((m for m in results if m.mode == "vllm sequential"), None)
    rows = []
    for m in results:
        rate = m.prompts / m.seconds
        ratio = f"{rate / (baseline.prompts / baseline.seconds):.2f}x" if baseline else "-"
        kinds = ", ".join(f"{what} {v}" for what, v in m.per_kind.items())
        rows.append(f"| {m.mode} | {m.seconds:.1f} | {rate:.3f} | {ratio} | {m.completion_tokens} | "
                    f"{m.completion_tokens / m.seconds:.1f} | {m.json_ok}/{m.prompts} | {m.schema_ok}/{m.prompts} | "
                    f"{m.valid}/{m.prompts} ({kinds}) | {m.startup} |")  # fmt: skip
    kinds = Counter(q.what for q in asked)
    return "\n".join([
        "# In-process generation vs vLLM-CPU, and grammar engines (same prompts, one run)",
        "",
        f"`python -m bench inprocess --prompts {len(asked)}` on {platform.machine()} with {os.cpu_count()} cores "
        f"shared with other jobs: load average {load_before[0]:.1f} before and {load_after[0]:.1f} after "
        "(absolute times are inflated; ratios are from the same run).",
        f"{len(asked)} real ml-latest-small questions ({', '.join(f'{n} {w}' for w, n in kinds.items())}), history 10 items, "
        "greedy, the pipeline's schemas and schema-sized answer budgets, SmolLM2-135M (bundled GGUF, converted); "
        "in-process: batch 8, SDPA attention, 1 thread (OMP_NUM_THREADS=1); vLLM-CPU 0.32: float32, --enforce-eager, "
        "prefix caching off, one request in flight.",
        "`json`: the whole answer parses; `schema`: it validates against the request's schema; `valid`: it passes "
        "the pipeline's validator (edges: two different candidates not in the history). Seconds and rates count "
        "generation only; start-up is listed apart.",
        "",
        "| mode | seconds | prompts/s | vs vLLM sequential | generated tokens | tokens/s | json | schema | valid | start-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
