"""Bad dataset input: one clear error naming file and field, exit code 2, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmrec.data import PrepareConfig, prepare_run
from llmrec.errors import ConfigError, DataError

from . import fixtures

REPO_ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMREC_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", "from llmrec.cli import main; main()", *args],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120,
    )  # fmt: skip


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def test_cli_unknown_dataset(tmp_path: Path, isolated_home: Path) -> None:
    result = _cli("data", "prepare", "ml-5m", "--run", str(tmp_path / "run"), home=isolated_home)
    line = _one_error_line(result)
    assert "unknown dataset 'ml-5m'" in line and "ml-latest-small" in line
    assert not (tmp_path / "run").exists()


def test_cli_missing_file(tmp_path: Path, isolated_home: Path) -> None:
    source = fixtures.write_ml_100k(tmp_path / "ml-100k")
    (source / "u.item").unlink()
    run = str(tmp_path / "run")
    result = _cli("data", "prepare", "ml-100k", "--data-dir", str(source), "--run", run, home=isolated_home)
    line = _one_error_line(result)
    assert f"{source / 'u.item'}: missing" in line
    assert not (tmp_path / "run").exists()


def test_cli_bad_encoding_names_file_line_and_fix(tmp_path: Path, isolated_home: Path) -> None:
    source = fixtures.write_movielens_csv(tmp_path / "mine", encoding="latin-1")
    run = str(tmp_path / "run")
    result = _cli("data", "prepare", "csv", "--data-dir", str(source), "--run", run, home=isolated_home)
    line = _one_error_line(result)
    assert "movies.csv: line 3 is not valid utf-8" in line and "--encoding latin-1" in line
    assert not (tmp_path / "run").exists()
    fixed = _cli(
        "data", "prepare", "csv", "--data-dir", str(source), "--encoding", "latin-1",
        "--run", str(tmp_path / "run"), home=isolated_home,
    )  # fmt: skip
    assert fixed.returncode == 0, fixed.stderr
    assert (tmp_path / "run" / "items.parquet").is_file()


def test_cli_bad_option_value_is_a_config_error(tmp_path: Path, isolated_home: Path) -> None:
    result = _cli("data", "prepare", "--split", "weekly", "--run", str(tmp_path / "run"), home=isolated_home)
    assert "split must be one of" in _one_error_line(result)


def test_renamed_column(tmp_path: Path) -> None:
    source = fixtures.write_movielens_csv(tmp_path / "mine")
    ratings = source / "ratings.csv"
    ratings.write_text(ratings.read_text().replace("userId", "user_id", 1))
    with pytest.raises(DataError, match=r"ratings.csv: missing column\(s\) \['userId'\]; found \['user_id'"):
        prepare_run(tmp_path / "run", PrepareConfig(dataset="csv", data_dir=str(source)))
    assert not (tmp_path / "run").exists()


def test_non_numeric_id(tmp_path: Path) -> None:
    source = fixtures.write_ml_1m(tmp_path / "ml-1m")
    ratings = source / "ratings.dat"
    lines = ratings.read_text(encoding="latin-1").splitlines(keepends=True)
    lines[2] = lines[2].replace("1::", "u1::", 1)
    ratings.write_text("".join(lines), encoding="latin-1")
    with pytest.raises(DataError, match=r"ratings.dat: column 'user' row 3: 'u1' is not an integer id"):
        prepare_run(tmp_path / "run", PrepareConfig(dataset="ml-1m", data_dir=str(source)))
    assert not (tmp_path / "run").exists()


def test_short_line_in_headerless_file(tmp_path: Path) -> None:
    source = fixtures.write_ml_100k(tmp_path / "ml-100k")
    with open(source / "u.user", "a", encoding="latin-1") as handle:
        handle.write("7|30|M\n")
    with pytest.raises(DataError, match=r"u.user: line 7 has 3 fields, fewer than 5"):
        prepare_run(tmp_path / "run", PrepareConfig(dataset="ml-100k", data_dir=str(source)))


def test_empty_after_filtering(tmp_path: Path) -> None:
    source = fixtures.write_movielens_csv(tmp_path / "mine")
    with pytest.raises(DataError, match=r"no interactions left after filtering \(rating >= 4.0, 5-core\)"):
        prepare_run(tmp_path / "run", PrepareConfig(dataset="csv", data_dir=str(source), kcore=5))
    assert not (tmp_path / "run").exists()


def test_duplicate_item_rows(tmp_path: Path) -> None:
    source = fixtures.write_movielens_csv(tmp_path / "mine")
    with open(source / "movies.csv", "a") as handle:
        handle.write("10,Toy Story again (1995),Comedy\r\n")
    with pytest.raises(DataError, match=r"movies.csv: column 'movieId' repeats id 10"):
        prepare_run(tmp_path / "run", PrepareConfig(dataset="csv", data_dir=str(source)))


def test_llmrec_bad_json_and_feature_rows(tmp_path: Path) -> None:
    source = fixtures.write_llmrec_release(tmp_path / "release")
    (source / "val.json").write_text('{"0": ["three"]}')
    with pytest.raises(DataError, match=r"val.json: user 0: expected a list of integer item ids"):
        prepare_run(tmp_path / "run", PrepareConfig(dataset="llmrec-format", data_dir=str(source)))
    source = fixtures.write_llmrec_release(tmp_path / "release2")
    import numpy as np

    np.save(source / "image_feat.npy", np.zeros((5, 4), dtype=np.float32))
    with pytest.raises(DataError, match=r"embeddings/image.npy source has 5 rows; expected n_items = 6"):
        prepare_run(tmp_path / "run", PrepareConfig(dataset="llmrec-format", data_dir=str(source)))
    assert not (tmp_path / "run").exists()


def test_failed_rerun_keeps_the_previous_good_run(tmp_path: Path) -> None:
    source = fixtures.write_movielens_csv(tmp_path / "mine")
    run = tmp_path / "run"
    prepare_run(run, PrepareConfig(dataset="csv", data_dir=str(source)))
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.iterdir() if p.is_file()}
    ratings = source / "ratings.csv"
    ratings.write_text(ratings.read_text().replace("movieId", "film", 1))
    with pytest.raises(DataError):
        prepare_run(run, PrepareConfig(dataset="csv", data_dir=str(source)))
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.iterdir() if p.is_file()} == before


def test_unknown_config_key_is_refused(tmp_path: Path) -> None:
    from llmrec.config import build

    with pytest.raises(ConfigError, match=r"\[data\] unknown option 'min_ratings'"):
        build(PrepareConfig, "data", {"min_ratings": 3})
