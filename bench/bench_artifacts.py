"""What the read-time checksum check of run artifacts costs, against reading the same files without it.

Every artifact a stage reads from a run is hashed (sha256, streamed from the
open file) and compared with the manifest's record before it is parsed
(`llmrec.artifacts.open_run_artifact`). Measured here on a real ml-latest-small
run, in one process, page cache warm for both sides, fastest of `--repeats`:

- per file: the plain parse (`pd.read_parquet(path)`, `np.load(path)`,
  `json.loads`) against the checked reader (`read_run_parquet`, `load_run_npy`,
  `read_run_json`) with the digest not yet known (the first read of that file
  version in a process) and already known (a second read of the same version);
- per stage reader: `load_split` (what `llmrec data info` reads) and
  `load_run_data` (what `llmrec train` reads: the tables, the embeddings, the
  augmented edges, and the inputs' digests it records), with the check and with
  the manifest not consulted (the reader then hashes only for the recorded
  inputs, as it did before the check existed).

Run: `python -m bench artifacts [--run RUN]` (writes bench/results/artifacts.md).
Without `--run` it prepares ml-latest-small (and embeds it, for the .npy files)
into a temporary folder with the real stages.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmrec import artifacts
from llmrec.data.tables import load_split
from llmrec.recommender.data import load_run_data

from bench.machine import cpu_name

RESULTS = Path(__file__).parent / "results" / "artifacts.md"
READERS: dict[str, tuple[Callable[[Path], Any], Callable[[Path, str], Any]]] = {
    ".parquet": (pd.read_parquet, artifacts.read_run_parquet),
    ".npy": (lambda path: np.load(path, allow_pickle=False), artifacts.load_run_npy),
    ".json": (lambda path: json.loads(path.read_text(encoding="utf-8")), artifacts.read_run_json),
}


def paired_best(measures: list[tuple[Callable[[], Any], Callable[[], None]]], repeats: int) -> list[float]:
    """The fastest time of each (function, set-up) over `repeats` rounds, the measures taken in turn within each
    round, so that the load of a shared machine drifting during the run weighs on every side alike."""
    best = [float("inf")] * len(measures)
    for _ in range(repeats):
        for index, (function, before) in enumerate(measures):
            before()
            start = time.perf_counter()
            function()
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def nothing() -> None:
    pass


def forget_digests() -> None:
    """As in a new process: no file digest known, the manifest not parsed yet."""
    artifacts._DIGESTS.clear()
    artifacts._RECORDS.clear()


class ManifestIgnored:
    """The check switched off: no file is found in the manifest, so none is hashed before it is parsed."""

    def __enter__(self) -> None:
        self.saved = artifacts.recorded_output
        artifacts.recorded_output = lambda run_dir, rel: None  # type: ignore[assignment]

    def __exit__(self, *exc: object) -> None:
        artifacts.recorded_output = self.saved  # type: ignore[assignment]


def read_files(run: Path) -> list[str]:
    """The recorded parquet / npy / json artifacts of the run that some stage reads."""
    outputs = {rel for entry in artifacts.read_manifest(run)["stages"].values() for rel in entry["outputs"]}
    read = [rel for rel in sorted(outputs) if Path(rel).suffix in READERS and not rel.endswith("_mask.npy")]
    return [rel for rel in read if not rel.startswith(f"{artifacts.MODEL_DIR}/") or rel == artifacts.COMPARISON
            or rel.endswith("/metrics.json")]  # fmt: skip


def file_rows(run: Path, repeats: int) -> tuple[list[str], dict[str, float]]:
    rows, totals = [], {"plain": 0.0, "checked": 0.0, "cached": 0.0, "bytes": 0.0}
    for rel in read_files(run):
        plain_read, checked_read = READERS[Path(rel).suffix]
        path = run / rel
        plain, checked, cached = paired_best([
            (lambda: plain_read(path), nothing),
            (lambda: checked_read(run, rel), forget_digests),
            (lambda: checked_read(run, rel), lambda: checked_read(run, rel)),  # a first read leaves the digest known
        ], repeats)  # fmt: skip
        size = path.stat().st_size
        for key, value in (("plain", plain), ("checked", checked), ("cached", cached), ("bytes", size)):
            totals[key] += value
        rows.append(f"| `{rel}` | {size / 1e6:.3f} | {plain * 1e3:.2f} | {checked * 1e3:.2f} | "
                    f"{(checked - plain) * 1e3:+.2f} ({(checked / plain - 1) * 100:+.0f}%) | {cached * 1e3:.2f} |")
    return rows, totals


def stage_rows(run: Path, repeats: int) -> list[str]:
    rows = []
    for label, reader in (("`load_split` (`llmrec data info`, first step of every stage)", load_split),
                          ("`load_run_data` (`llmrec train`, `evaluate`, `recommend`)", load_run_data)):  # fmt: skip
        def unchecked_read(reader: Callable[[Path], Any] = reader) -> None:
            with ManifestIgnored():
                reader(run)

        unchecked, checked, cached = paired_best([
            (unchecked_read, forget_digests),
            (lambda: reader(run), forget_digests),
            (lambda: reader(run), lambda: reader(run)),
        ], repeats)  # fmt: skip
        rows.append(f"| {label} | {unchecked * 1e3:.1f} | {checked * 1e3:.1f} | "
                    f"{(checked - unchecked) * 1e3:+.1f} ({(checked / unchecked - 1) * 100:+.0f}%) | {cached * 1e3:.1f} |")
    return rows


def sha256_mb_per_second(run: Path, repeats: int) -> float:
    """Streaming sha256 throughput on this machine, over the run's largest file (page cache warm)."""
    largest = max((path for path in run.rglob("*") if path.is_file()), key=lambda path: path.stat().st_size)
    (seconds,) = paired_best([(lambda: artifacts.sha256_file(largest), nothing)], repeats)
    return largest.stat().st_size / 1e6 / seconds


def prepared_run(folder: Path) -> Path:
    from llmrec.data.config import PrepareConfig
    from llmrec.data.prepare import prepare_run
    from llmrec.embed import embed_run

    run = folder / "run"
    prepare_run(run, PrepareConfig(dataset="ml-latest-small"))
    embed_run(run)
    time.sleep(artifacts._SETTLED_SECONDS + 0.1)  # as for any later command: the files are no longer fresh
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench artifacts", description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="An existing run (default: ml-latest-small prepared and embedded "
                                                 "into a temporary folder).")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=7, help="Timed repeats per measure (the fastest is kept).")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-artifacts-") as folder:
        run = args.run if args.run is not None else prepared_run(Path(folder))
        which = str(args.run) if args.run is not None else "ml-latest-small prepared and embedded by the real stages"
        stages = artifacts.read_manifest(run)["stages"]
        prepared = stages.get("prepare", {})
        which += (f" ({prepared.get('params', {}).get('dataset', '?')}: {prepared.get('stats', {}).get('users', '?')} "
                  f"users, {prepared.get('stats', {}).get('items', '?')} items; stages {', '.join(sorted(stages))})")
        files, totals = file_rows(run, args.repeats)
        stages = stage_rows(run, args.repeats)
        throughput = sha256_mb_per_second(run, args.repeats)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    overhead = totals["checked"] - totals["plain"]
    text = "\n".join([
        "# Read-time checksum check of run artifacts: cost against reading without it", "",
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, load average {load} while measuring (shared with other "
        f"jobs). Run: {which}. Times in ms, fastest of {args.repeats} rounds (the measures of a row taken in turn within each round), page cache warm for both sides, one process.",
        "", "Per file: the plain parse, the checked reader with the digest not yet known in the process (hash + "
        "compare + parse: what a command pays on its first read of the file), and the checked reader when the same "
        "file version was already hashed by the process.", "",
        "| file | MB | plain ms | checked ms | check costs | checked, digest known ms |",
        "|---|---:|---:|---:|---:|---:|", *files,
        f"| all {len(files)} files | {totals['bytes'] / 1e6:.3f} | {totals['plain'] * 1e3:.2f} | "
        f"{totals['checked'] * 1e3:.2f} | {overhead * 1e3:+.2f} ({(totals['checked'] / totals['plain'] - 1) * 100:+.0f}%)"
        f" | {totals['cached'] * 1e3:.2f} |", "",
        "Per stage reader, with the check and with the manifest not consulted (then nothing is hashed before it is "
        "parsed; `load_run_data` still hashes its inputs once, for the digests the train stage records, as before "
        "the check existed):", "",
        "| reader | without check ms | with check ms | check costs | with check, digests known ms |",
        "|---|---:|---:|---:|---:|", *stages, "",
        f"Streaming sha256 (hashlib) on this machine: {throughput:.0f} MB/s, so the check of a file costs about its "
        "size over that figure; a file read twice by one process (same inode, size and times) is hashed once.", "",
        f"Regenerate: `python -m bench artifacts{' --run ' + str(args.run) if args.run else ''}`.", "",
    ])  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
