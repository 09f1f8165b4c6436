"""JSON-schema constrained decoding for in-process generation, with xgrammar.

xgrammar (the engine vLLM uses) compiles a request's JSON schema against the
model's tokenizer into a grammar; at each decoding step a per-row matcher
says which tokens keep the output a prefix of a schema-valid JSON value, and
every other token's logit becomes -inf. The edge schema's `enum` of
candidate numbers thus means a constrained model can only name a candidate.
`bench/bench_grammar.py` measured it against llguidance (validity, tokens/s,
start-up) before it was chosen.

Compiled grammars are cached per schema (the edge schema differs only by the
candidate count, so a run compiles a handful). JSON is compact (no free
whitespace): a model cannot pad an answer with blank lines, and
`AnswerShape.max_tokens` can bound the answer's length.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from typing import Any

from llmrec.errors import BackendError

logger = logging.getLogger(__name__)

#: Name and version of the engine, part of the completion-store key of constrained answers.
ENGINE = "xgrammar"


class SchemaRejected(Exception):
    """The grammar engine cannot compile a request's JSON schema; `reason` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _import_xgrammar() -> Any:
    # tvm-ffi (an xgrammar dependency) otherwise tries to JIT-compile a torch
    # extension at every import; with torch 2.2.1 the build fails after ~100 s.
    os.environ.setdefault("TVM_FFI_DISABLE_TORCH_C_DLPACK", "1")
    import xgrammar

    return xgrammar


#: xgrammar's C++ errors start with "[time] /path/file.cc:line: ".
_CPP_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: ")


def _one_line(exc: BaseException) -> str:
    text = _CPP_PREFIX.sub("", " ".join(str(exc).split()))
    return (text[:300] + "...") if len(text) > 300 else text or type(exc).__name__


class JsonGrammars:
    """Compiled JSON-schema grammars for one model's tokenizer, cached per schema."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int], model_name: str) -> None:
        xgr = _import_xgrammar()
        try:
            info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids))
        except Exception as exc:  # xgrammar raises ValueError/RuntimeError for tokenizers it cannot map
            raise BackendError(
                f"transformers backend: {ENGINE} cannot map the tokenizer of model '{model_name}' "
                f"({type(tokenizer).__name__}: {_one_line(exc)}); pass --backend-option constrained=false "
                "to ask for JSON in the prompt instead"
            ) from None
        self._xgr = xgr
        self._compiler = xgr.GrammarCompiler(info, max_threads=1)
        self.vocab_size = vocab_size
        self._compiled: dict[str, Any] = {}

    def compile(self, schema: dict[str, Any]) -> Any:
        """The grammar of `schema`; raises `SchemaRejected` (also cached) when the engine refuses it."""
        key = json.dumps(schema)  # key order kept: the answer's properties come in the schema's order
        if key not in self._compiled:
            try:
                self._compiled[key] = self._compiler.compile_json_schema(key, any_whitespace=False, strict_mode=True)
            except Exception as exc:  # xgrammar raises RuntimeError/ValueError on schemas it does not support
                self._compiled[key] = SchemaRejected(f"{ENGINE} rejects the JSON schema: {_one_line(exc)}")
        grammar = self._compiled[key]
        if isinstance(grammar, SchemaRejected):
            raise grammar
        return grammar

    def processor(self, grammars: Sequence[Any | None]) -> GrammarLogitsProcessor:
        """A logits processor for one `generate` call: row i follows `grammars[i]` (None: unconstrained)."""
        return GrammarLogitsProcessor(self._xgr, grammars, self.vocab_size)


class GrammarLogitsProcessor:
    """One grammar matcher per batch row; masks every token that would leave the row's grammar.

    A transformers `LogitsProcessor` (called with the ids so far and the next
    token's scores). Fresh per `generate` call: the first call has no
    sampled token to accept yet. Rows that finished (end of sequence) are left
    alone.
    """

    def __init__(self, xgr: Any, grammars: Sequence[Any | None], vocab_size: int) -> None:
        self._xgr = xgr
        self._matchers = [xgr.GrammarMatcher(g) if g is not None else None for g in grammars]
        self._bitmask = xgr.allocate_token_bitmask(len(grammars), vocab_size)
        self._started = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self._started:
            last = input_ids[:, -1].tolist()
            for row, matcher in enumerate(self._matchers):
                if matcher is not None and not matcher.is_terminated() and not matcher.accept_token(last[row]):
                    # Cannot happen for a token the mask allowed; the row is then left unconstrained
                    # and its answer is judged by the validator like any other.
                    logger.warning("grammar matcher refused token %d in row %d; row left unconstrained", last[row], row)
                    self._matchers[row] = None
        self._started = True
        self._bitmask.fill_(-1)  # all tokens allowed
        for row, matcher in enumerate(self._matchers):
            if matcher is not None and not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self._bitmask, row)
        self._xgr.apply_token_bitmask_inplace(scores, self._bitmask.to(scores.device))
        return scores
