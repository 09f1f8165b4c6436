"""Careful file readers: every parse failure becomes a `DataError` naming the file.

Dataset files are user input. A wrong delimiter, encoding or header must stop
preparation with one line that says which file, which column and what was
expected, not a pandas traceback or (worse) a silently misread column.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
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
    quoting = csv.QUOTE_NONE if names and not quoted else csv.QUOTE_MINIMAL
    try:
        # With index_col=False pandas drops the fields of a too-long line with only a
        # warning (an unquoted comma in a title would shift the genres silently).
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                io.StringIO(text),
                sep=sep,
                header=None if names else 0,
                names=names,
                keep_default_na=False,
                quoting=quoting,
                skip_blank_lines=True,
                index_col=False,
            )
    except pd.errors.ParserWarning:
        _report_long_line(path, text, sep, quoting, len(names) if names else None, what)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot parse as {what} ({str(exc).strip()})") from None
    if names and not quoted and text.count(sep) != (len(names) - 1) * len(frame):
        _report_short_line(path, text, sep, len(names), what)
    if usecols:
        check_columns(path, frame, usecols, what)
    return frame


def _report_long_line(path: Path, text: str, sep: str, quoting: int, expected: int | None, what: str) -> None:
    """Name the first line with more fields than the header (or `names`) has."""
    rows = csv.reader(io.StringIO(text), delimiter=sep, quoting=quoting)
    for row in rows:
        if expected is None:
            expected = len(row)  # the header line
        elif len(row) > expected:
            raise DataError(f"{path}: line {rows.line_num} has {len(row)} fields, more than {expected}; expected {what}")
    raise DataError(f"{path}: some line has more fields than the header; expected {what}")


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
    # "inf" and 1e23 parse as floats but have no int64 value (the cast would make garbage ids).
    bad = parsed.isna() | (parsed != parsed.round()) | ~parsed.abs().lt(2**63)
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
    """Parse a numeric column as float64; NaN and infinities ("inf") are refused, naming the row."""
    values = frame[column]
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        parsed = values.astype(np.float64)
    else:
        parsed = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
    bad = ~np.isfinite(parsed.to_numpy(dtype=np.float64))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: column '{column}' row {row + 1}: {str(values.iloc[row]).strip()!r} is not a finite number")
    return parsed.to_numpy(dtype=np.float64)


def split_title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Split MovieLens titles 'Heat (1995)' into ('Heat', 1995); no year -> <NA>."""
    titles = titles.astype(str)
    years = titles.str.extract(_YEAR_SUFFIX, expand=False)
    clean = titles.str.replace(_YEAR_SUFFIX, "", regex=True).str.strip()
    return clean, pd.to_numeric(years, errors="coerce").astype("Int64")


def checksums(paths: dict[str, Path]) -> dict[str, str]:
    return {name: sha256_file(path) for name, path in paths.items()}
