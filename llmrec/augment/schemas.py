"""One definition per LLM answer: its JSON schema, its validated fields and its parquet columns.

Each augmentation's answer is an `AnswerShape`, an ordered tuple of
`AnswerField`s. Everything else derives from it:
- `json_schema()` goes to every backend as `ChatRequest.json_schema`: vLLM,
  OpenAI-compatible servers and the in-process grammar engine constrain
  decoding to it, prompt-only backends get it spelled out;
- `names` are the keys `llmrec.augment.validate` requires, and each field's
  `kind` picks the validator's parser;
- `arrow_fields()` are the value columns of the parquet artifact, and
  `embed.py` describes users and items with the same `names`;
- `max_tokens()` is an answer budget that a schema-valid answer in compact
  JSON cannot exceed (through vLLM, 17 of 80 profiles were cut inside the
  JSON when the budget was a guess).

The schema keeps to what every grammar engine supports (types, enums, integer
ranges, string `maxLength`, array `maxItems`): the bounds are what make the
budget finite. The validator stays tolerant of prompt-only answers (brackets
like "25-34", aliases like "M", longer lists and strings are capped) and is the
real gate for every backend.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

#: Most list entries kept per profile list by the validator (prompt-only answers can be longer).
MAX_LIST_ITEMS = 10
#: Most list entries the schema (and prompt) asks for: constrained small models
#: otherwise fill every list to the cap with repeats and run out of tokens.
SCHEMA_LIST_ITEMS = 3
#: Longest string a constrained answer may write per field or list entry.
SCHEMA_TEXT_CHARS = 40
#: Tokens allowed beyond the compact-JSON bound: whitespace, a code fence or a
#: closing token of a prompt-only answer.
_TOKEN_SLACK = 16

#: Field kinds: what the JSON schema says and which validator parser reads it.
CANDIDATE, INTEGER, CHOICE, TEXT, TEXT_LIST = "candidate", "integer", "choice", "text", "text_list"


@dataclasses.dataclass(frozen=True)
class AnswerField:
    """One key of an answer.

    `kind` is one of CANDIDATE (a 1-based candidate number, stored as the
    chosen item id), INTEGER (in `minimum..maximum`), CHOICE (one of
    `choices`), TEXT (at most `max_length` characters) or TEXT_LIST (at most
    `max_items` such strings).
    """

    name: str
    kind: str
    minimum: int = 0
    maximum: int = 0
    choices: tuple[str, ...] = ()
    max_length: int = SCHEMA_TEXT_CHARS
    max_items: int = SCHEMA_LIST_ITEMS

    def json_schema(self, n_candidates: int = 0) -> dict[str, Any]:
        if self.kind == CANDIDATE:
            return {"type": "integer", "enum": list(range(1, n_candidates + 1))}
        if self.kind == INTEGER:
            return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}
        if self.kind == CHOICE:
            return {"type": "string", "enum": list(self.choices)}
        text = {"type": "string", "maxLength": self.max_length}
        if self.kind == TEXT:
            return text
        return {"type": "array", "items": text, "maxItems": self.max_items}

    def max_json_chars(self, n_candidates: int = 0) -> int:
        """Longest JSON of a schema-valid value (ASCII strings, no escapes, ", " between list entries)."""
        if self.kind == CANDIDATE:
            return len(str(n_candidates))
        if self.kind == INTEGER:
            return max(len(str(self.minimum)), len(str(self.maximum)))
        if self.kind == CHOICE:
            return max(map(len, self.choices)) + 2
        if self.kind == TEXT:
            return self.max_length + 2
        return 2 + self.max_items * (self.max_length + 4)

    def arrow_type(self) -> Any:
        import pyarrow as pa

        if self.kind in (CANDIDATE, INTEGER):
            return pa.int64()
        return pa.list_(pa.string()) if self.kind == TEXT_LIST else pa.string()


@dataclasses.dataclass(frozen=True)
class AnswerShape:
    """The fields of one augmentation's answer and the id column its rows are keyed by."""

    what: str
    key: str
    fields: tuple[AnswerField, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The answer's keys, in the order the prompt lists them."""
        return tuple(field.name for field in self.fields)

    def field(self, name: str) -> AnswerField:
        return next(field for field in self.fields if field.name == name)

    def json_schema(self, n_candidates: int = 0) -> dict[str, Any]:
        """The JSON schema of the answer (`n_candidates` sizes the edges' candidate enum)."""
        return {
            "type": "object",
            "properties": {field.name: field.json_schema(n_candidates) for field in self.fields},
            "required": list(self.names),
            "additionalProperties": False,
        }

    def max_tokens(self, n_candidates: int = 0) -> int:
        """A generation budget no schema-valid answer reaches.

        The bound is the longest one-line JSON (`{"key": value, ...}`) in
        characters (a byte-level BPE token covers at least one byte, one ASCII
        character) plus a little slack; the grammar engine allows no other
        whitespace, so a constrained answer always closes before the budget.
        """
        chars = 2 + sum(len(json.dumps(f.name)) + 4 + f.max_json_chars(n_candidates) for f in self.fields)
        return chars + _TOKEN_SLACK

    def arrow_fields(self) -> list[tuple[str, Any]]:
        """(column, Arrow type) of the parquet artifact: the key column, then one per field."""
        import pyarrow as pa

        return [(self.key, pa.int64()), *((field.name, field.arrow_type()) for field in self.fields)]


EDGE_ANSWER = AnswerShape(
    "edges", "user", (AnswerField("liked", CANDIDATE), AnswerField("disliked", CANDIDATE))
)
PROFILE_ANSWER = AnswerShape(
    "profiles",
    "user",
    (
        AnswerField("age", INTEGER, minimum=5, maximum=100),
        AnswerField("gender", CHOICE, choices=("male", "female")),
        AnswerField("liked_genres", TEXT_LIST),
        AnswerField("disliked_genres", TEXT_LIST),
        AnswerField("liked_directors", TEXT_LIST),
        AnswerField("country", TEXT),
        AnswerField("language", TEXT),
    ),
)
ATTRIBUTE_ANSWER = AnswerShape(
    "attributes", "item", (AnswerField("director", TEXT), AnswerField("country", TEXT), AnswerField("language", TEXT))
)
ANSWERS = {shape.what: shape for shape in (EDGE_ANSWER, PROFILE_ANSWER, ATTRIBUTE_ANSWER)}

#: Keys of a user-profile answer, in the order the prompt lists them.
PROFILE_FIELDS = PROFILE_ANSWER.names
#: Keys of an item-attribute answer.
ATTRIBUTE_FIELDS = ATTRIBUTE_ANSWER.names


def edge_schema(n_candidates: int) -> dict[str, Any]:
    """Answer of the edge augmentation: two candidate numbers (1-based)."""
    return EDGE_ANSWER.json_schema(n_candidates)


def profile_schema() -> dict[str, Any]:
    """Answer of the user-profile augmentation."""
    return PROFILE_ANSWER.json_schema()


def attribute_schema() -> dict[str, Any]:
    """Answer of the item-attribute augmentation."""
    return ATTRIBUTE_ANSWER.json_schema()
