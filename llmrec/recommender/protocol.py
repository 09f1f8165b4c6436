"""Which data selects the model and which data tests it, per evaluation protocol.

- `standard`: select on validation (train items masked), then test ONCE with
  the selected weights (train + val items masked); standard NDCG.
- `paper`: what the original LLMRec code does, for comparing with the
  published table only: select on the TEST set (train items masked only) and
  report the LATTICE/NGCF NDCG variant. It is not a held-out estimate. It
  changes the evaluation only; `model_variant = "original"` (options.py)
  changes the model, and every label names both.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import scipy.sparse as sp

from llmrec.artifacts import SPLIT_FILES, TEST, VAL
from llmrec.errors import ArtifactError
from llmrec.evaluation import Evaluator, interactions_to_csr
from llmrec.recommender.data import RunData

PROTOCOL_LABELS = {
    "standard": "standard: selected on validation Recall@20; test read once; train+val items masked; standard NDCG",
    "paper": (
        "paper: the original LLMRec code's evaluation (selected on TEST Recall@20, only train items masked, "
        "LATTICE NDCG variant); for comparison with the published table only, not a held-out estimate"
    ),
}
MODEL_LABELS = {
    "project": "this project's model",
    "original": (
        "the original LLMRec model (row-only normalisation, last-layer softmax, AdamW wd 0.01, "
        "hardest-29% pruning over all samples, attribute-level BPR 0.012)"
    ),
}


def protocol_label(protocol: str, model_variant: str = "project") -> str:
    """Which evaluation and which model produced a number: the "paper" protocol alone changes only evaluation."""
    return f"{PROTOCOL_LABELS[protocol]}; model: {MODEL_LABELS[model_variant]}"


@dataclass
class ProtocolEvaluators:
    selection: Evaluator  # consulted every evaluation epoch
    selection_split: str  # which split `selection` ranks against
    test: Evaluator | None  # consulted once, after training


def split_matrix(data: RunData, split: str) -> sp.csr_matrix:
    frame = pd.DataFrame(data.interactions[split], columns=["user", "item"])
    return interactions_to_csr(frame, data.n_users, data.n_items, name=SPLIT_FILES[split])


def _require_users(evaluator: Evaluator, data: RunData, split: str) -> None:
    """Refuse a selection split without users: every score would be NaN and the untrained model "best"."""
    if len(evaluator.users) == 0:
        raise ArtifactError(
            f"{data.run_dir / SPLIT_FILES[split]}: no user has an interaction in it, so there is nothing to select "
            "the model on; prepare the run with a non-empty validation split"
        )


def build_evaluators(
    data: RunData, protocol: str, device: str, batch_size: int, with_test: bool = True
) -> ProtocolEvaluators:
    """The selection and test evaluators of `protocol`; `with_test=False` never touches the test split."""
    train = split_matrix(data, "train")
    if protocol == "paper":
        test = Evaluator(split_matrix(data, "test"), train, protocol="paper", batch_size=batch_size, device=device)
        _require_users(test, data, "test")
        return ProtocolEvaluators(test, "test", test)
    val, test = split_matrix(data, "val"), split_matrix(data, "test")
    if val.nnz and val.shape == test.shape and (val != test).nnz == 0:
        # the original release's flaw (LLMRec issue #31): selecting on it is selecting on the test set, and
        # masking val items at test time would mask every test item
        raise ArtifactError(
            f"{data.run_dir / VAL}: identical to {TEST}, so validation selection would select on "
            "the test set; re-prepare with `--llmrec-val-from-train 0.1` (carves validation out of train) or use "
            "--protocol paper"
        )
    selection = Evaluator(val, train, batch_size=batch_size, device=device)
    _require_users(selection, data, "val")
    test_evaluator = None
    if with_test:
        test_evaluator = Evaluator(test, train + val, batch_size=batch_size, device=device)
    return ProtocolEvaluators(selection, "val", test_evaluator)
