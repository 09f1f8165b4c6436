"""Constrained decoding in-process: real SmolLM2 on real MovieLens prompts answers schema-valid JSON.

The prompts are the pipeline's own edge, profile and attribute questions for
the subset run's users, with the pipeline's answer budgets; decoding is greedy
and batched (one grammar matcher per row).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pandas as pd
import pytest

from llmrec import artifacts
from llmrec.augment.candidates import generate_candidates
from llmrec.augment.config import AugmentConfig
from llmrec.augment.tasks import attribute_tasks, edge_tasks, profile_tasks, select_items, select_users
from llmrec.backends.base import ChatRequest
from llmrec.data.tables import load_split

#: Items asked about besides the users' edge and profile questions (>= 30 prompts in all).
ITEMS = 14
#: History items per prompt: prefill dominates in-process time on CPU, so short prompts.
HISTORY = 5
#: The module's 30 generations run inside one fixture; they take minutes on 2 shared cores.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def constrained_answers(prepared_run: Path, smollm2, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, ChatRequest, object]]:
    run_dir = tmp_path_factory.mktemp("constrained") / "run"
    shutil.copytree(prepared_run, run_dir)
    generate_candidates(run_dir, 10, epochs=2)
    tables = load_split(run_dir)
    candidates = artifacts.read_parquet(run_dir / "candidates.parquet", ["user", "rank", "item", "score"])
    users = select_users(tables.train, tables.n_users, 0)
    options = AugmentConfig(temperature=0.0, history_budget=HISTORY)
    task_sets = {
        "edges": edge_tasks(tables, candidates, users, HISTORY, None, orders=1),
        "profiles": profile_tasks(tables, users, HISTORY, None),
        "attributes": attribute_tasks(tables, select_items(tables.train, candidates, users, tables.n_items, ITEMS), None),
    }
    asked = [
        (what, ChatRequest(task.messages, options.sampling(what), task.schema))
        for what, task_set in task_sets.items()
        for task in task_set.tasks
    ]
    completions = smollm2.generate([request for _, request in asked])
    return [(what, request, completion) for (what, request), completion in zip(asked, completions)]


def test_every_answer_is_json_of_its_schema(constrained_answers) -> None:
    kinds = {what for what, _, _ in constrained_answers}
    assert len(constrained_answers) >= 30 and kinds == {"edges", "profiles", "attributes"}
    for what, request, completion in constrained_answers:
        assert completion.finish_reason == "stop", (what, completion.text)
        answer = json.loads(completion.text)  # the whole text: no chatter, no code fence
        jsonschema.validate(answer, request.json_schema)
        assert list(answer) == list(request.json_schema["properties"]), "keys come in the schema's (the prompt's) order"


def test_edge_answers_name_candidates_by_construction(constrained_answers) -> None:
    edges = [(request, json.loads(c.text)) for what, request, c in constrained_answers if what == "edges"]
    assert len(edges) >= 8
    for request, answer in edges:
        numbers = request.json_schema["properties"]["liked"]["enum"]
        assert answer["liked"] in numbers and answer["disliked"] in numbers


def test_answers_cut_by_max_tokens_fail_with_the_reason_and_a_whole_artifact(fresh_run: Path, smollm2) -> None:
    from llmrec.artifacts import AUGMENT_REPORT
    from llmrec.augment.pipeline import ARTIFACT_FILES, run_augmentation

    options = AugmentConfig(what=("profiles",), limit_users=2, temperature=0.0, max_tokens=12, history_budget=HISTORY,
                            store=str(fresh_run / "store.sqlite"))
    summary = run_augmentation(fresh_run, smollm2, options)
    counts = summary.counts["profiles"]
    assert counts.requested == 2 and counts.failed == 2  # a profile's JSON does not fit in 12 tokens
    report = json.loads((fresh_run / AUGMENT_REPORT).read_text())["profiles"]
    assert len(report["failures"]) == 2
    for failure in report["failures"]:
        assert failure["reason"].startswith("answer cut at max_tokens=12 (") and failure["reason"].endswith("raise max_tokens")
    table = pd.read_parquet(fresh_run / ARTIFACT_FILES["profiles"])
    assert len(table) == 0 and list(table.columns)[:2] == ["user", "age"]  # written whole, with its columns
