"""The tables of docs/results.md's edge section, from the run directories that made them.

    python docs/results/edge_tables.py audit RUN [RUN ...]          # one audit row per run's edges
    python docs/results/edge_tables.py paired MODEL_RUN:NAME OTHER_RUN:NAME [...]

`audit` prints each run's `augment_report.json` edge audit (the pipeline wrote
it when the edges were made) as a markdown row. `paired` runs the comparison's
own Wilcoxon test (`llmrec.recommender.comparison.paired_test`) between
models trained in different run directories on the same split and seeds
(e.g. LLMRec with scored edges in one run, with the control's edges in another).
"""

from __future__ import annotations

import sys
from pathlib import Path

from llmrec import artifacts
from llmrec.recommender.comparison import paired_test


def _cell(estimate: dict, scale: float = 100.0, digits: int = 1) -> str:
    if estimate["value"] is None:
        return "-"
    return f"{scale * estimate['value']:.{digits}f} [{scale * estimate['low']:.{digits}f}, {scale * estimate['high']:.{digits}f}]"


def audit_rows(runs: list[str]) -> None:
    print("| run | method | model | users audited | liked hit % | random % | base top-1 % | disliked % | AUC (score) | base AUC |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        edges = artifacts.read_json(Path(run) / artifacts.AUGMENT_REPORT)["edges"]
        audit = edges["audit"]
        auc = next((row for row in audit.get("auc", []) if row["score"] == "score"), None)
        print(f"| {Path(run).name} | {edges['scoring'].get('edge_method', 'choose')} | {edges['model']} | "
              f"{audit['audited_users']} | {_cell(audit['liked'])} | {_cell(audit['random_pick'])} | "
              f"{_cell(audit['base_top1'])} | {_cell(audit['disliked'])} | "
              f"{_cell(auc['auc'], 1, 3) if auc else '-'} | {_cell(auc['base_auc'], 1, 3) if auc else '-'} |")


def paired(pairs: list[str]) -> None:
    def load(spec: str) -> dict:
        run, name = spec.rsplit(":", 1)
        return artifacts.read_json(Path(run) / artifacts.MODEL_DIR / name / "metrics.json")

    model = load(pairs[0])
    for other in pairs[1:]:
        test = paired_test(model, load(other))
        print(f"{pairs[0]} vs {other}: {test['pairs']} pairs, mean difference {test['mean_difference']:+.4f}, "
              f"{test['better']} better / {test['worse']} worse, p = {test['p_value']:.3g}")


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    audit_rows(arguments) if command == "audit" else paired(arguments)
