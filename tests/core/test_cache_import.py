"""`llmrec cache export` then `import`: a store moved to another machine serves its answers.

Real SmolLM2 answers in a real SQLite store; the importing side builds the
same backend without loading it, so a hit proves the answer came from the import.
"""

from __future__ import annotations

import gzip
import json

from typer.testing import CliRunner

from llmrec.backends import get_backend
from llmrec.cli import app
from llmrec.backends.store import CompletionStore
from tests.backends.conftest import chat

QUESTIONS = ["Name a colour.", "Name a planet.", "Name a tree."]


def _exported(smollm2, tmp_path, name="answers.jsonl"):
    source = tmp_path / "source.sqlite"
    if not source.exists():
        with CompletionStore(source) as store:
            first = store.generate(smollm2, [chat(q, max_tokens=3) for q in QUESTIONS])
        assert first.usage.generated == len(QUESTIONS)
    with CompletionStore(source) as store:
        texts = [c.text for c in store.generate(smollm2, [chat(q, max_tokens=3) for q in QUESTIONS]).completions]
    export = tmp_path / name
    result = CliRunner().invoke(app, ["cache", "export", str(export), "--store", str(source)])
    assert result.exit_code == 0, result.output
    return export, texts


def test_an_imported_export_answers_without_the_model(smollm2, tmp_path):
    export, texts = _exported(smollm2, tmp_path)
    packed, _ = _exported(smollm2, tmp_path, "answers.jsonl.gz")
    assert gzip.decompress(packed.read_bytes()) == export.read_bytes()  # .gz is written compressed
    again_packed, _ = _exported(smollm2, tmp_path, "again.jsonl.gz")
    assert again_packed.read_bytes() == packed.read_bytes()  # the same store exports to the same bytes
    target = tmp_path / "elsewhere" / "store.sqlite"
    runner = CliRunner()
    result = runner.invoke(app, ["cache", "import", str(packed), "--store", str(target)])
    assert result.exit_code == 0, result.output
    assert "imported 3 completions" in result.output

    fresh = get_backend("transformers", model="smollm2-135m")  # never loaded
    with CompletionStore(target) as store:
        again = store.generate(fresh, [chat(q, max_tokens=3) for q in QUESTIONS])
    assert fresh._model is None
    assert len(again.completions) == 3 and all(c.cached for c in again.completions)
    assert [c.text for c in again.completions] == texts

    twice = runner.invoke(app, ["cache", "import", str(export), "--store", str(target)])
    assert twice.exit_code == 0 and "imported 0 completions" in twice.output and "3 were already there" in twice.output


def test_a_bad_line_names_the_line_and_field_and_imports_nothing(smollm2, tmp_path):
    export, _ = _exported(smollm2, tmp_path)
    lines = export.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    broken = json.loads(lines[2])
    broken["prompt_tokens"] = "many"
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text("\n".join([*lines[:2], json.dumps(broken)]) + "\n", encoding="utf-8")
    target = tmp_path / "target.sqlite"

    result = CliRunner().invoke(app, ["cache", "import", str(damaged), "--store", str(target)])
    assert result.exit_code != 0
    message = result.output + str(result.exception or "")
    assert f"{damaged}:3" in message and "prompt_tokens" in message
    with CompletionStore(target) as store:
        assert store.stats()["completions"] == 0  # the two good lines before it were not kept either
