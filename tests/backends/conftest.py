"""Fixtures for backend tests: one loaded SmolLM2 per session (real generations)."""

from __future__ import annotations

import pytest

from llmrec.backends import get_backend
from llmrec.backends.base import Backend, ChatRequest, SamplingParams


@pytest.fixture(scope="session")
def smollm2() -> Backend:
    """The transformers backend on the bundled SmolLM2 (converted once into LLMREC_MODELS_DIR)."""
    backend = get_backend("transformers", model="smollm2-135m", batch_size=4)
    yield backend
    backend.close()


def chat(
    text: str, *, max_tokens: int = 6, temperature: float = 0.0, seed: int | None = 0, stop: tuple[str, ...] = (), **extra
) -> ChatRequest:
    """A one-message request with short, greedy-by-default decoding."""
    sampling = SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed, stop=stop)
    return ChatRequest(({"role": "user", "content": text},), sampling, **extra)
