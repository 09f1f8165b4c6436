"""RecBole 1.2.1's LightGCN timed on the project's split: the peer row of `python -m bench train --peer recbole`.

Runs under `.venv-recbole/bin/python` (built by `scripts/setup-recbole`), never
under the project's venv: it imports RecBole and its own torch only, no
llmrec. `bench/bench_train.py` writes the project's split as RecBole atomic
files (`<name>.train.inter`, `.valid.inter`, `.test.inter`) and starts this
script in a subprocess with cwd in a temporary folder, because RecBole writes
`log_tensorboard/` and checkpoints under its working directory.

Settings follow the project's LightGCN defaults (2 layers, d 64, batch 2048,
lr 5e-3, one thread) and the measured recipe in the environment notes: full
ranking grouped by user, one uniform negative per positive, and an
`eval_batch_size` of users x items cells (its unit), so that a whole
validation pass is one batch as in the project's batched evaluator. Prints one
JSON line: median s/epoch of `EPOCHS` epochs after one warm-up epoch, the
fastest epoch, validation eval s and peak RSS.

Usage: `python bench/recbole_peer.py DATA_PATH DATASET EPOCHS`.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time


def main(data_path: str, dataset_name: str, epochs: int) -> None:
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender import LightGCN
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    config = Config(model="LightGCN", dataset=dataset_name, config_dict={
        "data_path": data_path,
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
        "load_col": {"inter": ["user_id", "item_id"]},
        "benchmark_filename": ["train", "valid", "test"],
        "eval_args": {"mode": "full", "group_by": "user", "order": "RO"},
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1},
        "embedding_size": 64, "n_layers": 2, "train_batch_size": 2048, "learning_rate": 5e-3,
        "eval_batch_size": 10**9,  # cells (users x items); the default scores one user per batch
        "metrics": ["Recall", "NDCG"], "topk": [20], "valid_metric": "recall@20",
        "use_gpu": False, "device": "cpu", "seed": 0, "reproducibility": True, "show_progress": False,
        "checkpoint_dir": os.path.join(os.getcwd(), "saved"), "worker": 0,
    })
    torch.set_num_threads(1)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    model = LightGCN(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    epoch_seconds, loss = [], float("nan")
    for epoch in range(epochs + 1):  # epoch 0 is the warm-up
        started = time.perf_counter()
        loss = trainer._train_epoch(train_data, epoch, show_progress=False)
        if epoch:
            epoch_seconds.append(time.perf_counter() - started)
    started = time.perf_counter()
    metrics = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    eval_s = time.perf_counter() - started
    print(json.dumps({
        "model": "lightgcn", "engine": "recbole", "steps_per_epoch": len(train_data),
        "epoch_s_median": statistics.median(epoch_seconds), "epoch_s_min": min(epoch_seconds),
        "eval_s": eval_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "python_peak_mb": None, "final_loss": float(loss if not isinstance(loss, tuple) else sum(loss)),
        "threads": torch.get_num_threads(), "valid_recall@20": float(metrics["recall@20"]),
        "users": dataset.user_num, "items": dataset.item_num,
    }))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: recbole_peer.py DATA_PATH DATASET EPOCHS")
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
