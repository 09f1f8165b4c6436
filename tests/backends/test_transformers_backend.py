"""The in-process transformers backend, with real SmolLM2 generations."""

from __future__ import annotations

import json

import pytest

from llmrec.backends import get_backend
from llmrec.backends.gguf_convert import ensure_converted, is_converted
from llmrec.bundled import smollm2_gguf_path
from llmrec.errors import ConfigError
from tests.backends.conftest import chat

PROMPTS = [
    "What is the capital of France? One word.",
    "Name a colour.",
    "Write a haiku about a long train journey through snowy mountains at night.",
]


def test_batch_equals_one_at_a_time_with_left_padding(smollm2):
    requests = [chat(p, max_tokens=8) for p in PROMPTS]
    batched = smollm2.generate(requests)
    single = [smollm2.generate([request])[0] for request in requests]
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.text.strip() for c in batched)
    # Prompts of different lengths were padded to one width: counts are per row.
    assert len({c.prompt_tokens for c in batched}) == 3
    tokenizer = smollm2._tokenizer
    for request, completion in zip(requests, batched):
        rendered = tokenizer.apply_chat_template(list(request.messages), tokenize=False, add_generation_prompt=True)
        assert completion.prompt_tokens == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])


def test_finish_reasons_and_token_counts(smollm2):
    capital, colour = smollm2.generate([chat(PROMPTS[0], max_tokens=12), chat(PROMPTS[2], max_tokens=3)])
    # SmolLM2 answers the capital question in a short sentence, then stops.
    assert "Paris" in capital.text
    assert capital.finish_reason == "stop"
    assert capital.completion_tokens < 12
    assert colour.finish_reason == "length"
    assert colour.completion_tokens == 3


def test_stop_string_trims_answer(smollm2):
    (full,) = smollm2.generate([chat(PROMPTS[1], max_tokens=10)])
    stop = full.text.split()[2]
    (stopped,) = smollm2.generate([chat(PROMPTS[1], max_tokens=10, stop=(stop,))])
    assert stopped.text == full.text[: full.text.index(stop)]
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < full.completion_tokens


def test_seeded_sampling_is_reproducible(smollm2):
    requests = [chat(p, max_tokens=6, temperature=1.0, seed=7) for p in PROMPTS[:2]]
    first = smollm2.generate(requests)
    again = smollm2.generate(requests)
    assert [c.text for c in first] == [c.text for c in again]
    # ... and the seed is really used: other seeds sample other answers (fixed seeds, so no flakiness).
    others = smollm2.generate([chat(PROMPTS[0], max_tokens=6, temperature=1.0, seed=s) for s in (8, 9, 10)])
    assert {c.text for c in others} - {first[0].text}, "every seed gave the same answer"


def test_schema_goes_into_the_prompt(smollm2):
    schema = {"type": "object", "properties": {"genre": {"type": "string"}}, "required": ["genre"]}
    plain, with_schema = smollm2.generate([chat(PROMPTS[1], max_tokens=2), chat(PROMPTS[1], max_tokens=2, json_schema=schema)])
    assert with_schema.prompt_tokens > plain.prompt_tokens + 10
    messages = chat(PROMPTS[1], json_schema=schema).messages_with_schema_in_prompt()
    assert messages[0]["role"] == "system" and json.dumps(schema, sort_keys=True) in messages[0]["content"]


def test_converted_folder_is_reused_and_decodes_newlines():
    folder = ensure_converted(smollm2_gguf_path())
    assert is_converted(folder)
    mtime = (folder / "model.safetensors").stat().st_mtime
    assert ensure_converted(smollm2_gguf_path()) == folder
    assert (folder / "model.safetensors").stat().st_mtime == mtime
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("line one\nline two", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == "line one\nline two"
    assert tokenizer.eos_token == "<|im_end|>"


def test_unknown_option_and_missing_gguf_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no option"):
        get_backend("transformers", base_url="http://x")
    with pytest.raises(ConfigError, match="not found"):
        get_backend("transformers", model=str(tmp_path / "absent.gguf"))
    with pytest.raises(ConfigError, match="unknown backend"):
        get_backend("llamafile")
