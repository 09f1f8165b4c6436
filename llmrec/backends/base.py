"""The one small interface every LLM backend implements.

A backend takes a whole batch of chat requests and yields completions as
they finish (so the completion store can commit each answer the moment it
arrives); batching, concurrency and retries live below this line, as in
vLLM's offline API. `generate` collects them back into input order.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from llmrec.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Decoding options; part of the completion-store key.

    Refuses nonsense at construction, as vLLM's `SamplingParams` does: a
    negative temperature would otherwise reach a backend that reads anything
    <= 0 as greedy, and a run would quietly decode differently from its config.
    """

    temperature: float = 0.6
    top_p: float = 0.1
    max_tokens: int = 256
    seed: int | None = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.temperature >= 0:  # also refuses NaN
            raise ConfigError(f"sampling: temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"sampling: top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ConfigError(f"sampling: max_tokens must be >= 1, got {self.max_tokens}")


@dataclasses.dataclass(frozen=True)
class ChatRequest:
    """One chat completion request.

    `messages` are `{"role": ..., "content": ...}` dicts. `json_schema`, when
    set, asks backends that can constrain decoding to return JSON of that
    schema; others get it in the prompt and the caller validates.
    """

    messages: tuple[dict[str, str], ...]
    sampling: SamplingParams = SamplingParams()
    json_schema: dict[str, Any] | None = None

    def canonical(self) -> str:
        """A stable text form of everything that decides the answer (for the store key)."""
        return json.dumps(
            {
                "messages": list(self.messages),
                "sampling": dataclasses.asdict(self.sampling),
                "json_schema": self.json_schema,
            },
            sort_keys=True,
            ensure_ascii=False,
        )

    def messages_with_schema_in_prompt(self) -> list[dict[str, str]]:
        """The messages, with the JSON schema (if any) spelled out in a system message.

        For backends that cannot constrain decoding (transformers, servers
        without `response_format`): the model is asked for JSON and the
        caller validates what comes back.
        """
        messages = [dict(message) for message in self.messages]
        if self.json_schema is None:
            return messages
        instruction = (
            "Answer with a single JSON value and nothing else. It must validate against "
            f"this JSON schema: {json.dumps(self.json_schema, sort_keys=True)}"
        )
        if messages and messages[0].get("role") == "system":
            messages[0]["content"] = f"{messages[0]['content']}\n\n{instruction}"
        else:
            messages.insert(0, {"role": "system", "content": instruction})
        return messages


@dataclasses.dataclass
class Completion:
    """A backend's answer to one request, with usage for throughput reports."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cached: bool = False


class Backend(abc.ABC):
    """Base class of LLM backends; subclasses register with `@register_backend`.

    A backend outside llmrec is found through the `llmrec.backends` entry-point
    group instead (see `docs/backends.md`); `get_backend(name, model=..., **options)`
    constructs either kind the same way.
    """

    name: ClassVar[str]
    #: The dataclass a family of backends takes as its `options` argument (the HTTP
    #: backends share `HTTPOptions`); `get_backend` gathers flat option keys that name
    #: its fields into it, so `--backend-option max_in_flight=64` stays flat.
    options_type: ClassVar[type[Any] | None] = None

    @property
    @abc.abstractmethod
    def model_id(self) -> str:
        """The resolved model (HF id, path or server model name)."""

    @property
    def model_revision(self) -> str:
        """A revision/fingerprint of the weights when known (part of the store key)."""
        return ""

    @abc.abstractmethod
    def generate_iter(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, Completion]]:
        """Yield `(index into requests, completion)` in completion order.

        Raises `BackendError` for fatal failures (unknown model, 401, context
        too long); transient ones are retried with bounded backoff first.
        """

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """All completions, in input order."""
        results: list[Completion | None] = [None] * len(requests)
        for index, completion in self.generate_iter(requests):
            results[index] = completion
        missing = [i for i, c in enumerate(results) if c is None]
        if missing:
            raise RuntimeError(f"{self.name} backend returned no completion for requests {missing[:5]}")
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Release servers, sessions or GPU memory held by the backend."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ServedModelBackend(Backend):
    """A backend whose model name and weights revision are settled when it is made.

    The HTTP backends and the Ray job name a model that a server or a batch
    job loads, so neither the name nor the revision (part of every store key)
    changes afterwards; they hold both here instead of each repeating them.
    """

    def __init__(self, model: str, revision: str | None = None) -> None:
        self._model_name = model
        self._revision = revision or ""

    @property
    def model_id(self) -> str:
        return self._model_name

    @property
    def model_revision(self) -> str:
        return self._revision
