"""Helpers of the backend tests (the session's loaded SmolLM2, `smollm2`, is in tests/conftest.py)."""

from __future__ import annotations

from llmrec.backends.base import ChatRequest, SamplingParams
# The augment tests' small prepared run (real ml-latest-small users) for the CLI tests here, built once.
from tests.augment.conftest import prepared_run, small_dataset_dir  # noqa: F401 (fixtures)


def chat(
    text: str, *, max_tokens: int = 6, temperature: float = 0.0, seed: int | None = 0, stop: tuple[str, ...] = (), **extra
) -> ChatRequest:
    """A one-message request with short, greedy-by-default decoding."""
    sampling = SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed, stop=stop)
    return ChatRequest(({"role": "user", "content": text},), sampling, **extra)
