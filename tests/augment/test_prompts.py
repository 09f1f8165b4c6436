"""Prompt templates: sandboxing, determinism, overrides and leakage-free histories."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from llmrec.augment.context import movie_descriptions, training_histories
from llmrec.augment.tasks import edge_tasks, profile_tasks, select_users
from llmrec.data.tables import load_split
from llmrec.prompts import PromptError, PromptTemplate, load_template

ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].system('echo pwned') }}",
    "{{ history.append(1) }}",
    "{{ namespace.__init__.__globals__.__builtins__ }}",
]


@pytest.mark.parametrize("attack", ESCAPES)
def test_sandbox_escape_attempts_fail_with_a_clear_error(attack: str) -> None:
    template = PromptTemplate("edges", "evil.jinja", f"{{% block system %}}x{{% endblock %}}{{% block user %}}{attack}{{% endblock %}}")
    with pytest.raises(PromptError, match="evil.jinja: unsafe template operation refused by the sandbox"):
        template.render(history=[])


def test_undefined_variable_and_missing_blocks_are_errors(tmp_path: Path) -> None:
    typo = PromptTemplate("profiles", "typo.jinja", "{% block system %}{{ histroy }}{% endblock %}{% block user %}u{% endblock %}")
    with pytest.raises(PromptError, match="undefined template variable.*histroy"):
        typo.render(history=[])
    with pytest.raises(PromptError, match="missing block"):
        PromptTemplate("profiles", "noblocks.jinja", "hello").render()
    with pytest.raises(PromptError, match="syntax error"):
        PromptTemplate("profiles", "bad.jinja", "{% block system %}{{ x ").render()


def test_prompts_dir_overrides_one_template_and_changes_its_hash(tmp_path: Path) -> None:
    (tmp_path / "attributes.jinja").write_text(
        "{% block system %}S{% endblock %}{% block user %}Who directed {{ item.title }}?{% endblock %}"
    )
    custom = load_template("attributes", tmp_path)
    packaged = load_template("attributes")
    assert custom.template_hash != packaged.template_hash
    assert custom.render(item={"title": "Heat"})[1] == {"role": "user", "content": "Who directed Heat?"}
    assert load_template("edges", tmp_path).source == load_template("edges").source  # falls back
    with pytest.raises(PromptError, match="not a folder"):
        load_template("edges", tmp_path / "missing")


def test_rendering_is_deterministic_and_in_recency_order(prepared_run: Path) -> None:
    tables = load_split(prepared_run)
    users = select_users(tables.train, tables.n_users, 3)
    first = profile_tasks(tables, users, history_budget=5, prompts_dir=None)
    second = profile_tasks(tables, users, history_budget=5, prompts_dir=None)
    assert [t.messages for t in first.tasks] == [t.messages for t in second.tasks]
    user = users[0]
    history = training_histories(tables.train, [user], budget=5)[user]
    rows = tables.train[tables.train["user"] == user].sort_values(["timestamp", "item"], ascending=[False, True])
    assert history == rows["item"].head(5).tolist()
    movies = movie_descriptions(tables.items)
    user_text = first.tasks[0].messages[1]["content"]
    positions = [user_text.index(f"- {movies[item]['title']}") for item in history]
    assert positions == sorted(positions) and user_text.count("\n- ") == 5


def _history_lines(text: str) -> list[str]:
    """The `- title (year), genres` lines of a prompt's history section."""
    return [line[2:] for line in text.splitlines() if line.startswith("- ")]


def _movie_line(movie: dict[str, object]) -> str:
    return f"{movie['title']} ({movie['year']})" if movie["year"] else str(movie["title"])


def test_histories_never_show_validation_or_test_items(prepared_run: Path) -> None:
    tables = load_split(prepared_run)
    users = select_users(tables.train, tables.n_users, 0)
    held_out = pd.concat([tables.val, tables.test])
    movies = movie_descriptions(tables.items)
    candidates = held_out.groupby("user").head(3).assign(rank=lambda f: f.groupby("user").cumcount(), score=0.0)
    edges = edge_tasks(tables, candidates, users, history_budget=1000, prompts_dir=None, orders=1)
    profiles = profile_tasks(tables, users, history_budget=1000, prompts_dir=None)
    checked = 0
    for edge_task, profile_task in zip(edges.tasks, profiles.tasks):
        user = edge_task.entity
        train_titles = {movies[i]["title"] for i in tables.train.loc[tables.train["user"] == user, "item"]}
        history_lines = _history_lines(edge_task.messages[1]["content"].split("Candidates")[0])
        assert history_lines == _history_lines(profile_task.messages[1]["content"])
        for item in held_out.loc[held_out["user"] == user, "item"]:
            if movies[item]["title"] in train_titles:
                continue  # a different movie with the same title is in the history
            movie = _movie_line(movies[item])
            assert not any(line == movie or line.startswith(movie + ", ") for line in history_lines)
            checked += 1
    assert checked > 20


def test_edge_prompt_numbers_the_candidates_and_carries_a_schema(prepared_run: Path) -> None:
    tables = load_split(prepared_run)
    user = select_users(tables.train, tables.n_users, 1)[0]
    unseen = sorted(set(range(tables.n_items)) - set(tables.train.loc[tables.train["user"] == user, "item"]))[:4]
    candidates = pd.DataFrame({"user": user, "rank": range(4), "item": unseen, "score": 0.0})
    task = edge_tasks(tables, candidates, [user], 10, None).tasks[0]
    movies = movie_descriptions(tables.items)
    assert sorted(task.shown) == unseen  # shuffled, see test_position_bias.py
    for number, item in enumerate(task.shown, start=1):
        assert f"[{number}] {movies[item]['title']}" in task.messages[1]["content"]
    assert task.schema["properties"]["liked"]["enum"] == [1, 2, 3, 4]
    assert task.validate(json.dumps({"liked": 4, "disliked": 1})).liked == task.shown[3]
