"""Edge scoring speed per backend: transformers (SmolLM2, Gemma), a vLLM-CPU server, Ray's HTTP stage.

Scoring asks one question per candidate (`llmrec.augment.scoring`): for
`likelihood` one request per (user, candidate), log P(title | history); for
`yesno` two, the question with " yes" and with " no". Both methods also score
each candidate once after the content-free prompt (empty history). The requests
here are the pipeline's own (`scoring_plan`, 20 history titles) for the first
users of ml-latest-small, and each backend answers the same ones:
- `transformers`: SmolLM2-135M in this process, float32, 1 thread; it runs each
  distinct prompt (a user's history) once and reuses its key/value cache for
  that user's candidates;
- `gemma`: the same, with Gemma 3 270M (262k-token vocabulary);
- `vllm`: a vLLM-CPU 0.32 server started here for SmolLM2 (float32,
  --enforce-eager, both cores), 32 requests in flight; every request is
  prompt + continuation in full, since vLLM skips its prefix cache for
  requests that ask for prompt log-probabilities;
- `ray`: the `ray` backend's HTTP stage (a local Ray) against the same kind
  of server.

Candidates are each user's 10 most popular training items that the user has
not rated in training (no base model is trained here; the speed of scoring does
not depend on which items they are, only the titles' lengths do). The figures
are extrapolated to 609 users x 10 candidates and set against the `choose`
method's ~55 min on vLLM-CPU for 3 candidate orders (docs/results.md).

10 users by default (`--users` for more): on the shared 2-core box the vLLM
server answers ~1.3 scores/s, so 20 users (600 pair requests for the two
methods) would take it ~8 min alone. The content-free requests are timed on
`--prior-items` items and extrapolated.

Run: `python -m bench scoring [--users 10] [--backends transformers,gemma,vllm,ray]`
(writes bench/results/scoring.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.machine import cpu_name
from llmrec.artifacts import write_text
from llmrec.augment.scoring import LIKELIHOOD, YESNO, ScoringPlan, scoring_plan
from llmrec.backends import get_backend
from llmrec.backends.base import Backend, read_score

RESULTS = Path(__file__).parent / "results" / "scoring.md"
MODEL = "smollm2-135m"
FULL_USERS, CANDIDATES = 609, 10
#: The choose method's edge stage at full coverage (docs/results.md, "The run"): 1,827 prompts
#: (609 users x 3 shuffled orders) in ~55 min on the idle 2-core box, vLLM-CPU with prefix caching.
CHOOSE_MINUTES = 55.0


@dataclasses.dataclass
class Measurement:
    """One backend answering one method's requests: the users' pairs, then a sample of content-free ones."""

    backend: str
    method: str
    users: int
    pair_requests: int
    pair_seconds: float
    prior_requests: int
    prior_seconds: float
    full_prior_requests: int
    scored: int
    prompt_tokens: int
    scored_tokens: int
    logprobs: dict[int, float | None]

    @property
    def requests(self) -> int:
        return self.pair_requests + self.prior_requests

    @property
    def seconds(self) -> float:
        return self.pair_seconds + self.prior_seconds

    @property
    def users_per_s(self) -> float:
        return self.users / self.pair_seconds

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def full_minutes(self) -> float:
        """609 users' pairs at this rate, plus that run's content-free requests at their measured rate."""
        prior_s = self.full_prior_requests * self.prior_seconds / self.prior_requests if self.prior_requests else 0.0
        return (FULL_USERS / self.users_per_s + prior_s) / 60


@dataclasses.dataclass(frozen=True)
class Workload:
    """One method's requests: every (user, candidate) pair of the bench's users, a sample of content-free ones."""

    plan: ScoringPlan
    pairs: list[int]
    priors: list[int]
    full_prior_requests: int


def popular_candidates(train: pd.DataFrame, users: list[int]) -> pd.DataFrame:
    """Each user's `CANDIDATES` most popular training items the user has not rated in training."""
    popularity = train.groupby("item").size().sort_values(ascending=False, kind="stable")
    seen = train.groupby("user")["item"].agg(set)
    rows = []
    for user in users:
        unseen = [item for item in popularity.index if item not in seen.get(user, set())][:CANDIDATES]
        rows += [(user, rank, int(item), float(popularity[item])) for rank, item in enumerate(unseen)]
    return pd.DataFrame(rows, columns=["user", "rank", "item", "score"])


def workloads(run_dir: Path, n_users: int, n_prior_items: int) -> dict[str, Workload]:
    from llmrec.data.tables import load_split

    tables = load_split(run_dir)
    every_user = sorted(int(u) for u in tables.train["user"].unique())
    users = every_user[:n_users]
    candidates = popular_candidates(tables.train, users)
    distinct_full = popular_candidates(tables.train, every_user)["item"].nunique()
    found = {}
    for method in (LIKELIHOOD, YESNO):
        plan = scoring_plan(method, tables, candidates, users, history_budget=20, prompts_dir=None)
        pairs = [i for indices in plan.conditional.values() for i in indices]
        priors = [i for item in sorted(plan.prior)[:n_prior_items] for i in plan.prior[item]]
        per_item = len(next(iter(plan.prior.values())))
        found[method] = Workload(plan, pairs, priors, distinct_full * per_item)
    return found


def measure(name: str, backend: Backend, work: Workload) -> Measurement:
    plan = work.plan
    answers, seconds = {}, []
    for indices in (work.pairs, work.priors):
        requests = [plan.requests[i] for i in indices]
        started = time.perf_counter()
        answers.update({indices[k]: completion for k, completion in backend.score_iter(requests)})
        seconds.append(time.perf_counter() - started)
    logprobs = {index: read_score(completion) for index, completion in answers.items()}
    measurement = Measurement(
        name, plan.method, len(plan.candidates), len(work.pairs), seconds[0], len(work.priors), seconds[1],
        work.full_prior_requests, sum(v is not None for v in logprobs.values()),
        sum(a.prompt_tokens for a in answers.values()), sum(a.completion_tokens for a in answers.values()), logprobs,
    )  # fmt: skip
    print(f"{name:<13} {plan.method:<10} {measurement.users:>3} users {measurement.pair_requests:>4} + "
          f"{measurement.prior_requests:>3} requests {measurement.seconds:7.1f} s {measurement.users_per_s:6.3f} users/s "
          f"{measurement.requests_per_s:6.2f} requests/s -> {measurement.full_minutes:6.1f} min for {FULL_USERS} users",
          flush=True)  # fmt: skip
    return measurement


def run_transformers(methods: dict[str, Workload], batch_size: int, model: str = MODEL) -> list[Measurement]:
    import torch

    torch.set_num_threads(1)
    backend = get_backend("transformers", model=model, score_batch_size=batch_size)
    name = "transformers" if model == MODEL else f"transformers ({model})"
    try:
        work = next(iter(methods.values()))
        list(backend.score_iter([work.plan.requests[work.pairs[0]]]))  # load + warm-up, not measured
        return [measure(name, backend, work) for work in methods.values()]
    finally:
        backend.close()


def run_served(methods: dict[str, Workload], concurrency: int, through_ray: bool) -> list[Measurement]:
    """SmolLM2 on a vLLM-CPU server started here, through the `vllm` backend or the `ray` backend's HTTP stage."""
    from llmrec.backends.gguf_convert import ensure_converted
    from llmrec.backends.vllm_server import VLLMServer
    from llmrec.bundled import smollm2_gguf_path

    with VLLMServer(ensure_converted(smollm2_gguf_path()), MODEL) as server:
        if through_ray:  # Ray Data keeps batches_in_flight x batch_size requests at the server
            backend = get_backend("ray", model=MODEL, base_url=server.base_url, batch_size=4,
                                  batches_in_flight=max(1, concurrency // 4))  # fmt: skip
        else:
            backend = get_backend("vllm", model=MODEL, base_url=server.base_url, max_in_flight=concurrency)
        work = next(iter(methods.values()))
        list(backend.score_iter([work.plan.requests[i] for i in work.pairs[:2]]))  # first answer, Ray's start, warm-up
        try:
            return [measure("ray (http stage)" if through_ray else "vllm server", backend, work)
                    for work in methods.values()]  # fmt: skip
        finally:
            backend.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10, help="first N users of ml-latest-small (609 in all)")
    parser.add_argument("--prior-items", type=int, default=10, help="content-free requests of this many items are timed")
    parser.add_argument("--backends", default="transformers,gemma,vllm,ray",
                        help="comma-separated: transformers (SmolLM2), gemma (Gemma 3 270M, transformers), vllm, ray")
    parser.add_argument("--concurrency", type=int, default=32, help="vLLM requests in flight")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="transformers continuations (or prompts sharing a prefix) per forward pass")
    parser.add_argument("--run", type=Path, help="a prepared run to reuse (default: prepare one in a temporary folder)")
    args = parser.parse_args(argv if argv is not None else [])
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]

    load_before = os.getloadavg()
    run_dir = args.run
    if run_dir is None:
        from llmrec.data.prepare import PrepareConfig, prepare_run

        run_dir = Path(tempfile.mkdtemp(prefix="llmrec-bench-scoring-")) / "run"
        prepare_run(run_dir, PrepareConfig(dataset="ml-latest-small"))
    methods = workloads(run_dir, args.users, args.prior_items)
    results: list[Measurement] = []
    if "transformers" in backends:
        results += run_transformers(methods, args.batch_size)
    if "gemma" in backends:
        results += run_transformers(methods, args.batch_size, model="gemma3-270m")
    if "vllm" in backends:
        results += run_served(methods, args.concurrency, through_ray=False)
    if "ray" in backends:
        results += run_served(methods, args.concurrency, through_ray=True)
    write_text(RESULTS, report(results, methods, args, load_before, os.getloadavg()))
    print(f"wrote {RESULTS}")


def _agreement(results: list[Measurement]) -> list[str]:
    """The largest |served - transformers| SmolLM2 score over the requests both scored (the same model: float noise)."""
    lines = []
    for method in (LIKELIHOOD, YESNO):
        same_model = [m for m in results if m.method == method and "gemma" not in m.backend]
        if len(same_model) < 2 or same_model[0].backend != "transformers":
            continue
        first = same_model[0].logprobs
        for other in same_model[1:]:
            second = other.logprobs
            gaps = [abs(first[i] - second[i]) for i in first if first[i] is not None and second.get(i) is not None]
            if gaps:
                lines.append(f"- {method}, {other.backend} vs transformers: {len(gaps)} requests scored by both; "
                             f"largest |difference| {max(gaps):.1e} nats")  # fmt: skip
    return lines


def report(
    results: list[Measurement],
    methods: dict[str, Workload],
    args: argparse.Namespace,
    load_before: tuple[float, ...],
    load_after: tuple[float, ...],
) -> str:
    rows = [
        f"| {m.backend} | {m.method} | {m.users} | {m.pair_requests} + {m.prior_requests} ({m.scored} scored) | "
        f"{m.prompt_tokens / m.requests:.0f} / {m.scored_tokens / m.requests:.1f} | {m.pair_seconds:.1f} + "
        f"{m.prior_seconds:.1f} | {m.users_per_s:.3f} | {m.requests_per_s:.2f} | {m.full_minutes:.0f} min | "
        f"{m.full_minutes / CHOOSE_MINUTES:.2f}x |"
        for m in results
    ]
    plan_lines = [
        f"- {method}: {len(work.pairs)} requests for {len(work.plan.conditional)} (user, candidate) pairs, and "
        f"{len(work.priors)} content-free ones for {min(args.prior_items, len(work.plan.prior))} of the "
        f"{len(work.plan.prior)} distinct candidate items (the {FULL_USERS}-user run has {work.full_prior_requests} "
        "content-free requests)"
        for method, work in methods.items()
    ]
    return "\n".join(
        [
            "# Edge scoring speed",
            "",
            f"`python -m bench scoring --users {args.users} --prior-items {args.prior_items} --backends {args.backends}` "
            f"on {cpu_name()}, {os.cpu_count()} cores, `OMP_NUM_THREADS=1`; load average {load_before[0]:.1f} before "
            f"and {load_after[0]:.1f} after (other jobs on the machine slow every row). The transformers backend ran "
            f"in this process with 1 torch thread, score batch {args.batch_size}, SmolLM2-135M (and Gemma 3 270M in "
            "the `gemma` rows); the vLLM-CPU 0.32 server of SmolLM2 (float32, --enforce-eager, prefix caching on but "
            "unused by scoring, its model threads bound to both cores by vLLM) got "
            f"{args.concurrency} requests in flight through the `vllm` backend, and as many through the `ray` "
            "backend's HTTP stage (a local Ray, batches of 4).",
            "",
            f"Requests: `scoring_plan` for the first {args.users} users of ml-latest-small (history budget 20 titles), "
            f"candidates = each user's {CANDIDATES} most popular unseen training items (no base model is trained for "
            "the bench; speed depends on the texts' lengths, not on which items they are):",
            *plan_lines,
            "",
            "| backend | method | users | requests (pairs + content-free) | tokens / request (prompt / scored) | "
            f"seconds | users/s | requests/s | {FULL_USERS} users x {CANDIDATES} | vs choose |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"users/s counts the pairs' time only; `{FULL_USERS} users` is {FULL_USERS} users' pairs at that rate plus "
            "that run's content-free requests at their own measured rate (with a base model's candidates there are "
            f"more distinct items: up to {FULL_USERS * CANDIDATES} content-free items). `vs choose` divides by the "
            f"`choose` method's ~{CHOOSE_MINUTES:.0f} min for {FULL_USERS} users x 3 candidate orders on vLLM-CPU "
            "(docs/results.md, the full-coverage run: 1,827 prompts, ~775 prompt / ~18 answer tokens, 0.59 prompts/s "
            "on the idle box with prefix caching); the rows here ran on a loaded box, so they are pessimistic against it.",
            "",
            "Same model (SmolLM2), other engines (float32 all):",
            *(_agreement(results) or ["- (one backend only)"]),
            "",
            "Why they differ: the transformers backend computes a user's history once and reuses its key/value "
            "cache for that user's continuations (`likelihood`) or question tails (`yesno`: the question ends the "
            "prompt and prompts that share the history are batched on it), and the content-free prompt once for "
            "every item; the server computes history + continuation for every request (vLLM skips its prefix cache "
            "for requests asking for prompt log-probabilities), so a `likelihood` user costs it ~10 histories and a "
            "`yesno` user ~20. Ray's HTTP stage sends the server the same requests.",
            "",
        ]
    )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
