"""A backend from another package, found through the `llmrec.backends` entry-point group.

The plug-in is a real distribution (`tests/plugins/llmrec_echo_backend`, with
its own pyproject.toml) that pip installs with `--target` into a folder put on
the subprocess's PYTHONPATH: importlib.metadata reads its dist-info there as it
would in site-packages, without the cost of a venv. `echo` is a rule-based
backend (schema-valid JSON by fixed rules, no model), so the whole augment
pipeline runs on it for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


PLUGIN_SOURCE = Path(__file__).resolve().parents[1] / "plugins" / "llmrec_echo_backend"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the pip-installed plug-in (module + dist-info with its entry point)."""
    source = tmp_path_factory.mktemp("plugin_source") / "llmrec_echo_backend"
    shutil.copytree(PLUGIN_SOURCE, source)  # setuptools writes build/ and *.egg-info beside the sources
    site = tmp_path_factory.mktemp("plugin_site")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-2000:]
    return site


def _env(site: Path | None) -> dict[str, str]:
    env = os.environ.copy()
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return env


def test_the_installed_plugin_is_an_entry_point_llmrec_loads(plugin_site: Path) -> None:
    script = (
        "import importlib.metadata as m\n"
        "from llmrec.backends import backend_availability\n"
        "print([(e.name, e.value, e.dist.name) for e in m.entry_points(group='llmrec.backends')])\n"
        "print(backend_availability()['echo'])\n"
    )
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(plugin_site), timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    entry_points, status = shown.stdout.splitlines()
    assert entry_points == "[('echo', 'llmrec_echo_backend:EchoBackend', 'llmrec-echo-backend')]"
    assert status == "ok (plug-in llmrec_echo_backend:EchoBackend)"


def test_augment_runs_end_to_end_on_a_plugin_backend(plugin_site: Path, prepared_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(prepared_run, run_dir)
    command = [sys.executable, "-m", "llmrec", "augment", str(run_dir), "--backend", "echo", "--model", "rules",
               "--backend-option", "word=Lumiere", "--limit-users", "4", "--limit-items", "4",
               "--candidates-epochs", "2", "--store", str(tmp_path / "store.sqlite")]  # fmt: skip

    absent = subprocess.run(command, capture_output=True, text=True, env=_env(None), timeout=300)
    assert absent.returncode == 2 and "Traceback" not in absent.stderr
    assert "unknown backend 'echo'" in absent.stderr and "'llmrec.backends' entry-point group" in absent.stderr

    finished = subprocess.run(command, capture_output=True, text=True, env=_env(plugin_site), timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    report = json.loads((run_dir / "augment_report.json").read_text())
    for what in ("edges", "profiles", "attributes"):
        assert report[what]["requested"] > 0 and report[what]["valid"] == report[what]["requested"], what
        assert report[what]["model"] == "rules"
    profiles = pd.read_parquet(run_dir / "user_profiles.parquet")
    attributes = pd.read_parquet(run_dir / "item_attributes.parquet")
    assert len(profiles) == report["profiles"]["requested"] and len(attributes) == report["attributes"]["requested"]
    # The plug-in's own option reached it, and its rules decided the stored values.
    assert set(profiles["country"]) == set(attributes["director"]) == {"Lumiere"}
    assert set(profiles["age"]) == {52} and set(profiles["gender"]) == {"female"}
    # It answers candidate numbers 1 and 2 whatever the order: the consistency check keeps no edge.
    consistency = report["edges"]["consistency"]
    assert consistency["position_locked"] == consistency["users"] == 4 and consistency["kept"] == 0
