"""The augmentation pipeline against a real vLLM-CPU server (session fixture `vllm_server`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from llmrec.augment.config import AugmentConfig
from llmrec.augment.pipeline import ARTIFACT_FILES, run_augmentation
from llmrec.backends import get_backend

pytestmark = pytest.mark.vllm


def test_vllm_backend_with_schema_constrained_answers(vllm_server, prepared_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(prepared_run, run_dir)
    options = AugmentConfig(limit_users=2, limit_items=2, temperature=0.0, max_tokens=96, history_budget=8, candidates_k=5,
                            store=str(tmp_path / "store.sqlite"), candidates_epochs=2)
    backend = get_backend("vllm", model=vllm_server.served_name, base_url=vllm_server.base_url)
    summary = run_augmentation(run_dir, backend, options)
    for what, count in summary.counts.items():
        assert count.valid + count.repaired + count.failed == count.requested > 0
        kept = count.consistency["kept"] if what == "edges" else count.valid + count.repaired
        assert len(pd.read_parquet(run_dir / ARTIFACT_FILES[what])) == kept
    # Constrained decoding: edge answers are always JSON with in-range candidate numbers, so the
    # only failure left for a tiny model is picking the same candidate twice.
    edge_reasons = {f["reason"] for f in summary.counts["edges"].failures}
    assert edge_reasons <= {"liked and disliked are the same candidate"}
