"""Careful file readers: every parse failure becomes a `DataError` naming the file.

Dataset files are user input. A wrong delimiter, encoding or header must stop
preparation with one line that says which file, which column and what was
expected, not a pandas traceback or (worse) a silently misread column.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.artifacts import sha256_file
from llmrec.errors import DataError

_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})\)\s*$")


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: missing (expected {what})")
    return path


def read_text(path: Path, encoding: str) -> str:
    """Decode a whole file, reporting the byte offset of a bad character."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line} is not valid {encoding} (byte {data[exc.start:exc.start + 1]!r}); "
            f"set the file's encoding (e.g. --encoding latin-1)"
        ) from None
    except LookupError:
        raise DataError(f"{path}: unknown encoding {encoding!r}") from None


def read_table(
    path: Path,
    *,
    sep: str,
    encoding: str,
    names: list[str] | None = None,
    usecols: list[str] | None = None,
    quoted: bool = False,
    what: str,
) -> pd.DataFrame:
    """Read a delimited file; `names` means the file has no header.

    Types are inferred by the C parser (fast for million-row files); empty
    fields stay "" rather than NaN, so a gap turns a numeric column into text
    and the `int_column` / `float_column` checks then name the bad row.

    Headerless MovieLens files are not quoted (titles contain bare quotes), so
    quoting is off for them unless `quoted`; files with a header follow CSV quoting.

    Multi-character separators (ml-1m's `::`) are mapped to a control
    character first so the fast C parser can read them.
    """
    text = read_text(require_file(path, what), encoding)
    if len(sep) > 1:
        text = text.replace(sep, "\x1f")
        sep = "\x1f"
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=None if names else 0,
            names=names,
            keep_default_na=False,
            quoting=csv.QUOTE_NONE if names and not quoted else csv.QUOTE_MINIMAL,
            skip_blank_lines=True,
            index_col=False,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot parse as {what} ({str(exc).strip()})") from None
    if names and not quoted and text.count(sep) != (len(names) - 1) * len(frame):
        _report_short_line(path, text, sep, len(names), what)
    if usecols:
        check_columns(path, frame, usecols, what)
    return frame


def _report_short_line(path: Path, text: str, sep: str, expected: int, what: str) -> None:
    """Find the line the parser padded with empty fields (it reports long lines itself)."""
    lines = pd.Series(text.splitlines())
    fields = lines.str.count(re.escape(sep)) + 1
    short = (fields < expected) & (lines.str.strip() != "")
    if short.any():
        line = int(np.flatnonzero(short.to_numpy())[0]) + 1
        raise DataError(f"{path}: line {line} has {fields[line - 1]} fields, fewer than {expected}; expected {what}")


def check_columns(path: Path, frame: pd.DataFrame, required: list[str], what: str) -> None:
    absent = [c for c in required if c not in frame.columns]
    if absent:
        raise DataError(
            f"{path}: missing column(s) {absent}; found {list(frame.columns)}; expected {what}"
        )


def int_column(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    """Parse an id column as int64, naming the first bad value and its line."""
    if pd.api.types.is_integer_dtype(frame[column]):
        return frame[column].to_numpy(dtype=np.int64)
    values = frame[column].astype(str).str.strip()
    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna() | (parsed != parsed.round())
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path}: column '{column}' row {row + 1}: {values.iloc[row]!r} is not an integer id"
        )
    return parsed.to_numpy(dtype=np.int64)


def check_unique(path: Path, ids: np.ndarray, column: str) -> None:
    """Metadata rows must be one per id, or joining them would duplicate interactions."""
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{path}: column '{column}' repeats id {unique[counts > 1][0]}; expected one row per id")


def float_column(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column]):
        return frame[column].to_numpy(dtype=np.float64)
    values = frame[column].astype(str).str.strip()
    parsed = pd.to_numeric(values, errors="coerce")
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise DataError(f"{path}: column '{column}' row {row + 1}: {values.iloc[row]!r} is not a number")
    return parsed.to_numpy(dtype=np.float64)


def split_title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Split MovieLens titles 'Heat (1995)' into ('Heat', 1995); no year -> <NA>."""
    titles = titles.astype(str)
    years = titles.str.extract(_YEAR_SUFFIX, expand=False)
    clean = titles.str.replace(_YEAR_SUFFIX, "", regex=True).str.strip()
    return clean, pd.to_numeric(years, errors="coerce").astype("Int64")


def checksums(paths: dict[str, Path]) -> dict[str, str]:
    return {name: sha256_file(path) for name, path in paths.items()}
