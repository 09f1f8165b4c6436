"""The in-process transformers backend, with real SmolLM2 generations."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import jsonschema
import pytest

from llmrec.backends import get_backend
from llmrec.backends.base import ChatRequest
from llmrec.backends.gguf_convert import ensure_converted, is_converted
from llmrec.bundled import smollm2_gguf_path
from llmrec.errors import BackendError, ConfigError
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
    # top_p 1: chat()'s default top_p of 0.1 keeps only the top token here, whatever the seed.
    wide = [ChatRequest(r.messages, dataclasses.replace(r.sampling, top_p=1.0, seed=s)) for r, s in
            zip([chat(PROMPTS[0], max_tokens=6, temperature=1.0)] * 3, (8, 9, 10))]  # fmt: skip
    others = smollm2.generate(wide)
    assert {c.text for c in others} - {first[0].text}, "every seed gave the same answer"


SCHEMA = {
    "type": "object",
    "properties": {"genre": {"type": "string", "maxLength": 20}, "year": {"type": "integer", "minimum": 1900, "maximum": 2030}},
    "required": ["genre", "year"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def prompt_only():
    """The fallback: the same model with the schema written into the prompt instead of constraining decoding."""
    backend = get_backend("transformers", model="smollm2-135m", batch_size=4, constrained=False)
    yield backend
    backend.close()


def test_constrained_and_free_rows_share_a_batch(smollm2):
    question = "Name a movie genre and a year, as JSON."
    constrained, free = smollm2.generate([chat(question, max_tokens=40, json_schema=SCHEMA), chat(question, max_tokens=12)])
    answer = json.loads(constrained.text)  # the whole text is the JSON value
    jsonschema.validate(answer, SCHEMA)
    assert constrained.finish_reason == "stop"
    assert free.text.strip() and free.finish_reason == "length"  # the free row was not held to any grammar
    # Constrained requests carry no schema text in the prompt (the grammar does the work).
    assert constrained.prompt_tokens == free.prompt_tokens


def test_prompt_only_fallback_spells_the_schema_out_and_is_keyed_apart(smollm2, prompt_only, caplog):
    with caplog.at_level(logging.INFO, logger="llmrec.backends.transformers_backend"):
        plain, with_schema = prompt_only.generate([chat(PROMPTS[1], max_tokens=2), chat(PROMPTS[1], max_tokens=2, json_schema=SCHEMA)])
    assert "answers not constrained (constrained=false)" in caplog.text
    assert with_schema.prompt_tokens > plain.prompt_tokens + 10
    messages = chat(PROMPTS[1], json_schema=SCHEMA).messages_with_schema_in_prompt()
    assert messages[0]["role"] == "system" and json.dumps(SCHEMA, sort_keys=True) in messages[0]["content"]
    # The completion store keys by revision: constrained and prompt-only answers never mix.
    assert smollm2.model_revision.endswith("+json:xgrammar") and prompt_only.model_revision != smollm2.model_revision


def test_rejected_schema_fails_only_its_request(smollm2, caplog):
    bad = {"type": "object", "properties": {"year": {"type": "integer", "minimum": 2000, "maximum": 1900}}}
    with caplog.at_level(logging.WARNING, logger="llmrec.backends.transformers_backend"):
        rejected, answered = smollm2.generate([chat("Name a year.", max_tokens=20, json_schema=bad),
                                               chat("Name a genre.", max_tokens=40, json_schema=SCHEMA)])  # fmt: skip
    assert rejected.finish_reason == "error" and rejected.completion_tokens == 0
    assert "xgrammar rejects the JSON schema: Invalid range: minimum greater than maximum" in rejected.text
    assert "constrained=false" in rejected.text
    jsonschema.validate(json.loads(answered.text), SCHEMA)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "request 0 (model smollm2-135m)" in warnings[0] and "\n" not in warnings[0]


def test_answer_cut_inside_its_json_is_reported(smollm2, caplog):
    with caplog.at_level(logging.WARNING, logger="llmrec.backends.transformers_backend"):
        (cut,) = smollm2.generate([chat("Name a movie genre and a year, as JSON.", max_tokens=4, json_schema=SCHEMA)])
    assert cut.finish_reason == "length" and cut.completion_tokens == 4
    with pytest.raises(ValueError):
        json.loads(cut.text)
    assert "cut at max_tokens=4 inside its JSON; raise max_tokens" in caplog.text


def test_model_not_available_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backend = get_backend("transformers", model="HuggingFaceTB/SmolLM2-360M-Instruct-not-downloaded")
    with pytest.raises(BackendError) as caught:
        backend.generate([chat("Hi")])
    message = str(caught.value)
    assert "\n" not in message and "HuggingFaceTB/SmolLM2-360M-Instruct-not-downloaded" in message
    assert "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in message


def test_tokenizer_the_engine_cannot_map_is_one_line(tmp_path):
    # A real model (SmolLM2's weights) paired with a real tokenizer class xgrammar has no mapping for.
    folder = ensure_converted(smollm2_gguf_path())
    model = tmp_path / "smollm2-byt5"
    model.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        (model / name).symlink_to(folder / name)
    template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    (model / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "ByT5Tokenizer", "chat_template": template}))
    backend = get_backend("transformers", model=str(model))
    with pytest.raises(BackendError) as caught:
        backend.generate([chat("Hi", json_schema=SCHEMA)])
    message = str(caught.value)
    assert "\n" not in message and "cannot map the tokenizer of model" in message and "ByT5Tokenizer" in message
    assert "--backend-option constrained=false" in message
    # The fallback the message names does work with that tokenizer.
    fallback = get_backend("transformers", model=str(model), constrained=False)
    (answer,) = fallback.generate([chat("Hi", max_tokens=3, json_schema=SCHEMA)])
    assert answer.completion_tokens >= 1


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
    with pytest.raises(ConfigError, match="quantize must be none or int8"):
        get_backend("transformers", quantize="int4")


def test_the_gemma_alias_is_the_assembled_gguf_and_its_revision_is_its_checksum() -> None:
    """The bundled Gemma 3 270M resolves to the GGUF its package assembles (checked by the package's sha256).

    Converting it (~7 min on this CPU) and scoring with it are measured in docs/results.md, not here.
    """
    from llmrec.backends import get_backend
    from llmrec.backends.aliases import resolve_model
    from llmrec.backends.gguf_convert import gguf_revision

    path = Path(resolve_model("gemma3-270m"))
    assert path.name == "gemma-3-270m-q4_k_m.gguf" and path.stat().st_size > 200_000_000
    with path.open("rb") as handle:
        assert handle.read(4) == b"GGUF"
    backend = get_backend("transformers", model="gemma3-270m")
    assert backend.can_score and backend.model_revision.startswith(gguf_revision(str(path)))


def _full_forward_logprob(backend, prompt: str, continuation: str) -> float:
    """log P(continuation | prompt) from one plain forward of prompt + continuation: no cache, no batching."""
    import torch

    tokenizer = backend._tokenizer
    prefix = tokenizer(prompt, add_special_tokens=True, return_token_type_ids=False)["input_ids"]
    suffix = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = backend._model(torch.tensor([prefix + suffix])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(float(logprobs[len(prefix) - 1 + k, token]) for k, token in enumerate(suffix))


def test_scores_equal_a_plain_forward_on_both_batched_paths(smollm2):
    from llmrec.backends.base import SCORED, ScoreRequest, read_score

    history = "Movies this user watched and liked:\n- Heat (1995)\n- Alien (1979)\n- Fargo (1996)\n"
    other = "Movies this user watched and liked:\n- Toy Story (1995)\n"
    titles = ["Casablanca (1942)", "The Matrix (1999), Action|Sci-Fi", "Up (2009)"]
    # multi-token continuations after one prompt (likelihood), and prompts that end in a question whose
    # answers are single tokens, two users' worth, so the shared-prefix batches are cut between users (yesno)
    requests = [ScoreRequest(history + "Next:", " " + title) for title in titles]
    for user in (history, other):
        for title in titles:
            question = f"{user}\nWould this user enjoy {title}? Answer yes or no.\nAnswer:"
            requests += [ScoreRequest(question, " yes"), ScoreRequest(question, " no")]
    answers = dict(smollm2.score_iter(requests))  # loads the model
    assert all(len(smollm2._tokenizer(r.continuation, add_special_tokens=False)["input_ids"]) == 1 for r in requests[3:])
    assert sorted(answers) == list(range(len(requests)))
    assert {answer.finish_reason for answer in answers.values()} == {SCORED}
    for index, request in enumerate(requests):
        expected = _full_forward_logprob(smollm2, request.prompt, request.continuation)
        assert read_score(answers[index]) == pytest.approx(expected, abs=1e-4), (index, request)
    # the scores differ between questions, so the equality above compares real numbers
    assert len({round(read_score(answers[i]), 3) for i in range(3, len(requests))}) > 6
