"""The benchmark harness's own behaviour (no timings: those live in bench/results/)."""

from __future__ import annotations

import numpy as np
import pytest

import bench.__main__ as bench_cli
import bench.bench_train as bench_train
from bench.bench_scale import MemoryModel, long_tail_graph


def test_long_tail_graph_is_distinct_seeded_in_range_and_long_tailed() -> None:
    pairs, n_users, n_items = long_tail_graph(100_000, seed=3)
    assert len(pairs) > 0.99 * 100_000
    assert pairs.min() >= 0 and pairs[:, 0].max() < n_users and pairs[:, 1].max() < n_items
    assert len(np.unique(pairs[:, 0] * n_items + pairs[:, 1])) == len(pairs)
    user_degree = np.bincount(pairs[:, 0], minlength=n_users)
    item_degree = np.bincount(pairs[:, 1], minlength=n_items)
    assert user_degree.min() >= 2
    # long tails: the most active user and the most popular item lie far above the median
    assert user_degree.max() > 10 * np.median(user_degree)
    assert item_degree.max() > 50 * np.median(item_degree)
    again, _, _ = long_tail_graph(100_000, seed=3)
    assert np.array_equal(pairs, again)


def test_memory_model_grows_linearly_and_fits_more_edges_in_more_memory() -> None:
    for engine in ("dgl", "torch"):
        memory = MemoryModel(engine, "llmrec")
        assert memory.gpu_bytes(2 * 10**7) == pytest.approx(2 * memory.gpu_bytes(10**7), rel=0.01)
        assert 0 < memory.largest_edges(24) < memory.largest_edges(80) < memory.largest_edges(141)
        assert memory.gpu_bytes(memory.largest_edges(24)) <= 23 * 2**30
    # features and their branches make LLMRec need more memory than LightGCN on the same graph
    assert MemoryModel("torch", "llmrec").gpu_bytes(10**7) > MemoryModel("torch", "lightgcn").gpu_bytes(10**7)


def test_peer_recbole_without_its_venv_fails_with_one_line_before_any_work(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bench_train, "RECBOLE_STAMP", tmp_path / ".venv-recbole" / ".llmrec-setup")
    monkeypatch.setattr(bench_train, "prepare_run", lambda run_dir: pytest.fail("prepared data without a peer venv"))
    with pytest.raises(SystemExit) as raised:
        bench_train.main(["--peer", "recbole"])
    message = str(raised.value.code)
    assert "\n" not in message and "scripts/setup-recbole" in message


def test_bench_options_need_exactly_one_benchmark(caplog) -> None:
    # names that do not exist, so that a broken check cannot start a real benchmark
    assert bench_cli.main(["no_such_a", "no_such_b", "--peer", "recbole"]) == 2
    assert "exactly one benchmark" in caplog.text
    assert bench_cli.main(["no_such_benchmark"]) == 2


def test_per_round_ratios_pair_the_runs_of_the_same_round() -> None:
    """A machine twice as slow in round 2 leaves each round's ratio at 2x; the lowest medians mix the rounds."""
    by_case = {
        ("lightgcn", "torch"): [{"epoch_s_median": 0.3}, {"epoch_s_median": 0.6}],
        ("llmrec", "torch"): [{"epoch_s_median": 0.6}, {"epoch_s_median": 1.2}],
        ("lightgcn", "dgl"): [{"epoch_s_median": 0.5}, {"epoch_s_median": 0.3}],
    }
    seconds = {case: min(run["epoch_s_median"] for run in runs) for case, runs in by_case.items()}
    rows = bench_train._ratio_rows(by_case, seconds)
    assert rows == ["| lightgcn: dgl / torch | 1.00x | 1.08x (0.50-1.67) |",
                    "| torch: llmrec / lightgcn | 2.00x | 2.00x (2.00-2.00) |"]
