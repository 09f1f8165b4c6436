"""`openai` backend: any OpenAI-compatible chat endpoint.

Ollama, llama.cpp's server, LM Studio, SGLang, TGI, vLLM or OpenAI itself:
give one or more `--base-url`s and the model name the server knows. The API
key is read from an environment variable (`--api-key-env`, default
`OPENAI_API_KEY`) and used only in request headers - never stored, logged or
shown. All the HTTP work (concurrency, replicas, retries) is in `http_client`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from llmrec.backends import register_backend
from llmrec.backends.http_client import HTTPOptions, OpenAICompatibleBackend
from llmrec.errors import ConfigError


@register_backend("openai")
class OpenAIBackend(OpenAICompatibleBackend):
    """An OpenAI-compatible server someone else runs."""

    def __init__(
        self,
        model: str,
        base_url: str | Sequence[str] = "https://api.openai.com/v1",
        *,
        options: HTTPOptions = HTTPOptions(),
        api_key_env: str = "OPENAI_API_KEY",
        schema_mode: str = "auto",
        revision: str | None = None,
    ) -> None:
        base_urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not base_urls:
            raise ConfigError("openai backend: at least one --base-url is needed")
        super().__init__(
            model, base_urls, options=options, api_key=os.environ.get(api_key_env) or None, schema_mode=schema_mode,
            revision=revision,
        )  # fmt: skip
