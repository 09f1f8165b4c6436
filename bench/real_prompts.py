"""Real augmentation prompts for the LLM benchmarks: ml-latest-small, the pipeline's own tasks.

The same requests every mode answers: the first users' edge and profile
questions and their items' attribute questions, rendered by the pipeline's
templates with its decoding defaults (greedy here, so every mode answers the
same question the same way) and each answer's JSON schema and token budget.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from llmrec.augment.config import AugmentConfig
from llmrec.augment.tasks import Task, attribute_tasks, edge_tasks, profile_tasks, select_items, select_users
from llmrec.backends.base import ChatRequest, Completion


@dataclasses.dataclass(frozen=True)
class Question:
    """One request and how to judge its answer."""

    what: str
    task: Task
    request: ChatRequest


def prepared_run(workdir: Path, candidate_epochs: int = 3) -> Path:
    """A prepared ml-latest-small run with base-model candidates (throughput does not depend on their quality)."""
    from llmrec.augment.candidates import generate_candidates
    from llmrec.data.prepare import PrepareConfig, prepare_run

    run_dir = workdir / "base"
    if not (run_dir / "candidates.parquet").is_file():
        prepare_run(run_dir, PrepareConfig(dataset="ml-latest-small"))
        generate_candidates(run_dir, 10, epochs=candidate_epochs)
    return run_dir


def questions(run_dir: Path, per_kind: int, history_budget: int = 10) -> list[Question]:
    """`per_kind` edge, profile and attribute questions (one candidate order per user), greedy."""
    from llmrec import artifacts
    from llmrec.data.tables import load_split

    tables = load_split(run_dir)
    candidates = artifacts.read_parquet(run_dir / "candidates.parquet", ["user", "rank", "item", "score"])
    users = select_users(tables.train, tables.n_users, per_kind)
    options = AugmentConfig(temperature=0.0, history_budget=history_budget)
    sets = {
        "edges": edge_tasks(tables, candidates, users, history_budget, None, orders=1),
        "profiles": profile_tasks(tables, users, history_budget, None),
        "attributes": attribute_tasks(tables, select_items(tables.train, candidates, users, tables.n_items, per_kind), None),
    }
    return [
        Question(what, task, ChatRequest(task.messages, options.sampling(what), task.schema))
        for what, task_set in sets.items()
        for task in task_set.tasks[:per_kind]
    ]


def judge(question: Question, completion: Completion) -> dict[str, Any]:
    """Whether the answer is JSON, matches its schema, and passes the pipeline's validator."""
    import jsonschema

    verdict = {"json": False, "schema": False, "valid": False}
    try:
        value = json.loads(completion.text)
        verdict["json"] = True
        jsonschema.validate(value, question.request.json_schema)
        verdict["schema"] = True
    except (ValueError, jsonschema.ValidationError):
        pass
    try:
        question.task.validate(completion.text)
        verdict["valid"] = True
    except ValueError:  # AnswerValidationError
        pass
    return verdict

