"""Validator behaviour on hand-written good and bad LLM answers, plus a fuzz of the one-exception contract."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrec.augment.validate import (
    AnswerValidationError,
    EdgeChoice,
    extract_json_object,
    validate_attribute_answer,
    validate_edge_answer,
    validate_profile_answer,
)

CANDIDATES = [40, 41, 42, 43, 44]
HISTORY = {1, 2, 3}


def _profile(**overrides: object) -> str:
    answer = {
        "age": 31,
        "gender": "male",
        "liked_genres": ["Drama", "Comedy"],
        "disliked_genres": ["Horror"],
        "liked_directors": ["Steven Spielberg"],
        "country": "United States",
        "language": "English",
    }
    answer.update(overrides)
    return json.dumps(answer)


@pytest.mark.parametrize(
    "text",
    [
        '{"liked": 2, "disliked": 5}',
        '```json\n{"liked": 2, "disliked": 5}\n```',
        'Sure! Here is my answer: {"liked": "2", "disliked": 5} Hope it helps.',
        '{"Liked": 2, "Disliked": 5}',
        'garbage {not json} then {"liked": 2, "disliked": 5}',
    ],
)
def test_edge_answers_accepted_map_numbers_to_items(text: str) -> None:
    assert validate_edge_answer(text, CANDIDATES, HISTORY) == EdgeChoice(liked=41, disliked=44)


@pytest.mark.parametrize(
    ("text", "reason_part"),
    [
        ('{"liked": 6, "disliked": 1}', "not a candidate number (1-5)"),
        ('{"liked": 0, "disliked": 1}', "not a candidate number"),
        ('{"liked": 3, "disliked": 3}', "same candidate"),
        ('{"liked": 2}', "missing field(s) disliked"),
        ('{"liked": "two", "disliked": 1}', "expected a candidate number"),
        ('{"liked": true, "disliked": 1}', "expected a candidate number"),
        ('{"liked": 2.5, "disliked": 1}', "expected a candidate number"),
        ('{"liked": 2, "disliked": 1', "no JSON object"),
        ("2::5", "no JSON object"),
        ("", "empty answer"),
        ("[1, 2]", "no JSON object"),
    ],
)
def test_edge_answers_rejected_with_reason(text: str, reason_part: str) -> None:
    with pytest.raises(AnswerValidationError) as caught:
        validate_edge_answer(text, CANDIDATES, HISTORY)
    assert reason_part in caught.value.reason


def test_edge_choice_in_history_is_rejected() -> None:
    # A stale candidates file can contain a training item; the validator must catch it.
    with pytest.raises(AnswerValidationError, match="already in the user's history"):
        validate_edge_answer('{"liked": 1, "disliked": 2}', [2, 41, 42], HISTORY)


def test_profile_normalisation() -> None:
    profile = validate_profile_answer(
        _profile(age="25-34", gender=" Female ", liked_genres="Drama| Comedy |drama",
                 disliked_genres=[], liked_directors=["unknown"], country="  USA ", language="Unknown")
    )
    assert profile == {
        "age": 29, "gender": "female", "liked_genres": ["Drama", "Comedy"], "disliked_genres": [],
        "liked_directors": [], "country": "USA", "language": None,
    }


@pytest.mark.parametrize(
    ("age", "expected"), [(31, 31), ("40", 40), ("30s", 35), (27.0, 27), ("unknown", None), ("", None)]
)
def test_profile_age_forms(age: object, expected: int | None) -> None:
    assert validate_profile_answer(_profile(age=age))["age"] == expected


def test_profile_keys_from_the_original_prompt_are_understood() -> None:
    answer = {"age": 20, "gender": "M", "liked genre": "Action", "disliked genre": "Romance",
              "liked directors": "Nolan", "country": "UK", "language": "English"}
    profile = validate_profile_answer(json.dumps(answer))
    assert profile["gender"] == "male" and profile["liked_genres"] == ["Action"]


def test_profile_strings_are_capped() -> None:
    profile = validate_profile_answer(_profile(country="x" * 500, liked_genres=[f"g{i}" for i in range(50)]))
    assert len(profile["country"]) == 120 and len(profile["liked_genres"]) == 10


@pytest.mark.parametrize(
    ("overrides", "reason_part"),
    [
        ({"age": 430}, "age: 430 outside"),
        ({"age": "old"}, "not an age or bracket"),
        ({"age": [30]}, "age: expected a number"),
        ({"gender": "robot"}, "not male/female/other"),
        ({"gender": 1}, "gender: expected a string"),
        ({"liked_genres": {"a": 1}}, "liked_genres: expected a list"),
        ({"liked_genres": ["Drama", 3]}, "liked_genres: expected strings"),
        ({"country": 7}, "country: expected a string"),
    ],
)
def test_profile_rejections(overrides: dict[str, object], reason_part: str) -> None:
    with pytest.raises(AnswerValidationError) as caught:
        validate_profile_answer(_profile(**overrides))
    assert reason_part in caught.value.reason


def test_profile_missing_fields_and_all_unknown() -> None:
    with pytest.raises(AnswerValidationError, match="missing field"):
        validate_profile_answer('{"age": 30, "gender": "male"}')
    empty = dict.fromkeys(["age", "gender", "country", "language"], "unknown")
    empty.update(liked_genres=[], disliked_genres=[], liked_directors=[])
    with pytest.raises(AnswerValidationError, match="every profile field"):
        validate_profile_answer(json.dumps(empty))


def test_attribute_answers() -> None:
    text = '```\n{"director": ["Lana Wachowski", "Lilly Wachowski"], "country": "USA", "language": "n/a"}\n```'
    assert validate_attribute_answer(text) == {
        "director": "Lana Wachowski, Lilly Wachowski", "country": "USA", "language": None
    }
    with pytest.raises(AnswerValidationError, match="all empty or unknown"):
        validate_attribute_answer('{"director": "", "country": "unknown", "language": null}')
    with pytest.raises(AnswerValidationError, match="missing field"):
        validate_attribute_answer('{"director": "X"}')
    with pytest.raises(AnswerValidationError, match="director: expected a string"):
        validate_attribute_answer('{"director": 5, "country": "US", "language": "English"}')


def test_pathological_inputs_raise_only_the_validation_error() -> None:
    for text in ["{" * 100_000, '{"age": 1e999}', '{"age": NaN}', "9" * 10_000, None, b"{}", "{\"a\":" * 5000]:
        for validate in (validate_profile_answer, validate_attribute_answer):
            with pytest.raises(AnswerValidationError):
                validate(text)
    assert extract_json_object('{"a": {"b": [1, 2]}} trailing') == {"a": {"b": [1, 2]}}


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=12,
)
_answer_dicts = st.fixed_dictionaries(
    {}, optional={key: _json_values for key in
                  ["liked", "disliked", "age", "gender", "liked_genres", "disliked_genres",
                   "liked_directors", "country", "language", "director"]}
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), _answer_dicts.map(json.dumps), _json_values.map(json.dumps)))
def test_fuzz_only_answer_validation_error_escapes(text: str) -> None:
    for validate in (
        lambda t: validate_edge_answer(t, CANDIDATES, HISTORY),
        validate_profile_answer,
        validate_attribute_answer,
    ):
        try:
            validate(text)
        except AnswerValidationError as exc:
            assert exc.reason
