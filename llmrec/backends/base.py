"""The one small interface every LLM backend implements.

A backend takes a whole batch of chat requests and yields completions as
they finish (so the completion store can commit each answer the moment it
arrives); batching, concurrency and retries live below this line, as in
vLLM's offline API. `generate` collects them back into input order.

A backend that can read its model's token probabilities also *scores*:
`score_iter` takes `ScoreRequest`s (log P(continuation | prompt), plain text,
no chat template) and yields the same `Completion` records, so scores go
through the completion store exactly like answers (one claim per request,
resumed after a kill, exported and imported). Scoring asks about one
candidate at a time, so no answer can depend on a candidate's position in a
list: the way around small models' position bias (`llmrec.augment.scoring`).
"""

from __future__ import annotations

import abc
import dataclasses
import json
import math
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from llmrec.errors import BackendError, ConfigError

#: `Completion.finish_reason` of a score (its text is `score_text(...)`).
SCORED = "score"
#: `Completion.finish_reason` of a request the backend could not answer this time (its text says why).
#: The completion store never keeps such an answer, so the next run asks again; every other
#: `finish_reason` ("stop", "length", SCORED, whatever a server reports) is an answer, stored for good
#: even when it is not valid JSON (the pipeline validates it and asks once for a repair).
FAILED = "error"


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


@dataclasses.dataclass(frozen=True)
class ScoreRequest:
    """Ask for log P(`continuation` | `prompt`): the sum of the continuation's token log-probabilities.

    Plain text, no chat template (base models have none, and a score must not
    depend on how a template wraps it). The prompt is tokenized with the
    model's beginning-of-sequence token and the continuation on its own, as
    lm-evaluation-harness does; `continuation` should start at a word
    boundary (a leading space or newline) so both tokenizations agree.
    """

    prompt: str
    continuation: str

    def __post_init__(self) -> None:
        if not self.continuation:
            raise ConfigError("score request: the continuation is empty (nothing to score)")

    def canonical(self) -> str:
        """A stable text form for the store key; the "score" key keeps it apart from every chat request."""
        return json.dumps({"score": {"prompt": self.prompt, "continuation": self.continuation}},
                          sort_keys=True, ensure_ascii=False)  # fmt: skip


def score_text(logprob: float) -> str:
    """How a score is written into `Completion.text` (and the store): the log-probability, round-trippable."""
    return json.dumps({"logprob": float(logprob)})


def read_score(completion: Completion) -> float | None:
    """The log-probability a scoring completion carries, or None when it is not a finite score."""
    if completion.finish_reason != SCORED:
        return None
    try:
        value = json.loads(completion.text)["logprob"]
    except (ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


@dataclasses.dataclass
class Completion:
    """A backend's answer to one request, with usage for throughput reports.

    `finish_reason`: "stop" (ended by the model or a stop string), "length" (cut
    at `max_tokens`), `SCORED` (a score), or `FAILED` ("error": no answer this
    time, `text` says why; never stored, so a rerun retries it). A backend
    reports a failure of one request as `FAILED` and lets the others run; it
    raises `BackendError` only when nothing can be answered.
    """

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
    #: Whether `score_iter` works (checked before any work is sent); an instance may decide by its options.
    can_score: bool = False
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

    def score_iter(self, requests: Sequence[ScoreRequest]) -> Iterator[tuple[int, Completion]]:
        """Yield `(index into requests, completion)` whose text is `score_text(log P(continuation | prompt))`.

        `finish_reason` is `SCORED`; a request the model cannot score (e.g. longer
        than its context) gets `finish_reason="error"` and the reason as its text.
        """
        raise BackendError(
            f"{self.name} backend cannot score candidates (it gives no token log-probabilities); "
            "use edge_method = \"choose\", or the transformers, vllm or openai backend"
        )

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
