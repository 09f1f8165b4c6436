"""`llmrec augment` with stderr going to a file (CI, `nohup`): progress comes as log lines at a steady interval.

How many lines come depends on how fast the host is; this test asserts what
every host must show (counts in order, ending on the final line). The timer's
cadence is tested with a fake clock in tests/core/test_progress.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from llmrec.progress import INTERVAL_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_real_augmentation_with_stderr_to_a_file_logs_steady_progress_lines(prepared_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(prepared_run, run)
    log = tmp_path / "augment.log"
    env = {**os.environ, INTERVAL_ENV: "0.05"}
    with open(log, "w") as stderr:
        result = subprocess.run(
            [sys.executable, "-m", "llmrec", "augment", str(run), "--what", "profiles", "--limit-users", "2",
             "--max-tokens", "16", "--history-budget", "5", "--temperature", "0", "--store", str(tmp_path / "s.sqlite")],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=REPO_ROOT, timeout=900,
        )  # fmt: skip
    text = log.read_text()
    assert result.returncode == 0, text[-3000:]
    lines = re.findall(r"llmrec\.progress: (profiles smollm2-135m: .*)", text)
    # Loading the model and two generations outlast one 0.05 s interval on any host, so there is at least
    # the final line; how many timer lines precede it is the host's speed, not asserted.
    assert lines, text[-3000:]
    done = []
    for line in lines:
        match = re.match(r"profiles smollm2-135m: ([0-2])/2 prompts \(\d+%\), [0-2] valid, ", line)
        assert match, line
        done.append(int(match.group(1)))
    assert done == sorted(done), lines  # counts only go up, line after line
    assert re.fullmatch(r"profiles smollm2-135m: 2/2 prompts \(100%\), [0-2] valid, .*in \d+s", lines[-1]), lines[-1]
