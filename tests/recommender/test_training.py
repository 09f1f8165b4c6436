"""Real training on ml-latest-small: it learns, it never peeks at test, it resumes exactly."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from llmrec.errors import LLMRecError
from llmrec.recommender.checkpoints import load_checkpoint
from llmrec.recommender.data import load_run_data
from llmrec.recommender.options import TrainConfig
from llmrec.recommender.runner import train_and_evaluate
from llmrec.recommender.trainer import TrainingInterrupted, fit

# Measured on ml-latest-small: LightGCN at lr 1e-2 passes popularity's validation
# Recall@20 (0.141) within ~3 epochs and reaches ~0.20 by epoch 10.
FAST_LIGHTGCN = TrainConfig(model="lightgcn", lr=1e-2, max_epochs=10, min_epochs=10, device="cpu")
# Small LLMRec runs for the state-exactness tests: features, augmented edges and masking all draw random numbers.
TINY_LLMREC = TrainConfig(model="llmrec", lr=1e-2, max_epochs=4, min_epochs=4, embedding_dim=16,
                          device="cpu", batch_size=4096)


def _states_equal(left: dict, right: dict) -> bool:
    return left.keys() == right.keys() and all(torch.equal(left[key], right[key]) for key in left)


def _curve(doc: dict) -> list[float]:
    return [row["recall@20"] for row in doc["runs"][0]["history"]]


def test_lightgcn_beats_popularity_on_validation(ml_small_run: Path) -> None:
    popularity = train_and_evaluate(ml_small_run, TrainConfig(model="popularity", device="cpu"))
    lightgcn = train_and_evaluate(ml_small_run, FAST_LIGHTGCN)
    popular_recall = popularity["selection_mean"]["recall@20"]
    learned_recall = lightgcn["selection_mean"]["recall@20"]
    assert learned_recall > 1.25 * popular_recall, (learned_recall, popular_recall)
    assert lightgcn["test_mean"]["recall@20"] > popularity["test_mean"]["recall@20"]
    out = ml_small_run / "model" / "lightgcn"
    for name in ("metrics.json", "summary.md", "training_curve.png", "checkpoint.pt"):
        assert (out / name).is_file(), name
    assert "train:lightgcn" in __import__("json").loads((ml_small_run / "manifest.json").read_text())["stages"]
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["best_epoch"] == lightgcn["runs"][0]["best_epoch"]


def test_test_split_never_influences_model_selection(ml_small_run: Path) -> None:
    config = dataclasses.replace(TINY_LLMREC, model="lightgcn")
    original = train_and_evaluate(ml_small_run, config)
    test_path = ml_small_run / "test.parquet"
    test = pd.read_parquet(test_path)
    test["item"] = np.random.default_rng(0).permutation(test["item"].to_numpy())  # scramble the test answers
    test.to_parquet(test_path, index=False)
    perturbed = train_and_evaluate(ml_small_run, config, name="perturbed")
    assert original["runs"][0]["best_epoch"] == perturbed["runs"][0]["best_epoch"]
    assert original["selection_mean"] == perturbed["selection_mean"]
    assert _curve(original) == _curve(perturbed)
    assert original["test_mean"]["recall@20"] != perturbed["test_mean"]["recall@20"]  # the test set did change
    first = load_checkpoint(ml_small_run / "model" / "lightgcn" / "checkpoint.pt")["state_dict"]
    second = load_checkpoint(ml_small_run / "model" / "perturbed" / "checkpoint.pt")["state_dict"]
    assert _states_equal(first, second)


def test_resume_after_stop_equals_uninterrupted_run(ml_small_run_with_features: Path) -> None:
    run = ml_small_run_with_features
    uninterrupted = train_and_evaluate(run, TINY_LLMREC, name="straight")
    with pytest.raises(TrainingInterrupted):
        train_and_evaluate(run, dataclasses.replace(TINY_LLMREC, stop_after_epochs=2), name="resumed")
    assert (run / "model" / "resumed" / "seed_0" / "resume.pt").is_file()
    resumed = train_and_evaluate(run, TINY_LLMREC, name="resumed")
    assert _curve(resumed) == _curve(uninterrupted)
    assert resumed["runs"][0]["best_epoch"] == uninterrupted["runs"][0]["best_epoch"]
    straight = load_checkpoint(run / "model" / "straight" / "checkpoint.pt")["state_dict"]
    again = load_checkpoint(run / "model" / "resumed" / "checkpoint.pt")["state_dict"]
    assert _states_equal(straight, again)


def test_a_resume_file_is_resumed_by_the_same_fit_only(ml_small_run_with_features: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Resuming reads the fit's own fingerprint: a LightGCN resume file survives new LLM features (LightGCN never
    reads them), and other options start afresh instead of continuing someone else's weights."""
    run = ml_small_run_with_features
    config = dataclasses.replace(TINY_LLMREC, model="lightgcn")
    select = lambda model: {"recall@20": 0.0}  # noqa: E731 - selection is not what this test is about
    for work_dir in (tmp_path / "features_change", tmp_path / "options_change"):
        with pytest.raises(TrainingInterrupted):
            fit(load_run_data(run), dataclasses.replace(config, stop_after_epochs=2), 0, select, work_dir=work_dir)
        assert load_checkpoint(work_dir / "resume.pt")["progress"]["epoch"] == 2
    features = run / "embeddings" / "item_text.npy"
    np.save(features, np.load(features) + 1.0)
    with caplog.at_level("INFO", logger="llmrec.recommender.trainer"):
        resumed = fit(load_run_data(run), config, 0, select, work_dir=tmp_path / "features_change")
    assert "resuming seed 0 from epoch 2" in caplog.text
    assert resumed.epochs_run == config.max_epochs
    caplog.clear()
    with caplog.at_level("INFO", logger="llmrec.recommender.trainer"):
        afresh = fit(load_run_data(run), dataclasses.replace(config, l2_reg=1e-2), 0, select,
                     work_dir=tmp_path / "options_change")
    assert "resuming" not in caplog.text and "starting afresh" in caplog.text
    assert [row["epoch"] for row in afresh.history] == list(range(1, config.max_epochs + 1))


def test_resume_after_a_killed_process(ml_small_run: Path) -> None:
    """SIGKILL mid-training (no clean shutdown), then resume: same weights as an uninterrupted run."""
    command = [sys.executable, "-m", "llmrec", "train", str(ml_small_run), "--model", "mf", "--epochs", "8",
               "--lr", "0.01", "--device", "cpu", "--name", "killed"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resume_path = ml_small_run / "model" / "killed" / "seed_0" / "resume.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if resume_path.is_file() and load_checkpoint(resume_path)["progress"]["epoch"] >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = load_checkpoint(resume_path)["progress"]["epoch"]
    assert 3 <= killed_at < 8
    subprocess.run(command, env=environment, check=True, capture_output=True)
    subprocess.run([*command[:-1], "straight"], env=environment, check=True, capture_output=True)
    resumed = load_checkpoint(ml_small_run / "model" / "killed" / "checkpoint.pt")["state_dict"]
    straight = load_checkpoint(ml_small_run / "model" / "straight" / "checkpoint.pt")["state_dict"]
    assert _states_equal(resumed, straight)


def test_seeds_report_mean_and_std(ml_small_run: Path) -> None:
    config = dataclasses.replace(TINY_LLMREC, model="mf", seeds=2, max_epochs=2)
    doc = train_and_evaluate(ml_small_run, config)
    recalls = [run["test"]["recall@20"] for run in doc["runs"]]
    assert [run["seed"] for run in doc["runs"]] == [0, 1]
    assert recalls[0] != recalls[1]
    assert doc["test_mean"]["recall@20"] == pytest.approx(np.mean(recalls))
    assert doc["test_std"]["recall@20"] == pytest.approx(np.std(recalls, ddof=1))
    assert "mean ± std (2 seeds)" in (ml_small_run / "model" / "mf" / "summary.md").read_text()


def test_a_finished_seed_is_read_back_not_trained_again(ml_small_run: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A comparison stopped after hours must lose only the seeds in flight: seed 0 of a 1-seed run is
    seed 0 of the 2-seed rerun (same record, train time included); other options train it afresh."""
    config = dataclasses.replace(TINY_LLMREC, model="mf", max_epochs=2)
    first = train_and_evaluate(ml_small_run, config)["runs"]
    assert len(first) == 1 and first[0]["test"]["recall@20"] > 0
    with caplog.at_level("INFO", logger="llmrec.recommender.runner"):
        rerun = train_and_evaluate(ml_small_run, dataclasses.replace(config, seeds=2))["runs"]
    assert [run["seed"] for run in rerun] == [0, 1]
    assert rerun[0] == first[0]  # train_seconds too: read back, not trained again
    assert "seed 0: trained and tested earlier" in caplog.text and "seed 1: trained" not in caplog.text
    other = train_and_evaluate(ml_small_run, dataclasses.replace(config, l2_reg=1e-2))["runs"]
    assert other[0]["train_seconds"] != first[0]["train_seconds"]


def test_results_of_an_older_training_revision_are_trained_again(ml_small_run: Path) -> None:
    """A change that alters the weights bumps TRAINING_REVISION, so what older code trained (its records carry no
    revision) is trained again, never read back as this code's result."""
    from llmrec.artifacts import MANIFEST_NAME, read_json, write_json

    config = dataclasses.replace(TINY_LLMREC, model="mf", max_epochs=2)
    first = train_and_evaluate(ml_small_run, config)["runs"][0]
    assert first["test"]["recall@20"] > 0
    assert train_and_evaluate(ml_small_run, config)["runs"][0] == first  # same revision: read back
    manifest = read_json(ml_small_run / MANIFEST_NAME)
    del manifest["stages"]["train:mf"]["params"]["training_revision"]
    write_json(ml_small_run / MANIFEST_NAME, manifest)
    seed_record_path = ml_small_run / "model" / "mf" / "seed_0" / "result.json"
    seed_record = read_json(seed_record_path)
    del seed_record["fingerprint"]["revision"]
    write_json(seed_record_path, seed_record)
    again = train_and_evaluate(ml_small_run, config)["runs"][0]
    assert again["train_seconds"] != first["train_seconds"]  # trained, not read back
    assert again["test"] == first["test"]  # the same code and seed train the same weights


def test_paper_protocol_is_labelled_and_selects_on_test(ml_small_run: Path) -> None:
    config = dataclasses.replace(TINY_LLMREC, model="mf", protocol="paper", max_epochs=2)
    doc = train_and_evaluate(ml_small_run, config)
    assert doc["selection_split"] == "test"
    assert doc["runs"][0]["test"]["protocol"] == "paper"
    assert "not a held-out estimate" in (ml_small_run / "model" / "mf" / "summary.md").read_text()


def test_empty_selection_split_is_refused(ml_small_run: Path) -> None:
    """No validation users: every selection score is NaN, and the untrained model must not come back as "best"."""
    val_path = ml_small_run / "val.parquet"
    val = pd.read_parquet(val_path)
    assert len(val) > 0
    val.iloc[:0].to_parquet(val_path, index=False)
    with pytest.raises(LLMRecError, match="val.parquet.*no user"):
        train_and_evaluate(ml_small_run, dataclasses.replace(FAST_LIGHTGCN, max_epochs=1))
    assert not (ml_small_run / "model" / "lightgcn" / "metrics.json").exists()


def test_nan_selection_score_stops_training(ml_small_run: Path) -> None:
    data = load_run_data(ml_small_run)
    with pytest.raises(LLMRecError, match="NaN"):
        fit(data, dataclasses.replace(FAST_LIGHTGCN, max_epochs=2), 0, lambda model: {"recall@20": float("nan")})


def test_baseline_reuses_the_candidate_stage_fit_when_the_options_match(ml_small_run: Path) -> None:
    """`llmrec run` trains its base LightGCN once: the candidates' fit is the LightGCN baseline's seed 0."""
    from llmrec.job import candidate_options
    from llmrec.recommender.api import train_base_model
    from llmrec.recommender.comparison import baseline_config
    from llmrec.recommender.runner import load_trained
    from llmrec.recommender.trainer import fit_fingerprint, fit_record_path

    record = fit_record_path(ml_small_run, "lightgcn", 0)
    base = train_base_model(ml_small_run, model="lightgcn", seed=0, device="cpu", epochs=3, record=record, lr=1e-2,
                            engine="torch")
    assert record.is_file()
    same = TrainConfig(model="lightgcn", lr=1e-2, max_epochs=3, device="cpu", engine="torch")
    doc = train_and_evaluate(ml_small_run, same)
    assert doc["runs"][0]["reused_fit"] is True
    assert doc["runs"][0]["best_epoch"] == base.best_epoch
    assert doc["runs"][0]["selection"]["recall@20"] == base.val_metrics["recall@20"]
    _, items = load_trained(ml_small_run, "lightgcn", "cpu").model.final_representations()
    np.testing.assert_array_equal(items.numpy(), base.item_embeddings)
    deeper = train_and_evaluate(ml_small_run, dataclasses.replace(same, n_layers=3), "lightgcn_3_layers")
    assert deeper["runs"][0]["reused_fit"] is False

    # the job passes its LightGCN baseline's options to the candidate stage, so the two fits are the same fit
    data = load_run_data(ml_small_run)
    job_train = TrainConfig(model="llmrec", n_layers=3, embedding_dim=32, engine="torch", patience=5)
    candidates = TrainConfig(model="lightgcn", seed=7, device="cpu", max_epochs=job_train.max_epochs,
                             **candidate_options(job_train))
    baseline = baseline_config(job_train, "lightgcn")
    assert fit_fingerprint(data, candidates, 0) == fit_fingerprint(data, baseline, 0)


def test_the_training_bench_times_the_trainers_own_step(ml_small_run_with_features: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`bench train` takes `_EpochSteps._step` apart to time its parts: the same steps must train the same weights,
    or the bench's breakdown would describe some other step than the one training runs."""
    import bench.bench_train as bench_train
    from llmrec.recommender.factory import build_model
    from llmrec.recommender.trainer import _EpochSteps

    # a clipping bound every step reaches, so that clipping is part of what must match
    config = dataclasses.replace(TINY_LLMREC, max_grad_norm=1e-3).resolve()
    data, cpu = load_run_data(ml_small_run_with_features), torch.device("cpu")
    trained = {}
    for timed in (False, True):
        torch.manual_seed(0)
        model, _ = build_model(config, data, cpu)
        runner = _EpochSteps(model, data, config, cpu)
        optimizer, generator = model.optimizer(config.lr), torch.Generator().manual_seed(0)
        if timed:
            monkeypatch.setattr(bench_train, "PHASE_STEPS", 2 * runner.batches)
            phases = bench_train._phase_milliseconds(runner, optimizer, generator)
            assert set(phases) == set(bench_train.PHASES) and all(ms > 0 for ms in phases.values())
        else:
            for _ in range(2):
                runner.run(optimizer, generator)
        trained[timed] = model.state_dict()
    assert runner.batches > 1 and len(trained[True]) > 0
    assert _states_equal(trained[False], trained[True])
