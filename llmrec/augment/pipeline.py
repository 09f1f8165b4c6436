"""The augmentation pipeline: tasks -> one batch through the completion store -> validate -> repair once -> artifacts.

For each requested augmentation (edges, profiles, attributes; edges picked by
a scoring method or the no-LLM control skip steps 1-2 for `_score_edges`):
1. build every task (one prompt per user or item) and send them to the
   backend as ONE batch through the completion store (answers already in the
   store cost nothing, so a killed run resumes where it stopped);
2. validate every answer; invalid ones get one repair request (the original
   messages + the bad answer + what was wrong), again as one batch;
3. write the validated rows atomically, record the manifest stage
   `augment:<what>` and the counts (valid / repaired / failed, with each
   failure's reason) in `augment_report.json`. Nothing is dropped silently.

`augment_report.json` is recorded in the manifest too (stage `augment:report`),
so its readers (`llmrec run`'s report, the next augmentation's entry) check it.
A damaged or missing report is rebuilt by a run that redoes every augmentation
it held (their answers come from the store); a run asked for fewer refuses with
one line, before the backend opens, since the other entries cannot be recovered.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from llmrec import artifacts
from llmrec.augment.config import ATTRIBUTES, AUGMENTATIONS, CHOOSE, CONTROL, EDGES, PROFILES, AugmentConfig
from llmrec.augment.tasks import (
    Task,
    TaskSet,
    attribute_tasks,
    edge_tasks,
    profile_tasks,
    select_items,
    select_users,
)
from llmrec.augment.schemas import ANSWERS
from llmrec.augment.validate import AnswerValidationError
from llmrec.backends.base import FAILED, Backend, ChatRequest, Completion, SamplingParams, ScoreRequest, read_score
from llmrec.errors import ArtifactError, ConfigError
from llmrec.progress import Progress

logger = logging.getLogger(__name__)

#: augmentation -> the run-directory artifact it writes
ARTIFACT_FILES = {
    EDGES: artifacts.AUGMENTED_EDGES,
    PROFILES: artifacts.USER_PROFILES,
    ATTRIBUTES: artifacts.ITEM_ATTRIBUTES,
}
#: Longest bad answer quoted back in a repair prompt.
_REPAIR_QUOTE_CHARS = 1500


@dataclasses.dataclass
class AugmentationCounts:
    """Accounting of one augmentation: `valid + repaired + failed == requested`."""

    requested: int = 0
    valid: int = 0
    repaired: int = 0
    failed: int = 0
    failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    usage: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: str = ""
    template_hash: str = ""
    skipped: bool = False
    #: Edges only: the permutation-consistency check and the answered-position histogram (`augment.consistency`).
    consistency: dict[str, Any] = dataclasses.field(default_factory=dict)
    position_bias: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Edges only: how they were picked (`edge_method`, and for scoring methods the requests scored).
    scoring: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Edges only: the edge-signal audit on validation positives (`augment.edge_audit`).
    audit: dict[str, Any] = dataclasses.field(default_factory=dict)

    def failure_reasons(self) -> dict[str, int]:
        """Failures tallied by kind of reason, most frequent first."""
        return dict(Counter(_reason_kind(f["reason"]) for f in self.failures).most_common())

    def as_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["failure_reasons"] = self.failure_reasons()
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> AugmentationCounts:
        """Read back one entry of `augment_report.json` (its derived `failure_reasons` is recomputed)."""
        return cls(**{field.name: record[field.name] for field in dataclasses.fields(cls) if field.name in record})


@dataclasses.dataclass
class AugmentSummary:
    """What `run_augmentation` did, per augmentation."""

    run_dir: Path
    counts: dict[str, AugmentationCounts]

    def describe(self) -> str:
        return "; ".join(
            f"{what}: {c.requested} requested, {c.valid} valid, {c.repaired} repaired, {c.failed} failed"
            + (" (up to date)" if c.skipped else "")
            for what, c in self.counts.items()
        )


def _reason_kind(reason: str) -> str:
    """The reason with its specifics (numbers, quoted values) blanked, so failures tally by kind."""
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'...'", reason))[:100]


def repair_messages(task: Task, bad_answer: str, reason: str) -> tuple[dict[str, str], ...]:
    """The original conversation, the bad answer, and what was wrong with it."""
    quoted = bad_answer[:_REPAIR_QUOTE_CHARS]
    return (
        *task.messages,
        {"role": "assistant", "content": quoted},
        {"role": "user", "content": f"That answer is not valid: {reason}. "
                                    "Answer again with only the corrected JSON object, nothing else."},
    )  # fmt: skip


def _validated(task: Task, completion: Completion, max_tokens: int) -> tuple[Any, str | None]:
    """(value, None) for a valid answer, else (None, reason); the reason says what to change when it can."""
    if completion.finish_reason == FAILED:  # no answer this time (text: why); not stored, the next run asks again
        return None, completion.text
    try:
        return task.validate(completion.text), None
    except AnswerValidationError as exc:
        if completion.finish_reason == "length":
            return None, f"answer cut at max_tokens={max_tokens} ({exc.reason}); raise max_tokens"
        return None, exc.reason


def _ask(
    store: Any, backend: Backend, tasks: Sequence[Task], requests: Sequence[ChatRequest], desc: str, usage: Any
) -> list[tuple[str, Any, str | None]]:
    """(text, value, reason) per request, validated as each answer arrives so progress can say how many are valid."""
    from llmrec.backends.store import UsageSummary

    results: list[tuple[str, Any, str | None]] = [("", None, "no answer")] * len(requests)
    this_call = UsageSummary()
    try:
        with Progress(len(requests), desc, "prompt", count_valid=True) as progress:
            for index, completion in store.generate_iter(backend, requests, this_call, progress=False):
                value, reason = _validated(tasks[index], completion, requests[index].sampling.max_tokens)
                results[index] = (completion.text, value, reason)
                progress.update(1, valid=reason is None, free=completion.cached)
    finally:
        usage.add(this_call)
        logger.info("%s %s: %s", backend.name, backend.model_id, this_call.describe())
    return results


def answer_tasks(
    task_set: TaskSet, backend: Backend, store: Any, sampling: SamplingParams
) -> tuple[dict[int, Any], AugmentationCounts]:
    """Ask every task (one batch), repair invalid answers once (one batch), count everything."""
    from llmrec.backends.store import UsageSummary

    tasks = task_set.tasks
    counts = AugmentationCounts(requested=len(tasks), model=backend.model_id, template_hash=task_set.template.template_hash)
    usage = UsageSummary()
    first = _ask(store, backend, tasks, [ChatRequest(t.messages, sampling, t.schema) for t in tasks],
                 f"{task_set.what} {backend.model_id}", usage)  # fmt: skip
    accepted: dict[Any, Any] = {}
    to_repair: list[tuple[Task, str, str]] = []
    for task, (text, value, reason) in zip(tasks, first):
        if reason is None:
            accepted[task.key] = value
            counts.valid += 1
        else:
            to_repair.append((task, text, reason))
    if to_repair:
        repairs = [ChatRequest(repair_messages(t, text, reason), sampling, t.schema) for t, text, reason in to_repair]
        second = _ask(store, backend, [t for t, _, _ in to_repair], repairs, f"{task_set.what} repairs", usage)
        for (task, _, first_reason), (_, value, reason) in zip(to_repair, second):
            if reason is None:
                accepted[task.key] = value
                counts.repaired += 1
            else:
                counts.failed += 1
                counts.failures.append({"id": task.entity, "reason": reason, "first_reason": first_reason})
    counts.usage = usage.as_dict()
    logger.info(
        "%s: %d requested, %d valid, %d repaired, %d failed", task_set.what,
        counts.requested, counts.valid, counts.repaired, counts.failed,
    )  # fmt: skip
    return accepted, counts


def _edge_consensus(task_set: TaskSet, accepted: dict[Any, Any], config: AugmentConfig, counts: AugmentationCounts) -> dict[int, Any]:
    """Per user, the edge a majority of the candidate orders agree on; the check's figures go into `counts`."""
    from llmrec.augment.consistency import edge_consensus

    consensus = edge_consensus(task_set.tasks, accepted, config.edge_orders, counts.model)
    counts.consistency = {**consensus.consistency, "candidate_order_seed": config.seed}
    counts.position_bias = consensus.position_bias
    check, bias = consensus.consistency, consensus.position_bias
    logger.info(
        "edges: %d of %d users kept (same items won a majority of %d candidate orders for %d; %d answered the "
        "same positions under every order); liked answers at position %s: %.0f%% (uniform %.0f%%)",
        check["kept"], check["users"], config.edge_orders, check["agreed"], check["position_locked"],
        bias["liked_top_position"], 100 * (bias["liked_top_share"] or 0), 100 / max(bias["candidates"], 1),
    )  # fmt: skip
    return consensus.edges


def _table(what: str, accepted: dict[int, Any], model: str, template_hash: str) -> Any:
    """The validated rows as an Arrow table with the answer shape's column types (even when empty)."""
    import pyarrow as pa

    ids = sorted(accepted)
    rows = [_as_dict(accepted[key]) for key in ids]
    (key, key_type), *fields = ANSWERS[what].arrow_fields()
    columns = {key: pa.array(ids, type=key_type)}
    for name, kind in fields:
        columns[name] = pa.array([row[name] for row in rows], type=kind)
    columns["model"] = pa.array([model] * len(ids), type=pa.string())
    columns["template_hash"] = pa.array([template_hash] * len(ids), type=pa.string())
    return pa.table(columns)


def _as_dict(value: Any) -> dict[str, Any]:
    """A validated answer as a dict (edge answers are `EdgeChoice` dataclasses)."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def _write_table(path: Path, table: Any) -> None:
    import pyarrow.parquet as pq

    with artifacts.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


#: The manifest stage that records `augment_report.json` (each augmentation rewrites its own entry of it).
REPORT_STAGE = "augment:report"


def _update_report(run_dir: Path, what: str, counts: AugmentationCounts) -> None:
    report = (artifacts.read_run_json(run_dir, artifacts.AUGMENT_REPORT)
              if artifacts.run_artifact_present(run_dir, artifacts.AUGMENT_REPORT) else {})  # fmt: skip
    report[what] = counts.as_dict()
    _write_report(run_dir, report)


def _write_report(run_dir: Path, report: dict[str, Any]) -> None:
    artifacts.write_json(run_dir / artifacts.AUGMENT_REPORT, report)
    artifacts.record_stage(run_dir, REPORT_STAGE, {}, {}, [artifacts.AUGMENT_REPORT])


def _report_needs_rebuild(run_dir: Path, config: AugmentConfig) -> bool:
    """Whether this run must rebuild `augment_report.json` (damaged, unreadable, or recorded and gone): then every
    augmentation it held is redone. Refuses with one line when this run was not asked for all of them."""
    if not artifacts.run_artifact_present(run_dir, artifacts.AUGMENT_REPORT):
        return False
    try:
        artifacts.read_run_json(run_dir, artifacts.AUGMENT_REPORT)
    except ArtifactError:
        held = [what for what in AUGMENTATIONS if f"augment:{what}" in artifacts.read_manifest(run_dir)["stages"]]
        if not set(held) <= set(config.what):
            raise
        logger.warning("%s is damaged: redoing %s to rebuild it (answers come from the store)",
                       run_dir / artifacts.AUGMENT_REPORT, ", ".join(held) or "nothing")
        return True
    return False


def check_inputs(run_dir: Path | str, config: AugmentConfig) -> bool:
    """Check what augmentation will read (the prepared tables, the candidates it does not remake, the report)
    against the manifest before anything opens or writes; returns whether the report must be rebuilt."""
    run_dir = Path(run_dir)
    reads = [artifacts.USERS, artifacts.ITEMS, *artifacts.SPLIT_FILES.values()]
    if EDGES not in config.what and artifacts.run_artifact_present(run_dir, artifacts.CANDIDATES):
        reads.append(artifacts.CANDIDATES)  # with edges the candidates stage remakes damaged ones
    artifacts.verify_run_artifacts(run_dir, reads)
    return _report_needs_rebuild(run_dir, config)


def _stage_params(what: str, backend: Backend, config: AugmentConfig, template_hash: str, ids: Sequence[int]) -> dict[str, Any]:
    if what == EDGES and config.edge_method == CONTROL:  # no LLM: only the candidates and the users decide
        return {"edge_method": CONTROL, "ids_sha256": artifacts.sha256_text(",".join(map(str, ids)))}
    params: dict[str, Any] = {
        "backend": backend.name, "model": backend.model_id, "revision": backend.model_revision,
        "template_hash": template_hash, "ids_sha256": artifacts.sha256_text(",".join(map(str, ids))),
    }  # fmt: skip
    if what != EDGES or config.edge_method == CHOOSE:  # a score is read, not sampled
        params["sampling"] = dataclasses.asdict(config.sampling(what))
    if what != ATTRIBUTES:
        params["history_budget"] = config.history_budget
    if what == EDGES and config.edge_method == CHOOSE:  # the shuffled candidate orders are part of what was asked
        params["candidate_order_seed"] = config.seed
        params["edge_orders"] = config.edge_orders
    elif what == EDGES:
        params["edge_method"] = config.edge_method
    return params


def augment_run(run_dir: Path | str, config: AugmentConfig) -> AugmentSummary:
    """Open the configured backend, run the augmentations, close the backend (and any server it started)."""
    from llmrec.backends import get_backend

    check_inputs(run_dir, config)  # a damaged run is refused before the backend opens (or starts a server)
    with get_backend(config.backend, model=config.model, **config.backend_kwargs()) as llm:
        return run_augmentation(run_dir, llm, config)


def run_augmentation(run_dir: Path | str, backend: Backend, config: AugmentConfig = AugmentConfig()) -> AugmentSummary:
    """Run the requested augmentations on a prepared run with an open backend (edges first train the candidate model).

    Everything but the backend comes from `config` (its backend fields are
    `augment_run`'s). All requests go through the completion store at
    `config.store` (default: `$LLMREC_HOME/completions.sqlite`).
    """
    from llmrec.augment.candidates import generate_candidates
    from llmrec.data.tables import load_split
    from llmrec.paths import default_store_path
    from llmrec.backends.store import CompletionStore

    run_dir = Path(run_dir)
    rebuild_report = check_inputs(run_dir, config)
    tables = load_split(run_dir)
    users = select_users(tables.train, tables.n_users, config.limit_users)
    prompts_dir = config.prompts_dir or None
    if EDGES in config.what:
        generate_candidates(run_dir, config.candidates_k, seed=config.seed, device=config.device,
                            epochs=config.candidates_epochs)  # fmt: skip
    candidates = None
    if artifacts.run_artifact_present(run_dir, artifacts.CANDIDATES):  # attributes also cover the candidates when known
        candidates = artifacts.read_run_parquet(run_dir, artifacts.CANDIDATES, ["user", "rank", "item", "score"])
    inputs = {name: artifacts.run_artifact_digest(run_dir, name) for name in (artifacts.TRAIN, artifacts.ITEMS)}
    if candidates is not None:
        inputs[artifacts.CANDIDATES] = artifacts.run_artifact_digest(run_dir, artifacts.CANDIDATES)
    if rebuild_report:  # an augmentation without its entry is not up to date: each one runs again below
        _write_report(run_dir, {})

    counts: dict[str, AugmentationCounts] = {}
    with CompletionStore(config.store or default_store_path()) as store:
        for name in AUGMENTATIONS:
            if name not in config.what:
                continue
            if name == EDGES and config.edge_method != CHOOSE:
                counts[name] = _score_edges(run_dir, tables, candidates, users, backend, store, config, inputs)
                continue
            if name == EDGES:
                task_set = edge_tasks(tables, candidates, users, config.history_budget, prompts_dir,
                                      orders=config.edge_orders, seed=config.seed)  # fmt: skip
            elif name == PROFILES:
                task_set = profile_tasks(tables, users, config.history_budget, prompts_dir)
            else:
                items = select_items(tables.train, candidates, users, tables.n_items, config.limit_items)
                task_set = attribute_tasks(tables, items, prompts_dir)
            counts[name] = _run_one(run_dir, task_set, backend, store, config, inputs)
    summary = AugmentSummary(run_dir, counts)
    logger.info("augment: %s", summary.describe())
    return summary


def _run_one(
    run_dir: Path, task_set: TaskSet, backend: Backend, store: Any, config: AugmentConfig, inputs: dict[str, str]
) -> AugmentationCounts:
    what = task_set.what
    stage_inputs = {k: v for k, v in inputs.items() if what == EDGES or k != artifacts.CANDIDATES}
    params = _stage_params(what, backend, config, task_set.template.template_hash, [t.entity for t in task_set.tasks])
    recorded = _up_to_date(run_dir, what, params, stage_inputs)
    if recorded is not None:
        return recorded
    accepted, counts = answer_tasks(task_set, backend, store, config.sampling(what))
    if what == EDGES:
        accepted = _edge_consensus(task_set, accepted, config, counts)
        counts.scoring = {"edge_method": CHOOSE}
    rel = ARTIFACT_FILES[what]
    _write_table(run_dir / rel, _table(what, accepted, counts.model, counts.template_hash))
    if what == EDGES:
        counts.audit = _audit(run_dir, accepted, None)
    _finish_stage(run_dir, what, params, stage_inputs, [rel], counts)
    return counts


def _finish_stage(
    run_dir: Path, what: str, params: dict[str, Any], inputs: dict[str, str], outputs: list[str], counts: AugmentationCounts
) -> None:
    """Record the stage (its counts as stats) and its entry of `augment_report.json`."""
    stats = {k: v for k, v in dataclasses.asdict(counts).items() if k not in ("failures", "usage", "skipped")}
    artifacts.record_stage(run_dir, f"augment:{what}", params, inputs, outputs, stats)
    _update_report(run_dir, what, counts)


def _up_to_date(run_dir: Path, what: str, params: dict[str, Any], inputs: dict[str, str]) -> AugmentationCounts | None:
    """The recorded counts when the stage `augment:<what>` is current for these params and inputs and
    `augment_report.json` holds its entry, else None."""
    stage = f"augment:{what}"
    if not artifacts.stage_is_current(run_dir, stage, params, inputs):
        return None
    if not artifacts.run_artifact_present(run_dir, artifacts.AUGMENT_REPORT) or \
            what not in artifacts.read_run_json(run_dir, artifacts.AUGMENT_REPORT):
        return None
    recorded = artifacts.read_manifest(run_dir)["stages"][stage]["stats"]
    logger.info("%s: up to date (%s)", stage, ARTIFACT_FILES[what])
    fields = {f.name for f in dataclasses.fields(AugmentationCounts)}
    return AugmentationCounts(**{k: v for k, v in recorded.items() if k in fields}, skipped=True)


def _audit(run_dir: Path, edges: Mapping[int, Any], scores: pd.DataFrame | None) -> dict[str, Any]:
    """The edge-signal audit of these edges on the run's validation positives (never the test split)."""
    from llmrec.augment.edge_audit import audit_edges

    candidates = artifacts.read_run_parquet(run_dir, artifacts.CANDIDATES, ["user", "rank", "item"])
    val = artifacts.read_run_parquet(run_dir, artifacts.VAL, ["user", "item"])
    users = sorted(edges)
    frame = pd.DataFrame({"user": users, "liked": [edges[u].liked for u in users],
                          "disliked": [edges[u].disliked for u in users]}, dtype="int64")  # fmt: skip
    audit = audit_edges(candidates, val, frame, scores)
    logger.info("edges audit: %s", audit.verdict)
    return audit.as_dict()


def _score_edges(
    run_dir: Path, tables: Any, candidates: pd.DataFrame | None, users: Sequence[int], backend: Backend, store: Any,
    config: AugmentConfig, inputs: dict[str, str],
) -> AugmentationCounts:
    """Edges from per-candidate scores (`augment.scoring`): one batch of score requests, no positions, no repair."""
    from llmrec.augment.scoring import control_table, edges_from_scores, ranked_candidates, score_table, scoring_plan

    assert candidates is not None  # run_augmentation makes them before any edge method runs
    method = config.edge_method
    plan = None if method == CONTROL else scoring_plan(method, tables, candidates, users, config.history_budget,
                                                       config.prompts_dir or None)  # fmt: skip
    ranked = plan.candidates if plan is not None else ranked_candidates(candidates, users)
    template_hash = plan.template.template_hash if plan is not None else ""
    params = _stage_params(EDGES, backend, config, template_hash, list(ranked))
    recorded = _up_to_date(run_dir, EDGES, params, inputs)
    if recorded is not None:
        return recorded
    model = backend.model_id if plan is not None else "control: base LightGCN order"
    counts = AugmentationCounts(requested=len(ranked), model=model, template_hash=template_hash)
    if plan is None:
        scores = control_table(ranked)
        counts.scoring = {"edge_method": CONTROL}
    else:
        if not backend.can_score:
            raise ConfigError(f"[augment] edge_method = '{method}' needs token log-probabilities, which the "
                              f"{backend.name} backend does not give; use the transformers, vllm or openai backend, or "
                              "edge_method = 'choose'")  # fmt: skip
        logprobs, errors, usage = _ask_scores(store, backend, plan.requests, f"edges {method} {backend.model_id}")
        scores = score_table(plan, logprobs)
        counts.usage = usage.as_dict()
        counts.scoring = {"edge_method": method, "requests": len(plan.requests),
                          "scored": sum(value is not None for value in logprobs),
                          "users_scored": len(ranked), "content_free_items": len(plan.prior)}  # fmt: skip
        for user in sorted(set(scores.loc[scores["score"].isna(), "user"])):
            asked = [i for item in ranked[user] for i in (*plan.conditional[(user, item)], *plan.prior[item])]
            reason = next((errors[i] for i in asked if i in errors), "a candidate has no score")
            counts.failures.append({"id": int(user), "reason": reason})
    edges = edges_from_scores(scores)
    counts.valid = len(edges)
    counts.failed = counts.requested - counts.valid
    logger.info("edges (%s): %d of %d users get an edge", method, counts.valid, counts.requested)
    _write_table(run_dir / artifacts.AUGMENTED_EDGES, _table(EDGES, edges, counts.model, template_hash))
    artifacts.write_parquet(run_dir / artifacts.EDGE_SCORES, scores)
    counts.audit = _audit(run_dir, edges, scores)
    _finish_stage(run_dir, EDGES, params, inputs, [artifacts.AUGMENTED_EDGES, artifacts.EDGE_SCORES], counts)
    return counts


def _ask_scores(
    store: Any, backend: Backend, requests: Sequence[ScoreRequest], desc: str
) -> tuple[list[float | None], dict[int, str], Any]:
    """Each request's log-probability (None: not scored), the first error per request index, and the usage."""
    from llmrec.backends.store import UsageSummary

    logprobs: list[float | None] = [None] * len(requests)
    errors: dict[int, str] = {}
    usage = UsageSummary()
    try:
        with Progress(len(requests), desc, "request", count_valid=True) as progress:
            for index, completion in store.generate_iter(backend, requests, usage, progress=False):
                logprobs[index] = read_score(completion)
                if logprobs[index] is None:
                    errors[index] = completion.text[:200]
                progress.update(1, valid=logprobs[index] is not None, free=completion.cached)
    finally:
        logger.info("%s %s: %s", backend.name, backend.model_id, usage.describe())
    return logprobs, errors, usage
