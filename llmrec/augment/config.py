"""`[augment]`: everything that decides an augmentation, one field each (see `llmrec.config`).

One class for `llmrec augment`, the `[augment]` table of `llmrec run` and
`run_augmentation`. Kept free of numpy and pandas: the CLI builds its flags
from this class at start-up.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

from llmrec.augment.schemas import ANSWERS
from llmrec.backends.base import SamplingParams
from llmrec.config import option
from llmrec.errors import ConfigError

EDGES, PROFILES, ATTRIBUTES = "edges", "profiles", "attributes"
AUGMENTATIONS = (EDGES, PROFILES, ATTRIBUTES)
CHOOSE, LIKELIHOOD, PMI, YESNO, CONTROL = "choose", "likelihood", "pmi", "yesno", "control"
#: How edges are picked: `choose` asks the numbered-candidate question (`augment.tasks.edge_tasks`);
#: the others score each candidate on its own or, `control`, take the base model's order (`augment.scoring`).
EDGE_METHODS = (CHOOSE, LIKELIHOOD, PMI, YESNO, CONTROL)
#: Decoding defaults per augmentation: the original's temperatures (0.6 edges and
#: attributes, 0.8 profiles, top_p 0.1); the answer budget comes from the answer's
#: schema (`AnswerShape.max_tokens`), so a schema-valid answer is never cut.
DEFAULT_SAMPLING = {
    EDGES: SamplingParams(temperature=0.6, top_p=0.1, seed=0),
    PROFILES: SamplingParams(temperature=0.8, top_p=0.1, seed=0),
    ATTRIBUTES: SamplingParams(temperature=0.6, top_p=0.1, seed=0),
}


def parse_what(text: str) -> list[str] | None:
    """`--what edges,profiles` -> ["edges", "profiles"]; empty means not given."""
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def parse_limit(text: str) -> int:
    """`--limit-users 20`, or `all` (= 0, every user)."""
    if text.strip().lower() == "all":
        return 0
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r}: expected a number or 'all'") from None


def parse_backend_options(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs; values read as JSON when they parse (numbers, booleans), else as text."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"'{pair}': expected KEY=VALUE")
        try:
            options[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip()] = raw
    return options


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which LLM is asked what, and how (TOML table `[augment]`).

    `backend`, `model`, `base_url` and `backend_options` choose the backend that
    `augment_run` opens; the other fields decide the prompts, the decoding and
    which users and items are asked.
    """

    section: ClassVar[str] = "augment"

    what: tuple[str, ...] = option(
        AUGMENTATIONS, "--what", cli_type=str, parse=parse_what,
        help="Comma-separated: edges,profiles,attributes (default all).",
    )  # fmt: skip
    backend: str = option("transformers", "--backend", help="transformers | vllm | openai | ray | an installed plug-in (docs/backends.md); default {default}.")
    model: str = option("smollm2-135m", "--model", help="Alias (smollm2-135m, qwen2.5-7b, ...), HF id or path.")
    base_url: tuple[str, ...] = option((), "--base-url", help="Server URL (repeat for replicas).")
    backend_options: dict[str, Any] = option(
        flag="--backend-option", default_factory=dict, cli_type=list[str], parse=parse_backend_options,
        help="KEY=VALUE passed to the backend (e.g. batch_size=4, max_in_flight=64).",
    )  # fmt: skip
    store: str | None = option(
        None, "--store", cli_type=Path, help="Completion store (default $LLMREC_HOME/completions.sqlite)."
    )
    limit_users: int = option(
        20, "--limit-users", cli_type=str, parse=parse_limit,
        help="First N users with history (default {default}; 0/all = all).",
    )  # fmt: skip
    limit_items: int | None = option(
        None, "--limit-items", cli_type=str, parse=parse_limit,
        help="Attributes: default the items in the chosen users' histories + candidates; N = first N of those; "
             "0/all = every item.",
    )  # fmt: skip
    history_budget: int = option(
        30, "--history-budget", help="Most recent training items per prompt (default {default})."
    )
    prompts_dir: str | None = option(
        None, "--prompts-dir", cli_type=Path, help="Folder of <name>.jinja overriding the packaged prompts."
    )
    temperature: float | None = option(None, "--temperature", help="Override every augmentation's temperature.")
    top_p: float | None = option(None, "--top-p", help="Override every augmentation's top_p.")
    max_tokens: int | None = option(None, "--max-tokens", help="Override every augmentation's answer budget.")
    seed: int = option(0, "--seed", help="Sampling seed (also the candidate model's seed).")
    candidates_k: int = option(10, "--candidates-k", help="Candidates per user for edges (default {default}).")
    edge_orders: int = option(
        3, "--edge-orders",
        help="Shuffled candidate orders per edge question; an edge is kept when a majority agree "
             "(default {default}; 1 = no check).",
    )  # fmt: skip
    edge_method: str = option(
        CHOOSE, "--edge-method",
        help="How edges are picked: choose (the LLM picks among numbered candidates, checked across shuffled "
             "orders), likelihood | pmi | yesno (each candidate scored on its own: no positions), control (no "
             "LLM: the base model's top-1 and last candidate). Default {default}.",
    )  # fmt: skip
    candidates_epochs: int | None = option(None, "--candidates-epochs", help="Epochs of the candidate LightGCN.")
    device: str = option("auto", "--device", help="Device of the candidate model (auto/cpu/cuda).")

    def __post_init__(self) -> None:
        unknown = [w for w in self.what if w not in AUGMENTATIONS]
        if unknown or not self.what:
            raise ConfigError(f"[augment] unknown augmentation(s) {unknown}; expected some of {list(AUGMENTATIONS)}")
        if self.history_budget < 1:
            raise ConfigError(f"[augment] history_budget must be >= 1, got {self.history_budget}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"[augment] max_tokens must be >= 1, got {self.max_tokens}")
        if self.limit_users < 0 or (self.limit_items is not None and self.limit_items < 0):
            raise ConfigError("[augment] limits must be >= 0 (0 = all)")
        if self.edge_method not in EDGE_METHODS:
            raise ConfigError(f"[augment] edge_method must be one of {list(EDGE_METHODS)}, got '{self.edge_method}'")
        if self.edge_orders < 1:
            raise ConfigError(
                f"[augment] edge_orders must be >= 1 (1 = no consistency check), got {self.edge_orders}"
            )

    def sampling(self, what: str) -> SamplingParams:
        """The decoding of augmentation `what`: its defaults under this config's overrides."""
        base = DEFAULT_SAMPLING[what]
        return dataclasses.replace(
            base,
            temperature=base.temperature if self.temperature is None else self.temperature,
            top_p=base.top_p if self.top_p is None else self.top_p,
            max_tokens=ANSWERS[what].max_tokens(self.candidates_k) if self.max_tokens is None else self.max_tokens,
            seed=self.seed,
        )

    def backend_kwargs(self) -> dict[str, Any]:
        """`get_backend` keywords besides the name and model: the backend options and the server URL(s)."""
        kwargs = dict(self.backend_options)
        if self.base_url:
            kwargs["base_url"] = list(self.base_url) if len(self.base_url) > 1 else self.base_url[0]
        return kwargs
