"""Training speed and memory of the two graph engines (DGL, torch sparse) on ml-latest-small, CPU.

For each engine and model (LightGCN; LLMRec with 384-d item-text, user-profile
and item-attribute features, the width `llmrec embed` writes with the bundled
all-MiniLM-L6-v2, and one augmented triple per user)
a fresh subprocess trains one warm-up epoch and then `EPOCHS` timed epochs,
with the same seed and batches. Each runs in its own process so the peak RSS
(`resource.getrusage`, which covers torch's and DGL's C++ allocations) belongs
to that engine alone; `tracemalloc` adds the Python-heap peak of the timed
epochs. Torch and DGL's OpenMP pool run on THREADS threads (env
`BENCH_TRAIN_THREADS`, default 1):
on this shared 2-core box, two threads contending with other work made an
epoch ~25x slower than one thread (40 s vs 1.5 s for LightGCN), which would
measure the contention, not the engines. The load average is printed too.

With `--peer recbole`, RecBole 1.2.1's LightGCN (same layers, d, batch, lr and
thread count) joins the rounds as one more case: `bench/recbole_peer.py` runs
under `.venv-recbole` (built by `scripts/setup-recbole`, never a project
dependency) on the same split, written as RecBole atomic files. Every case also
times one full-ranking pass over the validation split (eval s), and this
project's cases time the parts of a step (draw, forward, loss, backward,
update) for two more epochs of steps: where LLMRec's extra time goes.

Run: `python -m bench train [--peer recbole]` (writes bench/results/train.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bench.machine import cpu_name

if TYPE_CHECKING:
    import torch

    from llmrec.recommender.trainer import _EpochSteps

RESULTS = Path(__file__).parent / "results" / "train.md"
EPOCHS = 5
PHASE_STEPS = 38  # two epochs of ml-latest-small at batch 2048, timed part by part after the timed epochs
PHASES = ("draw", "forward", "loss", "backward", "update")
ROUNDS = int(os.environ.get("BENCH_TRAIN_ROUNDS", "3"))
THREADS = int(os.environ.get("BENCH_TRAIN_THREADS", "1"))
CASES = [("lightgcn", "dgl"), ("lightgcn", "torch"), ("llmrec", "dgl"), ("llmrec", "torch")]
ROOT = Path(__file__).parents[1]
RECBOLE_PYTHON = ROOT / ".venv-recbole" / "bin" / "python"
RECBOLE_STAMP = ROOT / ".venv-recbole" / ".llmrec-setup"
RECBOLE_DATASET = "llmrec"
RECBOLE_SPLITS = {"train": "train", "val": "valid", "test": "test"}  # project split -> RecBole file suffix


def prepare_run(run_dir: Path) -> Path:
    """ml-latest-small prepared by `llmrec data prepare`, plus seeded side inputs of real sizes."""
    from llmrec.data.prepare import PrepareConfig, prepare_run as prepare

    prepare(run_dir, PrepareConfig())
    n_items = len(pd.read_parquet(run_dir / "items.parquet"))
    n_users = len(pd.read_parquet(run_dir / "users.parquet"))
    train = pd.read_parquet(run_dir / "train.parquet")
    rng = np.random.default_rng(0)
    (run_dir / "embeddings").mkdir(exist_ok=True)
    np.save(run_dir / "embeddings" / "item_text.npy", rng.standard_normal((n_items, 384)).astype(np.float32))
    np.save(run_dir / "embeddings" / "item_attributes.npy", rng.standard_normal((n_items, 384)).astype(np.float32))
    np.save(run_dir / "embeddings" / "user_profiles.npy", rng.standard_normal((n_users, 384)).astype(np.float32))
    first = train.groupby("user")["item"].first()
    pd.DataFrame({"user": first.index.astype(np.int64), "liked": first.to_numpy(np.int64),
                  "disliked": rng.integers(n_items, size=len(first)).astype(np.int64)}
                 ).to_parquet(run_dir / "augmented_edges.parquet", index=False)
    return run_dir


def write_recbole_atomic_files(run_dir: Path, data_path: Path) -> Path:
    """The run's own split as RecBole atomic files (`<dataset>.train.inter`, ...); returns `data_path`."""
    folder = data_path / RECBOLE_DATASET
    folder.mkdir(parents=True, exist_ok=True)
    for split, suffix in RECBOLE_SPLITS.items():
        frame = pd.read_parquet(run_dir / f"{split}.parquet", columns=["user", "item"])
        frame.columns = ["user_id:token", "item_id:token"]
        frame.to_csv(folder / f"{RECBOLE_DATASET}.{suffix}.inter", sep="\t", index=False)
    return data_path


def worker(run_dir: str, model: str, engine: str) -> None:
    """Time EPOCHS epochs of one (model, engine) and print a JSON line."""
    import torch

    from llmrec.recommender.data import load_run_data
    from llmrec.recommender.options import TrainConfig
    from llmrec.recommender.protocol import build_evaluators
    from llmrec.recommender.factory import build_model
    from llmrec.recommender.trainer import _EpochSteps

    torch.set_num_threads(THREADS)
    data = load_run_data(run_dir)
    config = TrainConfig(model=model, engine=engine, device="cpu").resolve()
    torch.manual_seed(0)
    network, engine_name = build_model(config, data, torch.device("cpu"))
    runner = _EpochSteps(network, data, config, torch.device("cpu"))
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(0)
    runner.run(optimizer, generator)  # warm-up: lazy initialisation, allocator growth
    tracemalloc.start()
    epoch_seconds = []
    for _ in range(EPOCHS):
        started = time.perf_counter()
        losses = runner.run(optimizer, generator)
        epoch_seconds.append(time.perf_counter() - started)
    _, python_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    phases = _phase_milliseconds(runner, optimizer, generator)
    selection = build_evaluators(data, "standard", "cpu", config.eval_batch_size, with_test=False).selection
    started = time.perf_counter()
    selection.evaluate(network.scorer())
    eval_seconds = time.perf_counter() - started
    print(json.dumps({
        "model": model, "engine": engine_name, "steps_per_epoch": runner.batches,
        "epoch_s_median": float(np.median(epoch_seconds)), "epoch_s_min": float(min(epoch_seconds)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "eval_s": eval_seconds, "python_peak_mb": python_peak / 2**20, "final_loss": losses["loss"],
        "threads": torch.get_num_threads(), "phase_ms": phases,
    }))


def _phase_milliseconds(runner: _EpochSteps, optimizer: torch.optim.Optimizer, generator: torch.Generator
                        ) -> dict[str, float]:
    """Mean ms per step of each part of the trainer's step (`_EpochSteps._step` taken apart: its draw, forward, loss,
    backward and `update`).

    The epoch times say how much slower one model is; this says where: the
    batch draw, the model's forward pass (propagation, features, masks), the
    loss on the batch, the backward pass, and clipping plus the optimizer step.
    Masks are redrawn every `runner.batches` steps, as in an epoch.
    """
    model, totals = runner.model, dict.fromkeys(PHASES, 0.0)
    for step in range(PHASE_STEPS):
        if step % runner.batches == 0:
            model.start_epoch()
        started = time.perf_counter()
        batch = runner.draw(generator)
        drawn = time.perf_counter()
        representations = model(generator)
        forward = time.perf_counter()
        loss = model.batch_loss(representations, batch)
        lossed = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        backward = time.perf_counter()
        runner.update(optimizer)
        updated = time.perf_counter()
        for phase, seconds in zip(PHASES, (drawn - started, forward - drawn, lossed - forward, backward - lossed,
                                           updated - backward)):
            totals[phase] += seconds
    return {phase: 1e3 * seconds / PHASE_STEPS for phase, seconds in totals.items()}


def _run_peer(recbole_data: Path) -> dict:
    """RecBole's LightGCN in its own venv; cwd in a temporary folder (it writes logs and checkpoints there)."""
    with tempfile.TemporaryDirectory(prefix="llmrec-bench-recbole-") as cwd:
        output = subprocess.run(
            [str(RECBOLE_PYTHON), str(ROOT / "bench" / "recbole_peer.py"), str(recbole_data), RECBOLE_DATASET,
             str(EPOCHS)],
            check=True, capture_output=True, text=True, cwd=cwd,
            env={**os.environ, "OMP_NUM_THREADS": str(THREADS), "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
        ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _run_case(run_dir: Path, model: str, engine: str) -> dict:
    if engine == "recbole":
        return _run_peer(run_dir.parent / "recbole")
    output = subprocess.run(
        [sys.executable, "-m", "bench.bench_train", "--worker", str(run_dir), model, engine],
        check=True, capture_output=True, text=True, cwd=Path(__file__).parents[1],
        env={**os.environ, "OMP_NUM_THREADS": str(THREADS)},  # DGL's own OpenMP pool too
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench train", description="training speed of the engines")
    parser.add_argument("--peer", choices=["recbole"], help="add RecBole's LightGCN from .venv-recbole")
    return parser.parse_args(argv or [])


def _ratio_rows(by_case: dict[tuple[str, str], list[dict]], seconds: dict[tuple[str, str], float]) -> list[str]:
    """Table rows of the engine, model and peer ratios: of the lowest medians, and per round (median, range)."""
    pairs = [((model, "dgl"), (model, "torch")) for model in ("lightgcn", "llmrec")]
    pairs += [(("llmrec", engine), ("lightgcn", engine)) for engine in ("dgl", "torch")]
    pairs += [(("lightgcn", engine), ("lightgcn", "recbole")) for engine in ("dgl", "torch")]
    rows = []
    for numerator, denominator in pairs:
        if numerator in seconds and denominator in seconds:
            per_round = sorted(top["epoch_s_median"] / bottom["epoch_s_median"]
                               for top, bottom in zip(by_case[numerator], by_case[denominator], strict=True))
            label = (f"{numerator[0]}: {numerator[1]} / {denominator[1]}" if numerator[0] == denominator[0]
                     else f"{numerator[1]}: {numerator[0]} / {denominator[0]}")
            rows.append(f"| {label} | {seconds[numerator] / seconds[denominator]:.2f}x | "
                        f"{float(np.median(per_round)):.2f}x ({per_round[0]:.2f}-{per_round[-1]:.2f}) |")
    return rows


def _phase_rows(rows: list[dict]) -> list[str]:
    """The step-phase table of the cases that report phases (this project's engines; RecBole does not)."""
    timed = [row for row in rows if row.get("phase_ms")]
    if not timed:
        return []
    lines = ["", f"Where a step goes: ms per step of each part of the trainer's step, mean over {PHASE_STEPS} steps "
             "timed part by part after the timed epochs, in the process of the lowest epoch median above "
             "(update = gradient clipping + the optimizer step).", "",
             "| model | engine | " + " | ".join(PHASES) + " | total |", "|---|---|" + "---|" * (len(PHASES) + 1)]
    for row in timed:
        phases = row["phase_ms"]
        lines.append(f"| {row['model']} | {row['engine']} | " + " | ".join(f"{phases[p]:.2f}" for p in PHASES)
                     + f" | {sum(phases.values()):.2f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    """Every case ROUNDS times, in alternating order, so a change in the machine's load hits all cases alike."""
    peer = _parse(argv).peer
    if peer == "recbole" and not RECBOLE_STAMP.is_file():  # written last by the setup script
        raise SystemExit(f"--peer recbole: {RECBOLE_STAMP.parent} is absent or incomplete; run scripts/setup-recbole")
    cases = CASES + [("lightgcn", "recbole")] if peer == "recbole" else CASES
    with tempfile.TemporaryDirectory(prefix="llmrec-bench-train-") as tmp:
        run_dir = prepare_run(Path(tmp) / "run")
        if peer == "recbole":
            write_recbole_atomic_files(run_dir, Path(tmp) / "recbole")
        load_before = os.getloadavg()
        by_case: dict[tuple[str, str], list[dict]] = {case: [] for case in cases}
        for round_index in range(ROUNDS):
            for case in cases if round_index % 2 == 0 else cases[::-1]:
                by_case[case].append(_run_case(run_dir, *case))
                print(by_case[case][-1])
        load_after = os.getloadavg()
    rows = []
    for runs in by_case.values():
        best = min(runs, key=lambda run: run["epoch_s_median"])
        rows.append({**best, "epoch_s_min": min(run["epoch_s_min"] for run in runs),
                     "peak_rss_mb": max(run["peak_rss_mb"] for run in runs)})
    seconds = {(row["model"], row["engine"]): row["epoch_s_median"] for row in rows}
    lines = [
        "# Training: DGL vs torch sparse engine (ml-latest-small, CPU)",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch threads "
        f"{rows[0]['threads']}; load average before/after {load_before[0]:.1f}/{load_after[0]:.1f} "
        "(the box is shared: other work inflates times).",
        f"Default options (batch 2048, d 64, 2 layers); each case ran {ROUNDS} times in its own process "
        f"(alternating order); epoch s = the lowest per-process median of {EPOCHS} epochs after one warm-up "
        "epoch; min = the fastest epoch seen.",
        "",
        "| model | engine | steps/epoch | epoch s (median) | epoch s (min) | eval s | peak RSS MB "
        "| Python heap peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        heap = "-" if row["python_peak_mb"] is None else f"{row['python_peak_mb']:.1f}"
        lines.append(
            f"| {row['model']} | {row['engine']} | {row['steps_per_epoch']} | {row['epoch_s_median']:.3f} | "
            f"{row['epoch_s_min']:.3f} | {row['eval_s']:.3f} | {row['peak_rss_mb']:.0f} | {heap} |"
        )
    if peer == "recbole":
        lines += ["", "recbole = RecBole 1.2.1 LightGCN (torch 2.13.0 cpu, .venv-recbole) on the same split written "
                  "as atomic files: 2 layers, d 64, batch 2048, lr 5e-3, one uniform negative, full-ranking "
                  "validation in one batch; its epoch includes its own negative sampling and data loading. "
                  "Its users/items include a padding id 0. Python heap: not measured there."]
    lines += ["", "Ratios: of the lowest medians above, and the same ratio within each round (the two cases ran "
              "minutes apart, so a drift in the machine's speed between rounds cancels): its median and range.",
              "", "| ratio | lowest medians | per round: median (min-max) |", "|---|---|---|"]
    lines += _ratio_rows(by_case, seconds)
    lines += _phase_rows(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:])
    else:
        main(sys.argv[1:])
