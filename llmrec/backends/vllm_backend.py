"""`vllm` backend: vLLM's continuous batching, as a server or in-process.

Three ways to run, picked in this order:
1. `base_url` given: talk to running vLLM server(s) (repeat it for replicas).
2. `vllm` importable in this Python (a GPU machine without DGL): the
   in-process `vllm.LLM` batch API. This path cannot be tested by the CI
   tests, which run in the DGL venv while vLLM lives in its own (it pins a
   different torch); it was checked by hand from `.venv-vllm`. vLLM spawns
   its engine process, so the calling script needs the
   `if __name__ == "__main__":` guard.
3. Otherwise: start `python -m vllm.entrypoints.openai.api_server` from the
   vLLM venv (`.venv-vllm`, or `$LLMREC_VLLM_PYTHON`) on a free local port,
   wait for it, and stop it on `close()` / exit / Ctrl-C (`vllm_server`).
The server is started (or the engine built) on the first request, so a run
served entirely from the completion store never pays for it.

How the engine runs follows `device` (`auto`: CUDA when torch here sees a
GPU): on CPU float32 and eager mode, on CUDA the model's dtype and CUDA
graphs; `tensor_parallel_size`, `data_parallel_size` (server only) and
`gpu_memory_utilization` are passed on when set (`EngineSettings`). All are
`--backend-option KEY=VALUE` on the command line.

In server mode this is the OpenAI-compatible client of `http_client` plus
server management; JSON schemas always go through vLLM's structured output
(`response_format: json_schema`), i.e. constrained decoding. vLLM 0.32 cannot
load GGUF, so GGUF models are served from their converted folder.

Scores (`score_iter`, log P(continuation | prompt)) come from the server's
completions endpoint with the prompt echoed (`OpenAICompatibleBackend.score_body`)
or, in-process, from `prompt_logprobs`; either way vLLM computes a scored
prompt in full (it skips its prefix cache for prompt log-probabilities).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from llmrec.backends import register_backend
from llmrec.backends.aliases import resolve_model
from llmrec.backends.base import FAILED, SCORED, ChatRequest, Completion, ScoreRequest, score_text
from llmrec.backends.gguf_convert import gguf_revision, is_gguf, weights_folder
from llmrec.backends.http_client import HTTPOptions, OpenAICompatibleBackend
from llmrec.backends.vllm_server import EngineSettings, VLLMServer
from llmrec.devices import resolve_device

logger = logging.getLogger(__name__)

# Requests per `LLM.chat` call in-process: answers reach the store per chunk.
_IN_PROCESS_CHUNK = 256


@register_backend("vllm")
class VLLMBackend(OpenAICompatibleBackend):
    """vLLM behind the common backend interface (see the module docstring for the modes)."""

    def __init__(
        self,
        model: str = "smollm2-135m",
        base_url: str | Sequence[str] | None = None,
        *,
        python: str | None = None,
        in_process: bool | None = None,
        device: str = "auto",
        dtype: str | None = None,
        enforce_eager: bool | None = None,
        tensor_parallel_size: int | None = None,
        data_parallel_size: int | None = None,
        gpu_memory_utilization: float | None = None,
        server_args: Sequence[str] = (),
        start_timeout_s: float = 300.0,
        api_key_env: str | None = None,
        options: HTTPOptions = HTTPOptions(),
        revision: str | None = None,
        send_seed: bool | None = None,
    ) -> None:
        base_urls = [base_url] if isinstance(base_url, str) else list(base_url or [])
        # The device decides the engine defaults (see EngineSettings); it is explicit
        # so a test can build a GPU command line on a CPU host.
        self.engine = EngineSettings(
            resolve_device(device), dtype, enforce_eager, tensor_parallel_size, data_parallel_size,
            gpu_memory_utilization,
        )  # fmt: skip
        source = resolve_model(model)
        if is_gguf(source) and revision is None:
            revision = gguf_revision(source)
        super().__init__(
            model,
            base_urls,
            options=options,
            api_key=os.environ.get(api_key_env) if api_key_env else None,
            schema_mode="response_format",
            revision=revision,
            # A server started here without a GPU is vLLM-CPU, whose engine dies on
            # seeded concurrent sampling; a given --base-url is assumed to cope.
            send_seed=send_seed if send_seed is not None else bool(base_urls) or self.engine.device == "cuda",
        )
        self._source = source
        self.python = python
        self.server_args = list(server_args)
        self.start_timeout_s = start_timeout_s
        if in_process is None:
            in_process = not base_urls and importlib.util.find_spec("vllm") is not None
        self.in_process = in_process
        if in_process:
            self.engine.llm_kwargs()  # refuses settings one in-process engine cannot honour, before any work
        engine_options = (dtype, enforce_eager, tensor_parallel_size, data_parallel_size, gpu_memory_utilization)
        if base_urls and any(option is not None for option in engine_options):
            logger.warning("vllm: dtype, enforce_eager, parallel sizes and gpu_memory_utilization apply to a server "
                           "llmrec starts or to in-process vLLM, not to the --base-url server(s)")  # fmt: skip
        self.server: VLLMServer | None = None
        self._llm: Any = None

    def _weights_path(self) -> str:
        return weights_folder(self._source)

    def server_for(self, weights_path: str) -> VLLMServer:
        """The server this backend starts (not started yet), with the device's engine settings."""
        return VLLMServer(
            weights_path, self.model_id, python=self.python, engine=self.engine, extra_args=self.server_args,
            start_timeout_s=self.start_timeout_s,
        )  # fmt: skip

    def _start_server(self) -> None:
        self.server = self.server_for(self._weights_path()).start()
        self.client = self.client_for([self.server.base_url])

    def generate_iter(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, Completion]]:
        if not requests:
            return
        if self.in_process:
            yield from self._generate_in_process(requests)
            return
        if self.client is None:
            self._start_server()
        yield from super().generate_iter(requests)

    def _generate_in_process(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, Completion]]:
        """The offline `vllm.LLM.chat` API (needs vllm in this Python; not testable on the CPU CI)."""
        from vllm import SamplingParams as VllmSamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        llm = self._engine()
        for start in range(0, len(requests), _IN_PROCESS_CHUNK):
            chunk = requests[start : start + _IN_PROCESS_CHUNK]
            params = [
                VllmSamplingParams(
                    temperature=r.sampling.temperature, top_p=r.sampling.top_p, max_tokens=r.sampling.max_tokens,
                    seed=r.sampling.seed, stop=list(r.sampling.stop) or None,
                    structured_outputs=StructuredOutputsParams(json=r.json_schema) if r.json_schema else None,
                )  # fmt: skip
                for r in chunk
            ]
            started = time.perf_counter()
            outputs = llm.chat([list(r.messages) for r in chunk], params, use_tqdm=False)
            latency = time.perf_counter() - started
            for offset, output in enumerate(outputs):
                answer = output.outputs[0]
                yield start + offset, Completion(
                    answer.text, answer.finish_reason or "unknown", len(output.prompt_token_ids or []),
                    len(answer.token_ids), latency,
                )  # fmt: skip

    def score_iter(self, requests: Sequence[ScoreRequest]) -> Iterator[tuple[int, Completion]]:
        """Scores: the server's completions endpoint (`OpenAICompatibleBackend.score_iter`) or in-process prompt logprobs."""
        if not requests:
            return
        if self.in_process:
            yield from self._score_in_process(requests)
            return
        if self.client is None:
            self._start_server()
        yield from super().score_iter(requests)

    def _score_in_process(self, requests: Sequence[ScoreRequest]) -> Iterator[tuple[int, Completion]]:
        """`vllm.LLM.generate` with `prompt_logprobs=0` on token ids (needs vllm in this Python).

        Tokenized here as the transformers backend does (the prompt with the
        start token, the continuation on its own), so the continuation is
        exactly the last tokens and no text offsets are needed. Not run by the
        tests (vllm does not import beside DGL); checked by hand from
        `.venv-vllm` with vLLM-CPU 0.32 and the converted SmolLM2 on
        tests/backends/test_scoring_http.py's requests: the same sums as the
        server mode to every printed digit, the same token counts.
        """
        from vllm import SamplingParams as VllmSamplingParams
        from vllm.inputs import TokensPrompt

        llm = self._engine()
        tokenizer = llm.get_tokenizer()
        limit = llm.llm_engine.model_config.max_model_len
        params = VllmSamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        for start in range(0, len(requests), _IN_PROCESS_CHUNK):
            chunk = requests[start : start + _IN_PROCESS_CHUNK]
            ids = [(tokenizer.encode(r.prompt, add_special_tokens=True),
                    tokenizer.encode(r.continuation, add_special_tokens=False)) for r in chunk]  # fmt: skip
            runnable = []
            for offset, (prefix, suffix) in enumerate(ids):
                if not prefix or len(prefix) + len(suffix) >= limit:  # one position is left for the generated token
                    reason = "the prompt is empty and the tokenizer adds no start token" if not prefix else (
                        f"prompt + continuation exceed the model's {limit} positions")
                    yield start + offset, Completion(f"cannot score: {reason}", FAILED, len(prefix), len(suffix), 0.0)
                else:
                    runnable.append(offset)
            started = time.perf_counter()
            prompts = [TokensPrompt(prompt_token_ids=ids[k][0] + ids[k][1]) for k in runnable]
            outputs = llm.generate(prompts, params, use_tqdm=False) if prompts else []
            latency = time.perf_counter() - started
            for k, output in zip(runnable, outputs):
                prefix, suffix = ids[k]
                tokens, logprobs = output.prompt_token_ids, output.prompt_logprobs
                total = sum(logprobs[i][tokens[i]].logprob for i in range(len(prefix), len(tokens)))
                yield start + k, Completion(score_text(total), SCORED, len(prefix), len(suffix), latency)

    def _engine(self) -> Any:
        """The in-process `vllm.LLM`, built on first use."""
        from vllm import LLM

        if self._llm is None:
            self._llm = LLM(model=self._weights_path(), **self.engine.llm_kwargs())
        return self._llm

    def close(self) -> None:
        super().close()
        if self.server is not None:
            self.server.stop()
            self.server = None
            self.client = None
        self._llm = None
