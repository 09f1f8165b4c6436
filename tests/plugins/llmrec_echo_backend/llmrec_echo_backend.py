"""`echo`: a rule-based llmrec backend that lives outside llmrec.

It needs no model: a request with a JSON schema is answered with a value
built from the schema by fixed rules (enum entry by field position, integer
midpoint, `word` for every string), so every answer is schema-valid JSON and
the pipeline's validation and artifacts run as for a model; a request without
a schema gets its last message back. llmrec finds it through the
`llmrec.backends` entry point in pyproject.toml, not through an import.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from llmrec.backends import Backend, ChatRequest, Completion


class EchoBackend(Backend):
    """Deterministic answers; `word` (`--backend-option word=...`) fills every string."""

    def __init__(self, model: str = "echo-rules", *, word: str = "echo") -> None:
        self._model = model
        self.word = word

    @property
    def model_id(self) -> str:
        return self._model

    def generate_iter(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, Completion]]:
        for index, request in enumerate(requests):
            started = time.perf_counter()
            prompt = request.messages[-1]["content"]
            text = prompt if request.json_schema is None else json.dumps(self._value(request.json_schema, 0))
            yield index, Completion(text, "stop", len(prompt.split()), len(text.split()), time.perf_counter() - started)

    def _value(self, schema: dict[str, Any], position: int) -> Any:
        """A value of `schema`; `position` (the field's place in its object) varies enum picks."""
        if "enum" in schema:
            return schema["enum"][position % len(schema["enum"])]
        kind = schema.get("type")
        if kind == "object":
            properties = schema.get("properties", {}).items()
            return {name: self._value(sub, i) for i, (name, sub) in enumerate(properties)}
        if kind == "array":
            return [self._value(schema.get("items", {}), position)][: schema.get("maxItems", 1)]
        if kind == "integer":
            low = schema.get("minimum", 0)
            return (low + schema.get("maximum", low)) // 2
        if kind == "boolean":
            return position % 2 == 0
        return self.word[: schema.get("maxLength", len(self.word))]
