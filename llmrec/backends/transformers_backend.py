"""`transformers` backend: the embedded default, no server needed.

Runs the model in-process on CPU or GPU with batched `generate`. Prompts are
rendered with the model's chat template and LEFT-padded, so every row's last
prompt token sits at the same position and new tokens line up; a batch then
gives the same greedy answers as one request at a time.

GGUF files are converted once into a Hugging Face folder
(`gguf_convert.ensure_converted`) and the folder is loaded afterwards: loading
GGUF directly de-quantises every tensor on each start (30-50 s).

A request's JSON schema constrains decoding (`llmrec.backends.grammar`,
xgrammar): every answer is schema-valid JSON unless it is cut by
`max_tokens`. Rows of a batch may carry different schemas (one grammar matcher
per row). `constrained=False` (`--backend-option constrained=false`) is the
fallback for models the grammar engine cannot handle: the schema is written
into the prompt and the caller validates whatever comes back. The mode is
logged when the model loads and is part of `model_revision`, so the
completion store keeps constrained and prompt-only answers apart.

A schema the engine rejects fails only its own requests: each gets a
completion with `finish_reason="error"` and the reason as its text (the
augmentation pipeline records it as a failed answer).

Sampling is seeded with `torch.manual_seed(seed)` before each batch, so a
rerun of the same batch reproduces it; temperature 0 means greedy decoding.

Scoring (`score_iter`) groups requests by prompt. A prompt with multi-token
continuations (a user's history, then ten candidate titles) runs through the
model once and its key/value cache is reused, expanded, for a batch of its
continuations, so one user's ten candidates cost one history plus ten short
titles. Prompts whose continuations are single tokens (the yes/no question
about each candidate) need only each prompt's next-token distribution:
consecutive prompts that share a prefix (one user's history) are batched,
the shared prefix runs once, and each prompt's own tail runs beside the
others on the expanded cache, so ten questions cost one history plus ten
questions. Only the logits that score a token are computed (a 262k-token
vocabulary, Gemma 3's, makes the rest dear).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from llmrec.backends import register_backend
from llmrec.backends.aliases import resolve_model
from llmrec.backends.base import FAILED, SCORED, Backend, ChatRequest, Completion, SamplingParams, ScoreRequest, score_text
from llmrec.backends.gguf_convert import gguf_revision, is_gguf, weights_folder
from llmrec.errors import BackendError, ConfigError

logger = logging.getLogger(__name__)


@register_backend("transformers")
class TransformersBackend(Backend):
    """In-process Hugging Face generation.

    `model`: an alias (`smollm2-135m`, `qwen2.5-7b`, ...), an HF id available
    offline, a local HF folder or a `.gguf` file. The model loads on the first
    request, so a run answered entirely from the completion store never loads it.
    """

    can_score = True

    def __init__(
        self,
        model: str = "smollm2-135m",
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        score_batch_size: int = 32,
        revision: str | None = None,
        constrained: bool = True,
        attn_implementation: str = "sdpa",
        quantize: str = "none",
    ) -> None:
        if batch_size < 1 or score_batch_size < 1:
            raise ConfigError(
                f"transformers backend: batch_size and score_batch_size must be >= 1, got {batch_size}, {score_batch_size}"
            )
        if quantize not in ("none", "int8"):
            raise ConfigError(f"transformers backend: quantize must be none or int8; got '{quantize}'")
        self._model_name = model
        self._source = resolve_model(model)
        self._revision = revision
        if is_gguf(self._source):
            if not Path(self._source).is_file():
                raise ConfigError(f"{self._source}: GGUF model file not found")
            # The converted folder's name carries the GGUF's sha256 prefix.
            self._revision = gguf_revision(self._source)
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        #: Continuations scored per forward after one prompt (a user's 10 candidates, or 20 yes/no answers,
        #: in one pass: 8 per pass made one user's likelihoods ~25% slower on this CPU).
        self.score_batch_size = score_batch_size
        self.constrained = constrained
        self.attn_implementation = attn_implementation
        self.quantize = quantize
        self._model: Any = None
        self._tokenizer: Any = None
        self._grammars: Any = None  # JsonGrammars once the model is loaded (constrained mode)

    @property
    def model_id(self) -> str:
        return self._model_name

    @property
    def model_revision(self) -> str:
        """The weights' revision plus what changes answers: int8 weights, the JSON mode."""
        from llmrec.backends.grammar import ENGINE

        revision = (self._revision or "") + ("+int8" if self.quantize == "int8" else "")
        return f"{revision}+json:{ENGINE}" if self.constrained else revision

    def __repr__(self) -> str:
        return (
            f"TransformersBackend(model={self._model_name!r}, device={self.device!r}, "
            f"batch_size={self.batch_size}, constrained={self.constrained})"
        )

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = weights_folder(self._source)
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.dtype == "auto":
            # CPUs without native bf16 emulate it slowly; float32 there.
            dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
        else:
            dtype = getattr(torch, self.dtype)
        started = time.perf_counter()
        revision = self._revision if not is_gguf(self._source) else None
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, revision=revision)
            model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=dtype, revision=revision, attn_implementation=self.attn_implementation
            )
        except (OSError, ValueError) as exc:
            raise BackendError(_load_failure(self._model_name, folder, exc)) from None
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._tokenizer = tokenizer
        self._model = model.to(device).eval()
        self.device = device
        if self.quantize == "int8":
            # fbgemm int8 matmuls (`bench/results/inprocess.md`). Activations are quantized per
            # tensor, so an answer then depends on the rest of its batch: not the default.
            self._model = torch.ao.quantization.quantize_dynamic(self._model, {torch.nn.Linear}, dtype=torch.qint8)
        if self.constrained:
            from llmrec.backends.grammar import ENGINE, JsonGrammars

            self._grammars = JsonGrammars(tokenizer, model.config.vocab_size, sorted(self._stop_token_ids()), self._model_name)
            mode = f"JSON answers constrained to each request's schema by {ENGINE} {_version(ENGINE)}"
        else:
            mode = "JSON schemas written into the prompt, answers not constrained (constrained=false)"
        logger.info(
            "loaded %s on %s (%s%s, %s attention) in %.1f s; %s",
            self._model_name, device, dtype, ", int8 Linear layers" if self.quantize == "int8" else "", self.attn_implementation,
            time.perf_counter() - started, mode,
        )  # fmt: skip

    def _stop_token_ids(self) -> set[int]:
        ids = self._model.generation_config.eos_token_id
        stop_ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self._tokenizer.eos_token_id is not None:
            stop_ids.add(self._tokenizer.eos_token_id)
        return stop_ids

    def _batches(self, requests: Sequence[ChatRequest], prompts: dict[int, str]) -> Iterator[list[int]]:
        """Indices grouped by sampling params (one `generate` call takes one set), similar lengths together."""
        groups: dict[SamplingParams, list[int]] = {}
        for index in prompts:
            groups.setdefault(requests[index].sampling, []).append(index)
        for indices in groups.values():
            indices.sort(key=lambda i: len(prompts[i]))
            for start in range(0, len(indices), self.batch_size):
                yield indices[start : start + self.batch_size]

    def generate_iter(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, Completion]]:
        if not requests:
            return
        from llmrec.backends.grammar import SchemaRejected

        if self._model is None:
            self._load()
        if self._tokenizer.chat_template is None:
            raise BackendError(
                f"transformers backend: model '{self._model_name}' has no chat template, so it cannot answer chat "
                "prompts (a base model): score with it instead (edge_method = likelihood, pmi or yesno)"
            )
        grammars: list[Any] = [None] * len(requests)
        runnable: list[int] = []
        for index, request in enumerate(requests):
            try:
                grammars[index] = self._grammar(request)
            except SchemaRejected as exc:  # this request fails, the others run
                reason = f"{exc}; simplify the schema or pass --backend-option constrained=false"
                logger.warning("transformers backend: request %d (model %s): %s", index, self._model_name, reason)
                yield index, Completion(reason, FAILED, 0, 0, 0.0)
                continue
            runnable.append(index)
        prompts = {
            i: self._tokenizer.apply_chat_template(self._messages(requests[i]), tokenize=False, add_generation_prompt=True)
            for i in runnable
        }
        for batch in self._batches(requests, prompts):
            completions = self._generate_batch([prompts[i] for i in batch], requests[batch[0]].sampling, [grammars[i] for i in batch])
            for index, completion in zip(batch, completions):
                if grammars[index] is not None and completion.finish_reason == "length":
                    logger.warning(
                        "transformers backend: request %d (model %s) cut at max_tokens=%d inside its JSON; raise max_tokens",
                        index, self._model_name, requests[index].sampling.max_tokens,
                    )  # fmt: skip
                yield index, completion

    def _grammar(self, request: ChatRequest) -> Any:
        """The compiled grammar of the request's schema (None: unconstrained); raises SchemaRejected."""
        if self._grammars is None or request.json_schema is None:
            return None
        return self._grammars.compile(request.json_schema)

    def _messages(self, request: ChatRequest) -> list[dict[str, str]]:
        """Constrained requests go as they are; prompt-only mode spells the schema out."""
        return list(request.messages) if self.constrained else request.messages_with_schema_in_prompt()

    def _generate_batch(self, prompts: list[str], sampling: SamplingParams, grammars: list[Any]) -> list[Completion]:
        import torch

        started = time.perf_counter()
        # The chat template already holds the special tokens (BOS included).
        encoded = self._tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False, return_token_type_ids=False
        ).to(self.device)
        options: dict[str, Any] = {"max_new_tokens": sampling.max_tokens, "pad_token_id": self._tokenizer.pad_token_id}
        if sampling.temperature > 0:
            options.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:  # greedy; clear the model's default sampling values so they don't warn
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if sampling.stop:
            options.update(stop_strings=list(sampling.stop), tokenizer=self._tokenizer)
        if any(grammar is not None for grammar in grammars):
            from transformers import LogitsProcessorList

            options["logits_processor"] = LogitsProcessorList([self._grammars.processor(grammars)])
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        with torch.inference_mode():
            output = self._model.generate(**encoded, **options)
        latency = time.perf_counter() - started
        prompt_width = encoded["input_ids"].shape[1]
        prompt_lengths = encoded["attention_mask"].sum(dim=1).tolist()
        stop_ids = self._stop_token_ids()
        return [
            self._completion(row[prompt_width:].tolist(), int(n_prompt), sampling, stop_ids, latency)
            for row, n_prompt in zip(output, prompt_lengths)
        ]

    def _completion(
        self, new_ids: list[int], n_prompt: int, sampling: SamplingParams, stop_ids: set[int], latency: float
    ) -> Completion:
        """Trim one row's new tokens at its end-of-sequence / stop string, as servers report it."""
        end = next((i for i, token in enumerate(new_ids) if token in stop_ids), None)
        generated = new_ids if end is None else new_ids[:end]
        text = self._tokenizer.decode(generated, skip_special_tokens=True)
        stop_at = [text.find(stop) for stop in sampling.stop if stop in text]
        if stop_at:
            return Completion(text[: min(stop_at)], "stop", n_prompt, len(generated), latency)
        if end is not None:  # the end-of-sequence token counts as generated, as in vLLM
            return Completion(text, "stop", n_prompt, len(generated) + 1, latency)
        return Completion(text, "length", n_prompt, len(generated), latency)

    def score_iter(self, requests: Sequence[ScoreRequest]) -> Iterator[tuple[int, Completion]]:
        if not requests:
            return
        if self._model is None:
            self._load()
        tokenizer = self._tokenizer
        by_prompt: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            by_prompt.setdefault(request.prompt, []).append(index)
        next_token: list[_NextTokenPrompt] = []
        for prompt, indices in by_prompt.items():
            # The prompt with the model's beginning-of-sequence token, the continuation on its own (lm-eval's way).
            ids = tokenizer(prompt, add_special_tokens=True, return_token_type_ids=False)["input_ids"]
            suffixes = [tokenizer(requests[i].continuation, add_special_tokens=False)["input_ids"] for i in indices]
            if len(ids) >= 2 and all(len(suffix) == 1 for suffix in suffixes) and not self._too_long(len(ids) + 1):
                next_token.append(_NextTokenPrompt(ids, [suffix[0] for suffix in suffixes], indices))
            else:
                yield from self._score_prompt(ids, suffixes, indices)
        for batch in _shared_prefix_batches(next_token, self.score_batch_size):
            yield from self._score_next_tokens(batch)

    def _too_long(self, n_tokens: int) -> bool:
        """Whether `n_tokens` exceed the model's positions (a model without a limit takes any length)."""
        limit = self._position_limit()
        return limit is not None and n_tokens > limit

    def _position_limit(self) -> int | None:
        return getattr(self._model.config, "max_position_embeddings", None)

    def _score_next_tokens(self, batch: list[_NextTokenPrompt]) -> Iterator[tuple[int, Completion]]:
        """log P(token | prompt) for prompts sharing a prefix: the prefix once, each prompt's tail beside the others."""
        import torch

        started = time.perf_counter()
        # every prompt keeps at least one token of its own, whose position predicts the next token
        shared = min(_common_prefix(batch), min(len(entry.ids) for entry in batch) - 1)
        tails = [entry.ids[shared:] for entry in batch]
        width = max(len(tail) for tail in tails)
        pad = self._tokenizer.pad_token_id or 0
        tokens = torch.tensor([tail + [pad] * (width - len(tail)) for tail in tails], device=self.device)
        real = torch.tensor([[1] * len(tail) + [0] * (width - len(tail)) for tail in tails], device=self.device)
        last = sorted({len(tail) - 1 for tail in tails})  # right padding: each row's last real position
        with torch.inference_mode():
            prefix = self._model(torch.tensor([batch[0].ids[:shared]], device=self.device), use_cache=True, logits_to_keep=1)
            cache = prefix.past_key_values
            cache.batch_repeat_interleave(len(batch))
            mask = torch.cat([torch.ones(len(batch), shared, dtype=real.dtype, device=self.device), real], dim=1)
            logits = self._model(
                tokens, attention_mask=mask, past_key_values=cache, use_cache=True,
                logits_to_keep=torch.tensor(last, device=self.device),
            ).logits  # fmt: skip
            rows = torch.arange(len(batch), device=self.device)
            columns = torch.tensor([last.index(len(tail) - 1) for tail in tails], device=self.device)
            logprobs = torch.log_softmax(logits[rows, columns].float(), dim=-1)
        latency = time.perf_counter() - started
        for row, entry in enumerate(batch):
            for index, token in zip(entry.indices, entry.tokens):
                value = float(logprobs[row, token])
                yield index, Completion(score_text(value), SCORED, len(entry.ids), 1, latency)

    def _score_prompt(self, prefix: list[int], suffixes: list[list[int]], indices: list[int]) -> Iterator[tuple[int, Completion]]:
        """log P(continuation | prompt) for each continuation (token ids): the prompt once, its cache reused in batches."""
        import torch

        started = time.perf_counter()
        too_long = [self._too_long(len(prefix) + len(ids)) for ids in suffixes]
        if not prefix or any(too_long):
            reason = "the prompt is empty and the tokenizer adds no start token" if not prefix else (
                f"prompt + continuation exceed the model's {self._position_limit()} positions")
            for index, ids, long in zip(indices, suffixes, too_long):
                if not prefix or long:
                    yield index, Completion(f"cannot score: {reason}", FAILED, len(prefix), len(ids), 0.0)
            if not prefix:
                return
        kept = [k for k, long in enumerate(too_long) if not long]
        with torch.inference_mode():
            output = self._model(torch.tensor([prefix], device=self.device), use_cache=True, logits_to_keep=1)
            first = torch.log_softmax(output.logits[0, -1].float(), dim=-1)
            cache = output.past_key_values
            for start in range(0, len(kept), self.score_batch_size):
                chunk = kept[start : start + self.score_batch_size]
                scores = self._score_continuations(cache, first, len(prefix), [suffixes[k] for k in chunk])
                latency = time.perf_counter() - started
                for k, logprob in zip(chunk, scores):
                    yield indices[k], Completion(score_text(logprob), SCORED, len(prefix), len(suffixes[k]), latency)

    def _score_continuations(self, cache: Any, first: Any, n_prefix: int, suffixes: list[list[int]]) -> list[float]:
        """Summed log-probabilities of right-padded continuations after a cached prefix."""
        import torch

        width = max(len(ids) for ids in suffixes)
        pad = self._tokenizer.pad_token_id or 0
        tokens = torch.tensor([ids + [pad] * (width - len(ids)) for ids in suffixes], device=self.device)
        real = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in suffixes], device=self.device)
        totals = first[tokens[:, 0]].clone()  # the prompt's last position predicts each first token
        if width > 1:
            expanded = copy.deepcopy(cache)  # the prompt's cache serves every chunk: expand a copy
            expanded.batch_repeat_interleave(len(suffixes))
            mask = torch.cat([torch.ones(len(suffixes), n_prefix, dtype=real.dtype, device=self.device), real], dim=1)
            # logits at positions 0..width-2 predict tokens 1..width-1; the last position predicts nothing
            logits = self._model(tokens[:, :-1], attention_mask=mask[:, :-1], past_key_values=expanded, use_cache=True).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[:, 1:, None])[..., 0]
            totals += (logprobs * real[:, 1:]).sum(dim=1)
        return [float(value) for value in totals]

    def close(self) -> None:
        self._model = None
        self._tokenizer = None
        self._grammars = None


@dataclasses.dataclass(frozen=True)
class _NextTokenPrompt:
    """A prompt whose continuations are single tokens, and the request index of each."""

    ids: list[int]
    tokens: list[int]
    indices: list[int]


def _common_prefix(batch: Sequence[_NextTokenPrompt]) -> int:
    """How many leading tokens every prompt of `batch` shares."""
    shared = len(batch[0].ids)
    for entry in batch[1:]:
        limit = min(shared, len(entry.ids))
        shared = next((k for k in range(limit) if entry.ids[k] != batch[0].ids[k]), limit)
    return shared


def _shared_prefix_batches(prompts: Sequence[_NextTokenPrompt], size: int) -> Iterator[list[_NextTokenPrompt]]:
    """Consecutive prompts in batches of at most `size`; a prompt starts a new batch when it would halve the shared prefix.

    One user's yes/no questions share the user's history (hundreds of tokens)
    and differ in the last few dozen; the next user's share only the header,
    so the rule cuts batches where the users change.
    """
    batch: list[_NextTokenPrompt] = []
    shared = 0
    for entry in prompts:
        if batch:
            candidate = _common_prefix([batch[0], entry])
            if len(batch) < size and 2 * min(candidate, shared) >= shared:
                batch.append(entry)
                shared = min(candidate, shared)
                continue
            yield batch
        batch, shared = [entry], len(entry.ids)
    if batch:
        yield batch


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _load_failure(model_name: str, folder: str, exc: BaseException) -> str:
    """One line saying which model could not load and what to change."""
    detail = " ".join(str(exc).split())
    if len(detail) > 240:
        detail = detail[:240] + "..."
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("TRANSFORMERS_OFFLINE", "") not in ("", "0")
    if not Path(folder).exists() and offline:
        hint = f"it is not in the Hugging Face cache and HF_HUB_OFFLINE is set: download it once (`hf download {folder}`) or pass a local folder"
    elif not Path(folder).exists():
        hint = "check the model id (or alias) and the network, or pass a local folder"
    else:
        hint = "the folder is not a complete Hugging Face model (config, weights and tokenizer)"
    return f"transformers backend: cannot load model '{model_name}' ({folder}): {hint} [{detail}]"
