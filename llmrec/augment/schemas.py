"""JSON schemas of the three LLM answers.

Each schema goes to the backend as `ChatRequest.json_schema` (vLLM and
OpenAI-compatible servers constrain decoding to it) and is also described in
the prompt text for backends that cannot constrain. The schemas stay simple
(types, enums, required keys) because grammar engines support that subset
everywhere; ranges, lengths and normalisation are enforced afterwards by
`llmrec.augment.validate`, which is the real gate for every backend.
"""

from __future__ import annotations

from typing import Any

#: Keys of a user-profile answer, in the order the prompt lists them.
PROFILE_FIELDS = (
    "age",
    "gender",
    "liked_genres",
    "disliked_genres",
    "liked_directors",
    "country",
    "language",
)

#: Keys of an item-attribute answer.
ATTRIBUTE_FIELDS = ("director", "country", "language")

#: Most list entries kept per profile list by the validator.
MAX_LIST_ITEMS = 10
#: Most list entries the schema (and prompt) asks for: constrained small models
#: otherwise fill every list to the cap with repeats and run out of tokens.
SCHEMA_LIST_ITEMS = 3


def edge_schema(n_candidates: int) -> dict[str, Any]:
    """Answer of the edge augmentation: two candidate numbers (1-based)."""
    numbers = list(range(1, n_candidates + 1))
    return {
        "type": "object",
        "properties": {
            "liked": {"type": "integer", "enum": numbers},
            "disliked": {"type": "integer", "enum": numbers},
        },
        "required": ["liked", "disliked"],
        "additionalProperties": False,
    }


def _string_list() -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}, "maxItems": SCHEMA_LIST_ITEMS}


def profile_schema() -> dict[str, Any]:
    """Answer of the user-profile augmentation."""
    return {
        "type": "object",
        "properties": {
            "age": {"type": "integer"},
            "gender": {"type": "string", "enum": ["male", "female"]},
            "liked_genres": _string_list(),
            "disliked_genres": _string_list(),
            "liked_directors": _string_list(),
            "country": {"type": "string"},
            "language": {"type": "string"},
        },
        "required": list(PROFILE_FIELDS),
        "additionalProperties": False,
    }


def attribute_schema() -> dict[str, Any]:
    """Answer of the item-attribute augmentation."""
    return {
        "type": "object",
        "properties": {field: {"type": "string"} for field in ATTRIBUTE_FIELDS},
        "required": list(ATTRIBUTE_FIELDS),
        "additionalProperties": False,
    }
