"""Training speed and memory of the two graph engines (DGL, torch sparse) on ml-latest-small, CPU.

For each engine and model (LightGCN; LLMRec with 384-d item-text and
user-profile features, 32-d item attributes and one augmented triple per user)
a fresh subprocess trains one warm-up epoch and then `EPOCHS` timed epochs,
with the same seed and batches. Each runs in its own process so the peak RSS
(`resource.getrusage`, which covers torch's and DGL's C++ allocations) belongs
to that engine alone; `tracemalloc` adds the Python-heap peak of the timed
epochs. Torch and DGL's OpenMP pool run on THREADS threads (env
`BENCH_TRAIN_THREADS`, default 1):
on this shared 2-core box, two threads contending with other work made an
epoch ~25x slower than one thread (40 s vs 1.5 s for LightGCN), which would
measure the contention, not the engines. The load average is printed too.

Run: `python -m bench train` (writes bench/results/train.md).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results" / "train.md"
EPOCHS = 5
THREADS = int(os.environ.get("BENCH_TRAIN_THREADS", "1"))
CASES = [("lightgcn", "dgl"), ("lightgcn", "torch"), ("llmrec", "dgl"), ("llmrec", "torch")]


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
    np.save(run_dir / "embeddings" / "item_attributes.npy", rng.standard_normal((n_items, 32)).astype(np.float32))
    np.save(run_dir / "embeddings" / "user_profiles.npy", rng.standard_normal((n_users, 384)).astype(np.float32))
    first = train.groupby("user")["item"].first()
    pd.DataFrame({"user": first.index.astype(np.int64), "liked": first.to_numpy(np.int64),
                  "disliked": rng.integers(n_items, size=len(first)).astype(np.int64)}
                 ).to_parquet(run_dir / "augmented_edges.parquet", index=False)
    return run_dir


def worker(run_dir: str, model: str, engine: str) -> None:
    """Time EPOCHS epochs of one (model, engine) and print a JSON line."""
    import torch

    from llmrec.recommender.data import load_run_data
    from llmrec.recommender.options import TrainConfig
    from llmrec.recommender.trainer import _EpochRunner, build_model

    torch.set_num_threads(THREADS)
    data = load_run_data(run_dir)
    config = TrainConfig(model=model, engine=engine, device="cpu").resolve()
    torch.manual_seed(0)
    network, engine_name = build_model(config, data, torch.device("cpu"))
    runner = _EpochRunner(network, data, config, torch.device("cpu"))
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
    print(json.dumps({
        "model": model, "engine": engine_name, "steps_per_epoch": runner.batches,
        "epoch_s_median": float(np.median(epoch_seconds)), "epoch_s_min": float(min(epoch_seconds)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "python_peak_mb": python_peak / 2**20, "final_loss": losses["loss"], "threads": torch.get_num_threads(),
    }))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="llmrec-bench-train-") as tmp:
        run_dir = prepare_run(Path(tmp) / "run")
        load_before = os.getloadavg()
        rows = []
        for model, engine in CASES:
            output = subprocess.run(
                [sys.executable, "-m", "bench.bench_train", "--worker", str(run_dir), model, engine],
                check=True, capture_output=True, text=True, cwd=Path(__file__).parents[1],
                env={**os.environ, "OMP_NUM_THREADS": str(THREADS)},  # DGL's own OpenMP pool too
            ).stdout
            rows.append(json.loads(output.strip().splitlines()[-1]))
            print(rows[-1])
        load_after = os.getloadavg()
    lines = [
        "# Training: DGL vs torch sparse engine (ml-latest-small, CPU)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{rows[0]['threads']}; load average before/after {load_before[0]:.1f}/{load_after[0]:.1f} "
        "(the box is shared: other work inflates times).",
        f"Default options (batch 2048, d 64, 2 layers); median of {EPOCHS} epochs after one warm-up epoch; "
        "each row in its own process.",
        "",
        "| model | engine | steps/epoch | epoch s (median) | epoch s (min) | peak RSS MB | Python heap peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['engine']} | {row['steps_per_epoch']} | {row['epoch_s_median']:.3f} | "
            f"{row['epoch_s_min']:.3f} | {row['peak_rss_mb']:.0f} | {row['python_peak_mb']:.1f} |"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:])
    else:
        main()
