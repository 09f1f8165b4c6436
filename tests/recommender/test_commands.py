"""The recommender commands end to end on ml-latest-small (few epochs), and the public API."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from llmrec.cli import app
from llmrec.errors import ConfigError
from llmrec.recommender.api import train_base_model
from llmrec.recommender.comparison import CompareConfig, compare_with_baselines, paired_test
from llmrec.recommender.options import TrainConfig
from tests.report_tables import assert_metrics_table

runner = CliRunner()


def _invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_train_with_baselines_evaluate_and_recommend(ml_small_run_with_features: Path) -> None:
    run = str(ml_small_run_with_features)
    _invoke("train", run, "--epochs", "2", "--device", "cpu", "--baselines", "--engine", "torch")
    comparison = json.loads((ml_small_run_with_features / "model" / "comparison.json").read_text())
    assert [entry["label"] for entry in comparison["entries"]] == ["popularity", "mf", "lightgcn", "llmrec"]
    table = (ml_small_run_with_features / "model" / "comparison.md").read_text()
    assert "selected on validation" in table
    assert_metrics_table(table, ml_small_run_with_features,
                         {"popularity": "popularity", "mf": "mf", "lightgcn": "lightgcn", "llmrec": "llmrec"}, seeds=1)
    metrics = json.loads((ml_small_run_with_features / "model" / "llmrec" / "metrics.json").read_text())
    assert metrics["engine"] == "torch" and metrics["protocol"] == "standard"

    evaluated = json.loads(_invoke("evaluate", run, "--name", "llmrec", "--device", "cpu", "--json"))
    assert evaluated["test"]["recall@20"] == metrics["runs"][0]["test"]["recall@20"]

    users = pd.read_parquet(ml_small_run_with_features / "users.parquet")
    original_id = users.loc[5, "original_id"]
    output = _invoke("recommend", run, "--user", original_id, "-k", "5", "--name", "llmrec")
    ranked = [line for line in output.splitlines() if line[:2].strip().isdigit()]
    assert len(ranked) == 5
    assert output.count("because you liked:") == 5
    # never recommends what the user has already seen
    seen = pd.concat([pd.read_parquet(ml_small_run_with_features / f"{split}.parquet") for split in ("train", "val")])
    items = pd.read_parquet(ml_small_run_with_features / "items.parquet")
    seen_titles = set(items.loc[seen.loc[seen["user"] == 5, "item"], "title"])
    assert not any(line.split(". ", 1)[1].rsplit(" (", 1)[0] in seen_titles for line in ranked)


def test_recommend_unknown_user_is_one_line(ml_small_run: Path) -> None:
    result = runner.invoke(app, ["recommend", str(ml_small_run), "--user", "no-such-user"])
    assert result.exit_code != 0
    assert "no user with original_id 'no-such-user'" in str(result.exception)


def test_ablate_writes_one_table(ml_small_run_with_features: Path) -> None:
    _invoke("ablate", str(ml_small_run_with_features), "--epochs", "1", "--device", "cpu")
    table = json.loads((ml_small_run_with_features / "model" / "ablation.json").read_text())
    assert [entry["label"] for entry in table["entries"]] == ["full", "w/o-u-i", "w/o-u", "w/o-u&i", "w/o-prune"]
    recalls = {entry["label"]: entry["test_mean"]["recall@20"] for entry in table["entries"]}
    assert recalls["full"] != recalls["w/o-u&i"]  # the variants really differ
    names = {"full": "ablation_full", "w/o-u-i": "ablation_wo_u_i", "w/o-u": "ablation_wo_u",
             "w/o-u&i": "ablation_wo_u_and_i", "w/o-prune": "ablation_wo_prune"}
    assert [entry["name"] for entry in table["entries"]] == list(names.values())  # five models, none a repeat
    assert_metrics_table((ml_small_run_with_features / "model" / "ablation.md").read_text(),
                         ml_small_run_with_features, names, seeds=1)


def test_train_base_model_api(ml_small_run: Path) -> None:
    result = train_base_model(ml_small_run, model="lightgcn", seed=0, device="cpu", epochs=2)
    n_users = len(pd.read_parquet(ml_small_run / "users.parquet"))
    n_items = len(pd.read_parquet(ml_small_run / "items.parquet"))
    assert result.user_embeddings.shape == (n_users, 64) and result.item_embeddings.shape == (n_items, 64)
    assert result.user_embeddings.dtype == np.float32
    assert 0 < result.val_metrics["recall@20"] <= 1
    assert not (ml_small_run / "model").exists()  # nothing written into the run


def test_config_file_sets_options_and_rejects_typos(ml_small_run: Path, tmp_path: Path) -> None:
    config = tmp_path / "train.toml"
    config.write_text("[train]\nmodel = 'mf'\nmax_epochs = 1\nembedding_dim = 8\n")
    _invoke("train", str(ml_small_run), "--config", str(config), "--device", "cpu")
    metrics = json.loads((ml_small_run / "model" / "mf" / "metrics.json").read_text())
    assert metrics["config"]["embedding_dim"] == 8 and metrics["runs"][0]["epochs_run"] == 1
    config.write_text("[train]\nlearning_rate = 0.1\n")
    result = runner.invoke(app, ["train", str(ml_small_run), "--config", str(config)])
    assert result.exit_code != 0
    assert "unknown option 'learning_rate'" in str(result.exception)


def test_baselines_share_the_model_options_and_the_table_says_so(ml_small_run_with_features: Path) -> None:
    """A 3-layer, 8-d LLMRec must be compared with 3-layer, 8-d baselines, and comparison.md must say so."""
    shared = {"embedding_dim": 8, "n_layers": 3, "l2_reg": 1e-3, "max_grad_norm": 0.5, "eval_every": 1}
    config = TrainConfig(model="llmrec", max_epochs=1, device="cpu", engine="torch", **shared)
    compare = CompareConfig(baselines=("mf", "lightgcn", "text-only"))
    compare_with_baselines(ml_small_run_with_features, config, compare=compare)
    for baseline in ("mf", "lightgcn", "text_only"):
        used = json.loads((ml_small_run_with_features / "model" / baseline / "metrics.json").read_text())["config"]
        assert {key: used[key] for key in shared} == shared, baseline
    table = (ml_small_run_with_features / "model" / "comparison.md").read_text()
    assert "embedding_dim 8" in table and "n_layers 3" in table and "l2_reg 0.001" in table
    assert "max_grad_norm 0.5" in table and "eval_every 1" in table
    text_only = json.loads((ml_small_run_with_features / "model" / "text_only" / "metrics.json").read_text())["config"]
    assert text_only["model"] == "llmrec"  # LightGCN + item text/image embeddings, no LLM output at all
    assert text_only["aug_sample_rate"] == text_only["user_profile_weight"] == text_only["item_attribute_weight"] == 0
    comparison = json.loads((ml_small_run_with_features / "model" / "comparison.json").read_text())
    assert [test["other"] for test in comparison["paired_tests"]] == ["lightgcn", "text_only"]
    assert all(test["pairs"] == 609 for test in comparison["paired_tests"])  # one seed x every test user
    assert "Paired test, llmrec vs lightgcn" in table
    assert_metrics_table(table, ml_small_run_with_features,
                         {"mf": "mf", "lightgcn": "lightgcn", "text-only": "text_only", "llmrec": "llmrec"}, seeds=1)


def test_models_trained_side_by_side_equal_models_trained_one_after_another(
    ml_small_run_with_features: Path, tmp_path: Path
) -> None:
    """`[compare] jobs = 2` trains in two spawned processes; every model's numbers must equal the serial run's."""
    parallel_run = tmp_path / "parallel"
    shutil.copytree(ml_small_run_with_features, parallel_run)
    config = TrainConfig(model="llmrec", max_epochs=2, eval_every=1, device="cpu", engine="torch", seeds=2)
    baselines = ("mf", "lightgcn", "text-only")
    serial = compare_with_baselines(ml_small_run_with_features, config, compare=CompareConfig(baselines=baselines))
    side_by_side = compare_with_baselines(parallel_run, config, compare=CompareConfig(baselines=baselines, jobs=2))
    assert [entry["label"] for entry in serial] == ["mf", "lightgcn", "text-only", "llmrec"]
    assert [entry["label"] for entry in side_by_side] == [entry["label"] for entry in serial]
    for one, other in zip(serial, side_by_side):
        assert one["test_mean"] and one["test_mean"] == other["test_mean"], one["label"]
        histories = [json.loads((run / "model" / one["name"] / "metrics.json").read_text())["runs"][0]["history"]
                     for run in (ml_small_run_with_features, parallel_run)]
        assert len(histories[0]) == 2
        assert [epoch["loss"] for epoch in histories[0]] == [epoch["loss"] for epoch in histories[1]], one["label"]
        assert one["seeds"] == 2 and one["test_std"] == other["test_std"]
    names = {"mf": "mf", "lightgcn": "lightgcn", "text-only": "text_only", "llmrec": "llmrec"}
    for run in (ml_small_run_with_features, parallel_run):  # mean ± std of the two seeds of each model's own file
        assert_metrics_table((run / "model" / "comparison.md").read_text(), run, names, seeds=2)


def test_variants_that_are_one_model_on_the_run_train_once(ml_small_run_with_features: Path) -> None:
    """Without augmented edges w/o-u-i and w/o-prune are LLMRec, and w/o-u&i is text-only: the table repeats
    the twin's row and says so, and each repeat, trained on its own, gives exactly its twin's numbers."""
    from llmrec.recommender.comparison import ABLATIONS, baseline_config, distinct_models
    from llmrec.recommender.data import load_run_data
    from llmrec.recommender.runner import train_and_evaluate

    run = ml_small_run_with_features
    config = TrainConfig(model="llmrec", max_epochs=2, device="cpu", engine="torch")
    plan = [("text-only", baseline_config(config, "text-only"), "text_only"), ("llmrec", config, "llmrec"),
            *((label, dataclasses.replace(config, **overrides), label) for label, overrides in ABLATIONS.items())]
    with_edges = load_run_data(run)
    assert len(with_edges.augmented_triples) > 0
    assert distinct_models(plan, with_edges)[1] == {"full": "llmrec"}  # with edges only "full" repeats
    (run / "augmented_edges.parquet").unlink()
    entries = compare_with_baselines(run, config, compare=CompareConfig(baselines=("text-only",), ablations=True))
    by_label = {entry["label"]: entry for entry in entries}
    assert list(by_label) == ["text-only", "llmrec", "llmrec w/o-u-i", "llmrec w/o-u", "llmrec w/o-u&i",
                              "llmrec w/o-prune"]
    twins = {"llmrec w/o-u-i": "llmrec", "llmrec w/o-prune": "llmrec", "llmrec w/o-u&i": "text-only"}
    notes = json.loads((run / "model" / "comparison.json").read_text())["notes"]
    for label, twin in twins.items():
        assert by_label[label]["name"] == by_label[twin]["name"]
        assert any(note.startswith(f"{label} is the same model as {twin}") for note in notes)
        variant = dataclasses.replace(config, **ABLATIONS[label.removeprefix("llmrec ")])
        alone = train_and_evaluate(run, variant, "alone_" + label.replace("/", "").replace("&", "_").replace(" ", "_"))
        assert alone["test_mean"]["recall@20"] > 0
        assert alone["test_mean"] == by_label[twin]["test_mean"], label
    assert by_label["llmrec w/o-u"]["name"] != by_label["llmrec"]["name"]  # profiles still change the model
    assert_metrics_table((run / "model" / "comparison.md").read_text(), run, {  # a repeat prints its twin's file
        "text-only": "text_only", "llmrec": "llmrec", "llmrec w/o-u-i": "llmrec", "llmrec w/o-u": "ablation_wo_u",
        "llmrec w/o-u&i": "text_only", "llmrec w/o-prune": "llmrec"}, seeds=1)


def test_compare_jobs_must_be_a_positive_integer() -> None:
    with pytest.raises(ConfigError, match="'jobs': expected an integer >= 1, got 0"):
        CompareConfig(jobs=0)


def test_no_check_config_differs_from_the_full_one_only_in_the_edge_orders_and_what_it_trains() -> None:
    """configs/full-no-check.toml must ask exactly the full run's first-order prompts (answers from its store)."""
    import dataclasses

    from llmrec.job import load_job_config

    configs = Path(__file__).resolve().parents[2] / "configs"
    full = load_job_config(configs / "full.toml", {})
    no_check = load_job_config(configs / "full-no-check.toml", {})
    assert no_check.augment.edge_orders == 1 and full.augment.edge_orders == 3
    assert dataclasses.replace(no_check.augment, edge_orders=full.augment.edge_orders) == full.augment
    assert no_check.data == full.data and no_check.embed == full.embed
    assert dataclasses.replace(no_check.train, seeds=full.train.seeds) == full.train
    assert no_check.compare.baselines == () and not no_check.compare.ablations
    assert no_check.compare.jobs == full.compare.jobs == 2


def test_paired_test_pools_seeds_and_pairs_users() -> None:
    def doc(name: str, per_seed: dict[int, list[float]]) -> dict:
        return {"name": name, "runs": [{"seed": seed, "test_per_user": {"users": [0, 1, 2, 3, 4, 5], "recall@20": values}}
                                       for seed, values in per_seed.items()]}

    better = doc("a", {0: [0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 1: [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]})
    worse = doc("b", {0: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 1: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 2: [0.0] * 6})
    result = paired_test(better, worse)
    assert result["pairs"] == 12  # seed 2 has no twin
    assert result["mean_difference"] == pytest.approx(0.4)
    assert result["better"] == 12 and result["worse"] == 0
    assert result["p_value"] < 0.01
    assert paired_test(better, better)["p_value"] == 1.0


def test_full_experiment_config_loads_as_documented() -> None:
    from llmrec.job import load_job_config

    config = load_job_config(Path(__file__).resolve().parents[2] / "configs" / "full.toml", {})
    assert config.augment.backend == "vllm" and config.augment.limit_users == 0 and config.augment.limit_items is None
    assert set(config.augment.what) == {"edges", "profiles", "attributes"}
    assert config.train.seeds == 5 and config.train.seed == config.augment.seed  # the base LightGCN is trained once
    assert "text-only" in config.compare.baselines and config.compare.ablations
    assert config.compare.paired_with == ("lightgcn", "text-only") and config.compare.jobs == 2
