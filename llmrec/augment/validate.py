"""Parse and check LLM answers: pure functions, one exception type.

An LLM answer is untrusted text. The original LLMRec split it on `::` and
stored whatever came out (history items as "candidates", directors that were
titles); here every answer is parsed tolerantly (code fences, chatter around a
JSON object) and then checked strictly. Anything wrong raises
`AnswerValidationError` with a short reason that goes into the repair prompt
and into `augment_report.json`; no other exception type escapes, whatever the
input, so the pipeline can count failures instead of crashing on them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

from llmrec.augment import schemas
from llmrec.augment.schemas import ATTRIBUTE_ANSWER, EDGE_ANSWER, MAX_LIST_ITEMS, PROFILE_ANSWER, AnswerField

#: Longest answer parsed; longer ones are cut (a 135M model can ramble for ever).
MAX_ANSWER_CHARS = 20_000
#: Most `{` positions tried when looking for a JSON object inside chatter.
MAX_OBJECT_STARTS = 64
#: Longest string kept in a profile or attribute field.
MAX_TEXT_CHARS = 120
#: Plausible ages of a movie-rating user (the schema's range).
AGE_RANGE = (PROFILE_ANSWER.field("age").minimum, PROFILE_ANSWER.field("age").maximum)

#: Values that mean "no answer"; stored as null, never as the string.
NULL_TOKENS = frozenset(
    {"", "unknown", "n/a", "na", "none", "null", "nil", "not known", "unspecified", "-", "?", "various"}
)
#: Per choice field: spellings models use and the value each means (gender "other" is
#: accepted from prompt-only answers though the schema does not offer it).
_CHOICE_ALIASES = {
    "gender": {
        "m": "male", "man": "male", "boy": "male",
        "f": "female", "woman": "female", "girl": "female",
        "other": "other", "non-binary": "other", "nonbinary": "other", "non binary": "other",
    },
}
_KEY_ALIASES = {
    "liked_genre": "liked_genres", "disliked_genre": "disliked_genres",
    "liked_director": "liked_directors", "like": "liked", "dislike": "disliked",
    "sex": "gender",
}
_FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.DOTALL)
_AGE_SPAN = re.compile(r"^(\d{1,3})\s*(?:-|–|to)\s*(\d{1,3})(?:\s*years?(?:\s*old)?)?$")
_AGE_SINGLE = re.compile(r"^(\d{1,3})\s*(\+|s|years?(?:\s*old)?)?$")
_LIST_SEPARATORS = re.compile(r"[,|;/]")


class AnswerValidationError(ValueError):
    """An LLM answer that cannot be used; `reason` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class EdgeChoice:
    """A validated edge answer: the chosen candidates as item ids."""

    liked: int
    disliked: int


def extract_json_object(text: object) -> dict[str, Any]:
    """The first JSON object in `text`: bare, in a code fence, or after leading chatter."""
    if not isinstance(text, str):
        raise AnswerValidationError(f"answer is {type(text).__name__}, not text")
    text = text[:MAX_ANSWER_CHARS]
    if not text.strip():
        raise AnswerValidationError("empty answer")
    pieces = [match.group(1) for match in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for piece in pieces:
        starts = [i for i, ch in enumerate(piece) if ch == "{"][:MAX_OBJECT_STARTS]
        for start in starts:
            try:
                value, _ = decoder.raw_decode(piece, start)
            except (ValueError, RecursionError):
                continue
            if isinstance(value, dict):
                return value
    raise AnswerValidationError("no JSON object found in the answer")


def _normalised_keys(obj: dict[str, Any]) -> dict[str, Any]:
    """Lower-case keys with `_` for spaces/hyphens, plus the aliases models commonly use."""
    normalised: dict[str, Any] = {}
    for key, value in obj.items():
        name = re.sub(r"[\s\-]+", "_", str(key).strip().lower())
        normalised.setdefault(_KEY_ALIASES.get(name, name), value)
    return normalised


def _require(obj: dict[str, Any], fields: Sequence[str]) -> None:
    missing = [field for field in fields if field not in obj]
    if missing:
        raise AnswerValidationError(f"missing field(s) {', '.join(missing)}")


def _is_null(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in NULL_TOKENS)


def _clean_text(value: str) -> str:
    return " ".join(value.split())[:MAX_TEXT_CHARS].strip()


def _text_field(field: str, value: object) -> str | None:
    """A string field: stripped and capped; lists of strings are joined; nulls -> None."""
    if _is_null(value):
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = ", ".join(v for v in value if not _is_null(v))
    if not isinstance(value, str):
        raise AnswerValidationError(f"{field}: expected a string, got {type(value).__name__}")
    cleaned = _clean_text(value)
    return None if _is_null(cleaned) else cleaned


def _list_field(field: str, value: object) -> list[str]:
    """A list of strings; a separated string is split; de-duplicated, capped."""
    if _is_null(value):
        return []
    if isinstance(value, str):
        value = _LIST_SEPARATORS.split(value)
    if not isinstance(value, list):
        raise AnswerValidationError(f"{field}: expected a list of strings, got {type(value).__name__}")
    kept: list[str] = []
    seen: set[str] = set()
    for entry in value:
        if not isinstance(entry, str):
            raise AnswerValidationError(f"{field}: expected strings, got {type(entry).__name__}")
        cleaned = _clean_text(entry)
        if _is_null(cleaned) or cleaned.lower() in seen:
            continue
        seen.add(cleaned.lower())
        kept.append(cleaned)
    return kept[:MAX_LIST_ITEMS]


def _integer_field(field: AnswerField, value: object) -> int | None:
    """An integer in the field's range; a bracket ("25-34") becomes its midpoint, "30s" becomes 35."""
    name, low_bound, high_bound = field.name, field.minimum, field.maximum
    if _is_null(value):
        return None
    number: float
    if isinstance(value, bool):
        raise AnswerValidationError(f"{name}: expected a number, got a boolean")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise AnswerValidationError(f"{name}: not a finite number")
        number = value
    elif isinstance(value, str):
        text = value.strip().lower()
        span, single = _AGE_SPAN.match(text), _AGE_SINGLE.match(text)
        if span:
            low, high = int(span.group(1)), int(span.group(2))
            if low > high:
                raise AnswerValidationError(f"{name}: bracket '{value[:40]}' is reversed")
            number = (low + high) // 2
        elif single:
            number = int(single.group(1)) + (5 if single.group(2) == "s" else 0)
        else:
            raise AnswerValidationError(f"{name}: '{value[:40]}' is not an age or bracket")
    else:
        raise AnswerValidationError(f"{name}: expected a number, got {type(value).__name__}")
    if not low_bound <= number <= high_bound:
        raise AnswerValidationError(f"{name}: {number} outside {low_bound}-{high_bound}")
    return int(number)


def _choice_field(field: AnswerField, value: object) -> str | None:
    """One of the field's choices, through the aliases models use ("M", "woman")."""
    if _is_null(value):
        return None
    if not isinstance(value, str):
        raise AnswerValidationError(f"{field.name}: expected a string, got {type(value).__name__}")
    aliases = _CHOICE_ALIASES.get(field.name, {})
    accepted = dict.fromkeys([*field.choices, *aliases.values()])
    text = " ".join(value.strip().lower().split())
    choice = aliases.get(text, text)
    if choice not in accepted:
        raise AnswerValidationError(f"{field.name}: '{value[:40]}' is not {'/'.join(accepted)}")
    return choice


def _candidate_number(field: str, value: object, n_candidates: int) -> int:
    """A 1-based candidate number; accepts `3` and `"3"`."""
    if isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) <= 4:  # isdigit() admits "²", which int() refuses
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AnswerValidationError(f"{field}: expected a candidate number, got {type(value).__name__}")
    if not 1 <= value <= n_candidates:
        raise AnswerValidationError(f"{field}: {value} is not a candidate number (1-{n_candidates})")
    return value


def validate_edge_answer(
    text: object, candidate_items: Sequence[int], history_items: Collection[int]
) -> EdgeChoice:
    """Check an edge answer against this user's numbered candidates and training history."""
    answer = _normalised_keys(extract_json_object(text))
    _require(answer, EDGE_ANSWER.names)
    chosen: dict[str, int] = {}
    for field in EDGE_ANSWER.names:
        number = _candidate_number(field, answer[field], len(candidate_items))
        item = int(candidate_items[number - 1])
        if item in history_items:
            raise AnswerValidationError(f"{field}: candidate {number} is already in the user's history")
        chosen[field] = item
    if chosen["liked"] == chosen["disliked"]:
        raise AnswerValidationError("liked and disliked are the same candidate")
    return EdgeChoice(**chosen)


#: The parser of each field kind (candidate numbers need the user's candidates: see above).
_PARSERS: dict[str, Callable[[AnswerField, object], Any]] = {
    schemas.INTEGER: _integer_field,
    schemas.CHOICE: _choice_field,
    schemas.TEXT: lambda field, value: _text_field(field.name, value),
    schemas.TEXT_LIST: lambda field, value: _list_field(field.name, value),
}


def _fields(shape: schemas.AnswerShape, text: object) -> dict[str, Any]:
    """The answer's fields parsed and normalised as its shape says, in the shape's order."""
    answer = _normalised_keys(extract_json_object(text))
    _require(answer, shape.names)
    return {field.name: _PARSERS[field.kind](field, answer[field.name]) for field in shape.fields}


def validate_profile_answer(text: object) -> dict[str, Any]:
    """A normalised user profile; raises when no field carries information."""
    profile = _fields(PROFILE_ANSWER, text)
    if not any(profile.values()):
        raise AnswerValidationError("every profile field is empty or unknown")
    return profile


def validate_attribute_answer(text: object) -> dict[str, str | None]:
    """Normalised director / country / language; raises when all three are unknown."""
    attributes = _fields(ATTRIBUTE_ANSWER, text)
    if not any(attributes.values()):
        raise AnswerValidationError("director, country and language are all empty or unknown")
    return attributes
