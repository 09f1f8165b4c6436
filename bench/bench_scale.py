"""Cost curve: training and evaluation time and memory against graph size, plus a memory model.

Synthetic bipartite graphs with a long tail on both sides (seeded): user
activity is log-normal (sigma 1, at least 2 items), item popularity is Zipf
(exponent 0.8: the top item reaches a third to half of the users, as in
MovieLens), and ids are shuffled so popularity is not correlated with id.
Users = edges / 25 and items = edges / 50 at every size (mean degrees 25 and
50). The parent draws each graph once and saves its pairs; every case then
runs in its own subprocess (1 torch and OpenMP thread) that builds the
project's own model with `build_model`, an `_EpochSteps` and Adam on an
in-memory `RunData`, so the peak RSS (`resource.getrusage`) is that case's.

Why steps, not whole epochs: every step of LightGCN/LLMRec propagates the
whole graph, so a step costs O(edges) and an epoch of edges/2048 steps costs
O(edges^2); a 10^7-edge epoch is ~4,900 steps of seconds each. A case times
one warm-up step and then 3-20 steps (~5 s of them; fewer if an epoch is
shorter), and s/epoch = median step s x steps per epoch. LLMRec draws its
feature masks (and propagates the masked rows) at the warm-up step, as it
does at an epoch's first step in training, so the timed steps are ordinary ones. A size is skipped for a case
when the step time extrapolated from the previous size would push the case
past `CAP_S`, or when the memory model predicts more than `MEMORY_GB`.

Each training case also times the parts of one step (batch sampling, forward,
backward, Adam) to name the first bottleneck. Evaluation cases score all
items for every user with ground truth (`Evaluator`, train items masked) with
an untrained LightGCN's final vectors.

Run: `python -m bench scale` (writes bench/results/scale.md). Environment:
`BENCH_SCALE_EDGES` (comma list, default 1e4,1e5,1e6,1e7), `BENCH_SCALE_EVAL_USERS`
(default 1e3,1e4,1e5), `BENCH_SCALE_CAP_S` (default 150), `BENCH_SCALE_MEMORY_GB`
(default 60% of the memory available at start).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.machine import cpu_name

logger = logging.getLogger("bench.scale")

RESULTS = Path(__file__).parent / "results" / "scale.md"
USERS_PER_EDGE, ITEMS_PER_EDGE = 1 / 25, 1 / 50
ZIPF_EXPONENT, ACTIVITY_SIGMA = 0.8, 1.0
TEXT_DIM, ATTRIBUTE_DIM = 384, 384  # item text and user profiles; item attributes (the width `llmrec embed` writes)
DIM, LAYERS, BATCH = 64, 2, 2048  # the project's defaults (TrainConfig)
MIN_STEPS, MAX_STEPS, STEP_BUDGET_S = 3, 20, 5.0  # timed steps per case
CASES = [("lightgcn", "dgl"), ("lightgcn", "torch"), ("llmrec", "dgl"), ("llmrec", "torch")]
GPU_MEMORY_GB = (24, 80, 141)


def _sizes(variable: str, default: str) -> list[int]:
    return [int(float(value)) for value in os.environ.get(variable, default).split(",") if value.strip()]


EDGES = _sizes("BENCH_SCALE_EDGES", "1e4,1e5,1e6,1e7")
EVAL_USERS = _sizes("BENCH_SCALE_EVAL_USERS", "1e3,1e4,1e5")
CAP_S = float(os.environ.get("BENCH_SCALE_CAP_S", "150"))


def _available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 8.0


MEMORY_GB = float(os.environ.get("BENCH_SCALE_MEMORY_GB", f"{0.6 * _available_gb():.1f}"))


# ---------------------------------------------------------------- synthetic graphs


def long_tail_graph(n_edges: int, seed: int = 0) -> tuple[np.ndarray, int, int]:
    """About `n_edges` distinct (user, item) int64 pairs sorted by user; log-normal users, Zipf items."""
    n_users = max(int(n_edges * USERS_PER_EDGE), 10)
    n_items = max(int(n_edges * ITEMS_PER_EDGE), 10)
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, ACTIVITY_SIGMA, n_users)
    target = np.clip(np.round(activity / activity.sum() * n_edges), 2, n_items // 2).astype(np.int64)
    popularity = np.arange(1, n_items + 1, dtype=np.float64) ** -ZIPF_EXPONENT
    cumulative = np.cumsum(popularity / popularity.sum())
    item_of_rank = rng.permutation(n_items)
    keys = np.zeros(0, dtype=np.int64)
    for _ in range(30):  # redraw only what duplicates removed; the tail is wide, so this converges fast
        have = np.bincount(keys // n_items, minlength=n_users)
        missing = target - have
        if missing.sum() <= 0.001 * n_edges:
            break
        users = np.repeat(np.arange(n_users), np.maximum(missing, 0))
        ranks = np.minimum(np.searchsorted(cumulative, rng.random(len(users))), n_items - 1)
        keys = np.unique(np.concatenate([keys, users * n_items + item_of_rank[ranks]]))
    user_ids = rng.permutation(n_users)  # activity uncorrelated with id
    pairs = np.stack([user_ids[keys // n_items], keys % n_items], axis=1)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))], n_users, n_items


def _run_data(pairs: np.ndarray, n_users: int, n_items: int, with_features: bool, truth: np.ndarray | None = None):
    """An in-memory `RunData` (what `load_run_data` returns) with seeded float32 features for LLMRec."""
    import torch

    from llmrec.recommender.data import RunData

    empty = np.zeros((0, 2), dtype=np.int64)
    features, triples = {}, np.zeros((0, 3), dtype=np.int64)
    if with_features:
        generator = torch.Generator().manual_seed(0)
        features = {
            "item_text": torch.randn(n_items, TEXT_DIM, generator=generator).numpy(),
            "item_attributes": torch.randn(n_items, ATTRIBUTE_DIM, generator=generator).numpy(),
            "user_profiles": torch.randn(n_users, TEXT_DIM, generator=generator).numpy(),
        }
        # one augmented triple per user: its first item liked, a random item disliked
        first = np.unique(pairs[:, 0], return_index=True)[1]
        disliked = torch.randint(n_items, (len(first),), generator=generator).numpy()
        triples = np.stack([pairs[first, 0], pairs[first, 1], disliked], axis=1)
    interactions = {"train": pairs, "val": empty, "test": truth if truth is not None else empty}
    return RunData(Path("synthetic"), n_users, n_items, interactions, features, triples)


# ---------------------------------------------------------------- memory model


@dataclass(frozen=True)
class MemoryModel:
    """Bytes of one training process by component (float32 values, int64 indices; N x d = one "unit").

    - embeddings+Adam: (users + items) x d parameters, their gradient and Adam's two moments (4 units).
    - graph, both directions. Kept: the torch engine's two CSR matrices (int64 column + float32
      value per edge, int64 row pointers: 24 B/edge); DGL's two relation graphs with COO, CSR and
      CSC built once by `create_formats_` (int64 pairs: 96 B/edge). Building on the CPU peaks
      higher: torch copies the pairs, coalesces a COO matrix per direction and converts it
      (~100 B/edge); DGL copies the pairs before its formats (~112 B/edge).
    - pairs+sampler: `RunData.train` (16 B/edge, CPU) and the BPR sampler's sort (~48 B/edge peak).
    - features (LLMRec): 384-d item text, user profiles and item attributes, one augmented triple per user.
    - activations kept for backward: per layer one output per propagation in the torch engine and
      three in DGL (degree scaling before and after its SpMM), plus the layer stack and final
      gradients (L + 2 units). LLMRec adds per feature its projection (2 x rows x d), two
      propagations and the normalised sum (outputs + 1 units), a masked copy of each masked
      feature and the decoder's rows.

    On the CPU, glibc keeps the graph build's and the sampler's freed transients resident, and
    later tensors only partly reuse them, so the RSS model adds their peaks (`cpu_peak_bytes`); on
    a GPU the graph is built on the CPU and only the kept form moves (`gpu_bytes`).
    """

    engine: str
    model: str

    def components(self, n_edges: int, n_users: int, n_items: int) -> dict[str, float]:
        """Bytes that stay allocated through training (on the device, except the pairs and sampler)."""
        nodes = n_users + n_items
        unit = nodes * DIM * 4.0
        outputs = 3 if self.engine == "dgl" else 1
        graph = 96.0 * n_edges if self.engine == "dgl" else 2 * (12.0 * n_edges + 8 * nodes)
        parts = {
            "embeddings+Adam": 4 * unit,
            "graph": graph,
            "pairs+sampler": 32.0 * n_edges,
            "features": 0.0,
            "activations": (LAYERS * outputs + LAYERS + 2) * unit,
        }
        if self.model == "llmrec":
            rows_dims = {"item_text": (n_items, TEXT_DIM), "item_attributes": (n_items, ATTRIBUTE_DIM),
                         "user_profiles": (n_users, TEXT_DIM)}
            parts["features"] = sum(4.0 * rows * dim for rows, dim in rows_dims.values()) + 24.0 * n_users
            for name, (rows, dim) in rows_dims.items():
                parts["activations"] += 2 * rows * DIM * 4.0 + (outputs + 1) * unit
                if name != "item_text":  # masked copy, and decoded + original of the 10% masked rows
                    parts["activations"] += 4.0 * rows * dim * (1 + 2 * 0.1)
        return parts

    def cpu_peak_bytes(self, n_edges: int, n_users: int, n_items: int) -> float:
        """Peak RSS above the process baseline: the kept bytes plus the build and sampler transients."""
        parts = self.components(n_edges, n_users, n_items)
        build_extra = (112.0 - 96.0) * n_edges if self.engine == "dgl" else 100.0 * n_edges
        return sum(parts.values()) + build_extra + (48.0 - 16.0) * n_edges

    def gpu_bytes(self, n_edges: int) -> float:
        """Device bytes: all but the pairs and sampler (drawn on the CPU); the activations of a step and the
        evaluation's [2048 users x items] score batch (scores + masked copy) are never alive together."""
        n_users, n_items = _nodes(n_edges)
        parts = self.components(n_edges, n_users, n_items)
        kept = sum(parts.values()) - parts["pairs+sampler"] - parts["activations"]
        return kept + max(parts["activations"], eval_batch_bytes(n_items))

    def largest_edges(self, gpu_gb: float, reserved_gb: float = 1.0) -> int:
        """The largest graph (edges, users/items in the fixed ratios) whose device bytes fit; linear in edges."""
        per_edge = self.gpu_bytes(10**7) / 10**7  # every component is linear in edges at fixed ratios
        return int((gpu_gb - reserved_gb) * 2**30 / per_edge)


def eval_batch_bytes(n_items: int) -> float:
    return 4.0 * BATCH * n_items * 2


def _nodes(n_edges: int) -> tuple[int, int]:
    return max(int(n_edges * USERS_PER_EDGE), 10), max(int(n_edges * ITEMS_PER_EDGE), 10)


# ---------------------------------------------------------------- workers (one case per process)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_worker(pairs_path: str, n_users: str, n_items: str, model: str, engine: str) -> dict:
    """Time a few training steps of one (model, engine) on one graph, and the parts of a step."""
    import torch

    from llmrec.recommender.options import TrainConfig
    from llmrec.recommender.factory import build_model
    from llmrec.recommender.trainer import _EpochSteps

    torch.set_num_threads(1)
    pairs = np.load(pairs_path)
    data = _run_data(pairs, int(n_users), int(n_items), with_features=model == "llmrec")
    config = TrainConfig(model=model, engine=engine, device="cpu").resolve()
    torch.manual_seed(0)
    started = time.perf_counter()
    network, engine_name = build_model(config, data, torch.device("cpu"))
    runner = _EpochSteps(network, data, config, torch.device("cpu"))
    build_s = time.perf_counter() - started
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    runner._step(optimizer, generator)  # warm-up: lazy initialisation, allocator growth
    # small graphs get more timed steps (a steadier median), large ones MIN_STEPS
    steps = min(runner.batches, max(MIN_STEPS, min(MAX_STEPS, int(STEP_BUDGET_S / (time.perf_counter() - started)))))
    step_seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        runner._step(optimizer, generator)
        step_seconds.append(time.perf_counter() - started)
    # the parts of one step, each timed alone
    parts = {}
    started = time.perf_counter()
    runner.draw(generator)
    parts["sampling"] = time.perf_counter() - started
    started = time.perf_counter()
    representations = network(generator)  # masks features where the model masks
    parts["forward"] = time.perf_counter() - started
    loss = representations.users.sum() + representations.items.sum()
    if representations.reconstruction_loss is not None:
        loss = loss + representations.reconstruction_loss
    started = time.perf_counter()
    loss.backward()
    parts["backward"] = time.perf_counter() - started
    started = time.perf_counter()
    optimizer.step()
    parts["adam"] = time.perf_counter() - started
    step_s = float(np.median(step_seconds))
    return {
        "kind": "train", "model": model, "engine": engine_name, "edges": len(pairs), "users": int(n_users),
        "items": int(n_items), "steps_per_epoch": runner.batches, "steps_timed": steps, "step_s": step_s,
        "epoch_s": step_s * runner.batches, "build_s": build_s, "parts_s": parts,
        "peak_rss_mb": _rss_mb(),
    }


def eval_worker(pairs_path: str, n_users: str, n_items: str) -> dict:
    """Full-ranking evaluation of 10% held-out pairs, train pairs masked, untrained LightGCN vectors."""
    import torch

    from llmrec.evaluation import Evaluator
    from llmrec.recommender.options import TrainConfig
    from llmrec.recommender.protocol import split_matrix
    from llmrec.recommender.factory import build_model

    torch.set_num_threads(1)
    pairs = np.load(pairs_path)
    held_out = np.random.default_rng(1).random(len(pairs)) < 0.1
    data = _run_data(pairs[~held_out], int(n_users), int(n_items), with_features=False, truth=pairs[held_out])
    config = TrainConfig(model="lightgcn", device="cpu").resolve()
    torch.manual_seed(0)
    network, engine_name = build_model(config, data, torch.device("cpu"))
    evaluator = Evaluator(split_matrix(data, "test"), split_matrix(data, "train"), batch_size=config.eval_batch_size)
    started = time.perf_counter()
    scorer = network.scorer()
    propagate_s = time.perf_counter() - started
    metrics = evaluator.evaluate(scorer)
    eval_s = time.perf_counter() - started
    return {
        "kind": "eval", "engine": engine_name, "edges": int((~held_out).sum()), "users": int(n_users),
        "items": int(n_items), "users_evaluated": int(metrics["n_users_evaluated"]), "eval_s": eval_s,
        "propagate_s": propagate_s, "peak_rss_mb": _rss_mb(),
    }


def _run_worker(*args: str) -> dict | str:
    """The worker's JSON result, or why it failed (one line), so that one failed case keeps the others."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.bench_scale", "--worker", *args],
        capture_output=True, text=True, cwd=Path(__file__).parents[1],
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # DGL's own OpenMP pool too
    )
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        return f"failed with exit status {completed.returncode} ({last[:200]})"
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- driver and report


def _exponent(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.2f}"


def growth_exponent(xs: list[float], ys: list[float]) -> float:
    """Slope of the log-log least-squares line: y ~ x^slope."""
    if len(xs) < 2:
        return float("nan")
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def _bottleneck(row: dict) -> str:
    parts = row["parts_s"]
    name = max(parts, key=parts.get)
    share = parts[name] / sum(parts.values())
    what = {"forward": "forward propagation (SpMM over all edges)", "backward": "backward propagation (SpMM)",
            "adam": "Adam over all embeddings", "sampling": "BPR sampling"}[name]
    return f"{what} {share:.0%}"


def _measure_training(graphs: dict[int, tuple[Path, int, int]]) -> tuple[list[dict], list[str]]:
    rows, skipped = [], []
    for model, engine in CASES:
        previous: dict | None = None
        memory = MemoryModel(engine, model)
        for target in EDGES:
            path, n_users, n_items = graphs[target]
            predicted_gb = memory.cpu_peak_bytes(target, n_users, n_items) / 2**30
            if predicted_gb > MEMORY_GB:
                skipped.append(f"{model}/{engine} at {target:.0e} edges: the memory model predicts "
                               f"{predicted_gb:.1f} GB > the {MEMORY_GB:.1f} GB allowed")
                break
            if previous is not None:
                growth = target / previous["edges"]  # a step is linear in edges, an epoch quadratic
                projected = previous["step_s"] * growth * (MIN_STEPS + 2)
                if projected > CAP_S:
                    epoch = previous["step_s"] * growth**2 * previous["steps_per_epoch"]
                    skipped.append(f"{model}/{engine} at {target:.0e} edges: ~{projected:.0f} s projected "
                                   f"for {MIN_STEPS + 2} steps > cap {CAP_S:.0f} s (an epoch would take ~{epoch:.0f} s)")
                    break
            row = _run_worker("train", str(path), str(n_users), str(n_items), model, engine)
            logger.info("%s", row)
            if isinstance(row, str):
                skipped.append(f"{model}/{engine} at {target:.0e} edges: {row}")
                break
            rows.append(row)
            previous = row
    return rows, skipped


def _measure_evaluation(tmp: Path) -> tuple[list[dict], list[str]]:
    rows, failed = [], []
    for n_users in EVAL_USERS:
        pairs, users, items = long_tail_graph(int(n_users / USERS_PER_EDGE), seed=1)
        path = tmp / f"eval-{n_users}.npy"
        np.save(path, pairs)
        del pairs
        row = _run_worker("eval", str(path), str(users), str(items))
        logger.info("%s", row)
        if isinstance(row, str):
            failed.append(f"evaluation of {n_users:,} users: {row}")
            break
        rows.append(row)
    return rows, failed


def _case_rows(rows: list[dict], model: str, engine: str) -> list[dict]:
    return sorted((row for row in rows if row["model"] == model and row["engine"] == engine), key=lambda r: r["edges"])


def _report(train_rows: list[dict], skipped: list[str], eval_rows: list[dict], load: tuple[float, float],
            seconds: float) -> list[str]:
    lines = [
        "# Cost curve: time and memory against graph size (synthetic long-tail graphs, CPU)",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, 1 torch/OpenMP thread "
        f"per case; load average before/after {load[0]:.1f}/{load[1]:.1f} (the box is shared with other work, "
        f"which inflates times); whole run {seconds / 60:.1f} min.",
        f"Graphs: users = edges/25 (log-normal activity, sigma {ACTIVITY_SIGMA}), items = edges/50 (Zipf "
        f"popularity, exponent {ZIPF_EXPONENT}), seeded; d {DIM}, {LAYERS} layers, batch {BATCH}, Adam. LLMRec "
        f"adds {TEXT_DIM}-d item text and user profiles, {ATTRIBUTE_DIM}-d item attributes, one augmented "
        "triple per user.",
        f"Each case in its own process: one warm-up step, then {MIN_STEPS}-{MAX_STEPS} timed steps "
        f"(~{STEP_BUDGET_S:.0f} s); **s/epoch = median "
        "step s x steps per epoch** (every step propagates the whole graph, so an epoch grows with edges^2 at "
        "a fixed batch size; whole epochs were not run). Peak RSS from `resource.getrusage`.",
        "",
        "## Training",
        "",
        "| model | engine | edges | users | items | s/step | steps/epoch | s/epoch | build s | peak RSS MB "
        "| first bottleneck (share of a step) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in train_rows:
        lines.append(
            f"| {row['model']} | {row['engine']} | {row['edges']:,} | {row['users']:,} | {row['items']:,} | "
            f"{row['step_s']:.4f} | {row['steps_per_epoch']:,} | {row['epoch_s']:.2f} | {row['build_s']:.2f} | "
            f"{row['peak_rss_mb']:.0f} | {_bottleneck(row)} |"
        )
    if skipped:
        lines += ["", "Stopped (not run, or failed):", *(f"- {line}" for line in skipped)]
    lines += ["", "Growth exponents (log-log least squares over the sizes run; 1 = linear in edges):", "",
              "| model | engine | s/step | s/step, two largest sizes | s/epoch | s/epoch, two largest sizes "
              "| peak RSS above the smallest case's |", "|---|---|---|---|---|---|---|"]
    for model, engine in CASES:
        case = _case_rows(train_rows, model, engine)
        if not case:
            continue
        edges = [row["edges"] for row in case]
        step, epoch = [r["step_s"] for r in case], [r["epoch_s"] for r in case]
        above = [max(row["peak_rss_mb"] - case[0]["peak_rss_mb"], 1.0) for row in case[1:]]
        lines.append(
            f"| {model} | {engine} | {_exponent(growth_exponent(edges, step))} | "
            f"{_exponent(growth_exponent(edges[-2:], step[-2:]))} | {_exponent(growth_exponent(edges, epoch))} | "
            f"{_exponent(growth_exponent(edges[-2:], epoch[-2:]))} | {_exponent(growth_exponent(edges[1:], above))} |"
        )
    lines += [
        "",
        "## Evaluation (full ranking, `Evaluator`, train items masked, 10% of each graph held out)",
        "",
        "| users | items | train edges | users evaluated | propagation s | eval s (incl. propagation) | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in eval_rows:
        lines.append(f"| {row['users']:,} | {row['items']:,} | {row['edges']:,} | {row['users_evaluated']:,} | "
                     f"{row['propagate_s']:.3f} | {row['eval_s']:.2f} | {row['peak_rss_mb']:.0f} |")
    if eval_rows:
        exponent = growth_exponent([r["users"] for r in eval_rows], [r["eval_s"] for r in eval_rows])
        lines += ["", f"Growth exponent of eval s in users: {_exponent(exponent)} (items grow with users here, so "
                  "users x items cells grow as users^2)."]
    lines += _memory_section(train_rows)
    return lines


def _memory_section(train_rows: list[dict]) -> list[str]:
    lines = [
        "",
        "## Memory model",
        "",
        "Bytes per component (`MemoryModel` in bench/bench_scale.py, its docstring says why each): embeddings + "
        "gradient + Adam's two moments (4 x nodes x d x 4 B); graph kept in both directions (torch CSR: 24 B/edge; "
        "DGL COO+CSR+CSC: 96 B/edge) and, on the CPU, its build transients (torch ~100 B/edge, DGL ~16); training "
        "pairs + BPR sampler (16 + 48 B/edge peak); LLMRec features; activations per layer kept for backward. "
        "Checked against each measured peak RSS: prediction = the "
        "smallest case's measured peak (the process baseline: interpreter, torch, DGL, allocator) + the model's "
        "growth in bytes from that size.",
        "",
        "| model | engine | edges | predicted MB | measured peak MB | error | error of the growth |",
        "|---|---|---|---|---|---|---|",
    ]
    errors = []
    for model, engine in CASES:
        case = _case_rows(train_rows, model, engine)
        memory = MemoryModel(engine, model)
        model_mb = [memory.cpu_peak_bytes(r["edges"], r["users"], r["items"]) / 2**20 for r in case]
        for row, bytes_mb in list(zip(case, model_mb))[1:]:
            growth = bytes_mb - model_mb[0]
            measured_growth = row["peak_rss_mb"] - case[0]["peak_rss_mb"]
            predicted = case[0]["peak_rss_mb"] + growth
            error_growth = (growth - measured_growth) / measured_growth if measured_growth > 0 else float("nan")
            if row["edges"] >= 0.9 * 10**6:  # the drawn graphs fall a little short of their target
                errors.append(error_growth)
            lines.append(f"| {model} | {engine} | {row['edges']:,} | {predicted:.0f} | {row['peak_rss_mb']:.0f} | "
                         f"{(predicted - row['peak_rss_mb']) / row['peak_rss_mb']:+.0%} | {error_growth:+.0%} |")
    if errors:
        lines += ["", f"At >= 10^6 edges the predicted growth is off by {min(errors):+.0%} to {max(errors):+.0%} "
                  "(negative = under-predicted; where positive, the GPU sizes below are conservative)."]
    lines += [
        "",
        "Largest graph that fits a GPU (users/items in the ratios above; device memory = everything but the "
        "training pairs and sampler, which stay on the CPU; a step's activations or one 2,048-user evaluation "
        "score batch, whichever is larger; 1 GB reserved for the CUDA context and allocator). DGL has no CUDA "
        "build for the torch that GPU boxes get, so `--engine auto` uses the torch engine there. Largest first "
        "bottleneck on the device (share of the bytes at that size):",
        "",
        "| model | engine | bytes/edge | " + " | ".join(f"{gb} GB" for gb in GPU_MEMORY_GB) + " | largest part |",
        "|---|---|---|" + "---|" * len(GPU_MEMORY_GB) + "---|",
    ]
    for model, engine in CASES:
        memory = MemoryModel(engine, model)
        per_edge = memory.gpu_bytes(10**7) / 10**7
        fits = " | ".join(f"{memory.largest_edges(gb) / 1e6:,.0f}M edges" for gb in GPU_MEMORY_GB)
        n_users, n_items = _nodes(10**7)
        parts = memory.components(10**7, n_users, n_items)
        parts.pop("pairs+sampler")
        if eval_batch_bytes(n_items) > parts["activations"]:  # the larger of the two is the peak transient
            parts["evaluation score batch"] = eval_batch_bytes(n_items)
            parts.pop("activations")
        largest = max(parts, key=parts.get)
        lines.append(f"| {model} | {engine} | {per_edge:.0f} | {fits} | {largest} "
                     f"{parts[largest] / memory.gpu_bytes(10**7):.0%} |")
    return lines


def main() -> None:
    """Draw the graphs, run every case in its own process, write the table and the memory model."""
    started = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="llmrec-bench-scale-") as tmp:
        graphs = {}
        for target in EDGES:
            pairs, n_users, n_items = long_tail_graph(target)
            graphs[target] = (Path(tmp) / f"train-{target}.npy", n_users, n_items)
            np.save(graphs[target][0], pairs)
            logger.info("graph %.0e: %d edges, %d users, %d items, max item degree %d", target, len(pairs),
                        n_users, n_items, np.bincount(pairs[:, 1]).max())
            del pairs
        train_rows, skipped = _measure_training(graphs)
        eval_rows, failed = _measure_evaluation(Path(tmp))
        skipped += failed
    load_after = os.getloadavg()
    lines = _report(train_rows, skipped, eval_rows, (load_before[0], load_after[0]), time.perf_counter() - started)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    temporary = RESULTS.with_suffix(".md.tmp")
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    temporary.replace(RESULTS)
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker = {"train": train_worker, "eval": eval_worker}[sys.argv[2]]
        print(json.dumps(worker(*sys.argv[3:])))
    else:
        logging.basicConfig(level=logging.INFO)
        main()
