"""The command that rebuilds a run artifact, for the one-line errors about damaged or missing files.

`llmrec.artifacts` names a file the manifest does not vouch for and asks here
what to run: the stage that recorded the file (the manifest says which), as a
command line with the options that stage last ran with: `prepare` from its
recorded parameters, `train:<name>` likewise, the others from their table in
`config.json`. Rerunning a stage rebuilds its outputs when they differ from the
manifest (`artifacts.stage_is_current` rehashes them), so the command needs no
extra flag. Nothing here may fail: when the manifest or config.json cannot be
read either, the command comes without options.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmrec import artifacts

#: The stage that writes each fixed-name artifact (when the manifest does not say: a run made by hand or by an
#: older llmrec). `model/<name>/...` files are `train:<name>`'s.
PRODUCERS: dict[str, str] = {
    **{name: "prepare" for name in (artifacts.USERS, artifacts.ITEMS, *artifacts.SPLIT_FILES.values())},
    artifacts.IMAGE_EMBEDDINGS: "prepare",
    artifacts.CANDIDATES: "candidates",
    artifacts.AUGMENTED_EDGES: "augment:edges",
    artifacts.EDGE_SCORES: "augment:edges",
    artifacts.USER_PROFILES: "augment:profiles",
    artifacts.ITEM_ATTRIBUTES: "augment:attributes",
    artifacts.AUGMENT_REPORT: "augment:report",
    artifacts.COMPARISON: "compare",
    f"{artifacts.MODEL_DIR}/comparison.md": "compare",
    f"{artifacts.MODEL_DIR}/ablation.json": "ablate",
    f"{artifacts.MODEL_DIR}/ablation.md": "ablate",
    **{name: "embed" for name in (artifacts.ITEM_TEXT_EMBEDDINGS, artifacts.ITEM_ATTRIBUTES_EMBEDDINGS,
                                  artifacts.ITEM_ATTRIBUTES_MASK, artifacts.USER_PROFILES_EMBEDDINGS,
                                  artifacts.USER_PROFILES_MASK)},
}  # fmt: skip
#: Shown in place of options that have no flag (a TOML table sets them).
CONFIG_PLACEHOLDER = ["--config", "YOUR.toml"]


def producing_stage(rel: str) -> str | None:
    """The stage that writes `rel`, from its name alone."""
    if rel in PRODUCERS:
        return PRODUCERS[rel]
    parts = rel.split("/")
    if len(parts) == 3 and parts[0] == artifacts.MODEL_DIR and not parts[1].startswith("_"):
        return f"train:{parts[1]}"
    return None


def _same(value: Any, default: Any) -> bool:
    return json.dumps(value, sort_keys=True, default=str) == json.dumps(default, sort_keys=True, default=str)


def _default(field: dataclasses.Field[Any]) -> Any:
    return field.default_factory() if field.default is dataclasses.MISSING else field.default  # type: ignore[misc]


def _words(field: dataclasses.Field[Any], value: Any) -> list[str] | None:
    """The flag words that set `field` to `value`; None when no flag can."""
    flag = field.metadata.get("flag")
    if not flag or value is None:
        return None
    if isinstance(value, bool):
        on, _, off = flag.partition("/")
        return [on] if value else ([off] if off else None)
    if isinstance(value, dict):
        return [word for key, item in value.items()
                for word in (flag, f"{key}={item if isinstance(item, str) else json.dumps(item)}")]  # fmt: skip
    if isinstance(value, (list, tuple)):
        if field.metadata.get("cli_type") is str:  # one comma-separated flag (--what)
            return [flag, ",".join(map(str, value))]
        return [word for item in value for word in (flag, str(item))]
    return [flag, str(value)]


def flag_words(cls: type, values: Mapping[str, Any], defaults: Mapping[str, Any] | None = None,
               skip: tuple[str, ...] = ()) -> tuple[list[str], bool]:
    """Flags that give `values` (a config table) where they differ from `defaults` (the class's own by default),
    and whether some such option has no flag."""
    words: list[str] = []
    unflagged = False
    for field in dataclasses.fields(cls):
        if field.name in skip or field.name not in values:
            continue
        default = defaults[field.name] if defaults is not None and field.name in defaults else _default(field)
        if _same(values[field.name], default):
            continue
        given = _words(field, values[field.name])
        if given is None:
            unflagged = True
        else:
            words += given
    return words, unflagged


def _read(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest stages, config.json), each empty when unreadable."""
    try:
        stages = artifacts.read_manifest(run_dir)["stages"]
    except Exception:  # noqa: BLE001 - a hint must never fail
        stages = {}
    try:
        config = json.loads((run_dir / artifacts.CONFIG).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001
        config = {}
    return (stages if isinstance(stages, dict) else {}), (config if isinstance(config, dict) else {})


def _table(config: Mapping[str, Any], section: str) -> dict[str, Any]:
    table = config.get(section)
    return dict(table) if isinstance(table, dict) else {}


def _prepare(run: str, stages: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    from llmrec.data.config import PrepareConfig

    values = {**_table(config, "data"), **stages.get("prepare", {}).get("params", {})}
    values["data_dir"] = _table(config, "data").get("data_dir")  # where the files were read from is no parameter
    words, unflagged = flag_words(PrepareConfig, values, skip=("dataset",))
    dataset = values.get("dataset", PrepareConfig.dataset)
    return ["llmrec", "data", "prepare", str(dataset), "--run", run, *words] + (CONFIG_PLACEHOLDER if unflagged else [])


def _augment(run: str, whats: list[str], config: Mapping[str, Any]) -> list[str]:
    from llmrec.augment.config import AugmentConfig

    words, unflagged = flag_words(AugmentConfig, _table(config, "augment"), skip=("what",))
    return ["llmrec", "augment", run, "--what", ",".join(whats), *words] + (CONFIG_PLACEHOLDER if unflagged else [])


def _recorded_augmentations(stages: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    from llmrec.augment.config import AUGMENTATIONS

    recorded = [what for what in AUGMENTATIONS if f"augment:{what}" in stages]
    return recorded or list(_table(config, "augment").get("what") or AUGMENTATIONS)


def _train(run: str, name: str, stages: Mapping[str, Any]) -> list[str]:
    from llmrec.recommender.options import TrainConfig

    params = {k: v for k, v in stages.get(f"train:{name}", {}).get("params", {}).items()
              if k in {f.name for f in dataclasses.fields(TrainConfig)}}  # fmt: skip
    model = str(params.get("model", name))
    command = ["llmrec", "train", run] + ([] if name == model else ["--name", name])
    if not params:
        return command
    try:
        defaults = {**dataclasses.asdict(TrainConfig(model=model).resolve()), "model": TrainConfig.model}
        words, unflagged = flag_words(TrainConfig, params, defaults)
        flagged = {f.name: params[f.name] for f in dataclasses.fields(TrainConfig)
                   if f.metadata.get("flag") and f.name in params}  # fmt: skip
        unflagged = unflagged or not _same(dataclasses.asdict(TrainConfig(**flagged).resolve()), params)
    except Exception:  # noqa: BLE001 - params of another llmrec version
        return command + ["..."]
    return command + words + (CONFIG_PLACEHOLDER if unflagged else [])


def rebuild_command(run_dir: Path | str, stage: str) -> str:
    """The command line that reruns `stage` of the run at `run_dir` (as the user named the run)."""
    run_dir = Path(run_dir)
    run = str(run_dir)
    stages, config = _read(run_dir)
    if stage == "prepare":
        words = _prepare(run, stages, config)
    elif stage == "candidates":
        words = _augment(run, ["edges"], config)
    elif stage == "augment:report":
        words = _augment(run, _recorded_augmentations(stages, config), config)
    elif stage.startswith("augment:"):
        words = _augment(run, [stage.split(":", 1)[1]], config)
    elif stage == "embed":
        from llmrec.embed_config import EmbedConfig

        flags, unflagged = flag_words(EmbedConfig, _table(config, "embed"))
        words = ["llmrec", "embed", run, *flags] + (CONFIG_PLACEHOLDER if unflagged else [])
    elif stage.startswith("train:"):
        words = _train(run, stage.split(":", 1)[1], stages)
    elif stage == "compare":
        from llmrec.recommender.options import TrainConfig

        flags, unflagged = flag_words(TrainConfig, _table(config, "train"))
        words = ["llmrec", "train", run, "--baselines", *flags] + (CONFIG_PLACEHOLDER if unflagged else [])
    elif stage == "ablate":
        words = ["llmrec", "ablate", run]
    else:
        return f"llmrec ... {run} (the command of stage '{stage}')"
    return shlex.join(words)
