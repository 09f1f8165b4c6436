"""`llmrec audit profiles`: how often LLM-inferred age and gender match the truth.

ml-100k and ml-1m publish user demographics; the profile prompt never sees
them, so they are ground truth for the profiles the LLM wrote. An accuracy
means little on its own (MovieLens users are mostly male), so each is shown
next to the majority-class baseline on the same users. Ages are compared as
the ml-1m brackets (ml-1m publishes only those; ml-100k ages are binned the
same way).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmrec import artifacts
from llmrec.errors import ArtifactError

#: Lower bounds of the ml-1m age brackets; an ml-1m age code is its bracket's lower bound.
AGE_BRACKET_STARTS = (0, 18, 25, 35, 45, 50, 56)
AGE_BRACKET_LABELS = ("under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
_GENDER_CODES = {"m": "male", "male": "male", "f": "female", "female": "female"}


@dataclasses.dataclass(frozen=True)
class FieldAudit:
    """One compared field: how many users had both values, accuracy, and the majority baseline."""

    field: str
    compared: int
    profiles_with_value: int
    accuracy: float | None
    majority_class: str | None
    majority_accuracy: float | None


@dataclasses.dataclass(frozen=True)
class ProfileAudit:
    dataset: str
    profiles: int
    fields: list[FieldAudit]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        lines = [f"profile audit ({self.dataset}): {self.profiles} LLM profiles",
                 f"{'field':<12}{'compared':>9}{'accuracy':>10}{'majority':>10}  majority class"]
        for audit in self.fields:
            accuracy = "-" if audit.accuracy is None else f"{audit.accuracy:.3f}"
            baseline = "-" if audit.majority_accuracy is None else f"{audit.majority_accuracy:.3f}"
            lines.append(f"{audit.field:<12}{audit.compared:>9}{accuracy:>10}{baseline:>10}  {audit.majority_class or '-'}")
        return "\n".join(lines)


def age_brackets(ages: pd.Series) -> pd.Series:
    """ml-1m bracket label of each age (or ml-1m age code); missing stays missing."""
    values = pd.to_numeric(ages, errors="coerce")
    index = np.searchsorted(AGE_BRACKET_STARTS, values.fillna(-1).to_numpy(), side="right") - 1
    labels = pd.Series([AGE_BRACKET_LABELS[i] if i >= 0 else None for i in index], index=ages.index, dtype="object")
    return labels.where(values.notna(), None)


def genders(values: pd.Series) -> pd.Series:
    return values.map(lambda v: _GENDER_CODES.get(str(v).strip().lower()) if isinstance(v, str) else None)


def _compare(field: str, truth: pd.Series, predicted: pd.Series) -> FieldAudit:
    """Accuracy on users with both values, and that of always answering the truth's majority class."""
    both = truth.notna() & predicted.notna()
    compared = int(both.sum())
    if compared == 0:
        return FieldAudit(field, 0, int(predicted.notna().sum()), None, None, None)
    truth_kept = truth[both]
    majority = truth_kept.value_counts().idxmax()
    return FieldAudit(
        field=field,
        compared=compared,
        profiles_with_value=int(predicted.notna().sum()),
        accuracy=float((truth_kept == predicted[both]).mean()),
        majority_class=str(majority),
        majority_accuracy=float((truth_kept == majority).mean()),
    )


def audit_profiles(run_dir: Path | str) -> ProfileAudit:
    """Compare `user_profiles.parquet` with the demographics in `users.parquet`; writes `audit_profiles.json`."""
    run_dir = Path(run_dir)
    users = artifacts.read_run_parquet(run_dir, artifacts.USERS, ["user"])
    dataset = artifacts.read_manifest(run_dir)["stages"].get("prepare", {}).get("params", {}).get("dataset", "this dataset")
    users = users[[c for c in users.columns if c == "user" or users[c].notna().any()]]
    if "age" not in users.columns and "gender" not in users.columns:
        raise ArtifactError(
            f"{run_dir / artifacts.USERS}: {dataset} has no user demographics (age/gender), so LLM profiles "
            "cannot be audited; use ml-100k or ml-1m"
        )
    profiles = artifacts.read_run_parquet(run_dir, artifacts.USER_PROFILES, ["user", "age", "gender"])
    predicted = profiles.set_index("user")
    truth = users.set_index("user").reindex(predicted.index)
    fields = []
    if "age" in truth.columns:
        fields.append(_compare("age bracket", age_brackets(truth["age"]), age_brackets(predicted["age"])))
    if "gender" in truth.columns:
        fields.append(_compare("gender", genders(truth["gender"]), genders(predicted["gender"])))
    audit = ProfileAudit(dataset=str(dataset), profiles=len(profiles), fields=fields)
    artifacts.write_json(run_dir / artifacts.AUDIT_PROFILES, audit.as_dict())
    return audit
