"""`[data]`: the options of `llmrec data prepare`, one field each (see `llmrec.config`).

Kept free of numpy and pandas: the CLI builds its flags from this class at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from llmrec.config import option
from llmrec.errors import ConfigError

SPLIT_METHODS = ("random", "temporal", "leave-last")


@dataclass(frozen=True)
class PrepareConfig:
    """Options of `llmrec data prepare` (TOML table `[data]`).

    The `csv_*` options map the columns of the `csv` dataset; `encoding`
    applies to the `csv` and `llmrec-format` text files; `llmrec_layout`
    says whether an LLMRec `item_attribute.csv` is MovieLens (id,title,genre)
    or Netflix (id,year,title); `auto` tells them apart by the second column.
    An empty `csv_rating_column` means the file is implicit feedback already.
    """

    section: ClassVar[str] = "data"

    dataset: str = "ml-latest-small"  # `data prepare` takes it as its argument, `run` as --dataset
    data_dir: str | None = option(None, "--data-dir", cli_type=Path, help="Folder holding the dataset's files.")
    seed: int = option(2024, "--seed", help="Seed of the random split.")
    min_rating: float = option(4.0, "--min-rating", help="Ratings >= this are positives (default {default}).")
    keep_all_ratings: bool = option(
        False, "--keep-all-ratings/--threshold-ratings", help="Treat every rating as a positive."
    )
    kcore: int = option(0, "--kcore", help="Iterative k-core filter (0 = off).")
    split: str = option("random", "--split", help="random | temporal | leave-last.")
    val_ratio: float = 0.1
    test_ratio: float = 0.1
    min_user_interactions: int = option(
        3, "--min-user-interactions", help="Users with fewer interactions go entirely to train (default {default})."
    )
    trust_pickle: bool = option(
        False, "--trust-pickle", help="Load pickled files of an LLMRec release (runs code from them)."
    )
    csv_interactions: str = option("ratings.csv", "--interactions", help="csv: interactions file in --data-dir.")
    csv_items: str = option("movies.csv", "--items", help="csv: item metadata file in --data-dir.")
    csv_user_column: str = option("userId", "--user-col", help="csv: user id column.")
    csv_item_column: str = option("movieId", "--item-col", help="csv: item id column of the interactions.")
    csv_rating_column: str = option("rating", "--rating-col", help="csv: rating column ('' = implicit).")
    csv_timestamp_column: str = option("timestamp", "--timestamp-col", help="csv: timestamp column ('' = none).")
    csv_item_id_column: str = option("movieId", "--item-id-col", help="csv: item id column of the items file.")
    csv_title_column: str = option("title", "--title-col", help="csv: title column.")
    csv_genres_column: str = option("genres", "--genres-col", help="csv: genres column ('' = none).")
    csv_delimiter: str = option(",", "--delimiter", help="csv: field delimiter.")
    encoding: str = option("utf-8", "--encoding", help="csv / llmrec-format: file encoding (e.g. latin-1).")
    llmrec_layout: str = "auto"
    llmrec_val_from_train: float = option(
        0.0, "--llmrec-val-from-train",
        help="llmrec-format: move this fraction of each user's train items to validation, ignoring val.json "
             "(the released val.json equals test.json).",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.split not in SPLIT_METHODS:
            raise ConfigError(f"[data] split must be one of {SPLIT_METHODS}, got {self.split!r}")
        if not (0 < self.val_ratio < 1 and 0 < self.test_ratio < 1 and self.val_ratio + self.test_ratio < 1):
            raise ConfigError("[data] val_ratio and test_ratio must be in (0, 1) with a sum below 1")
        if self.min_user_interactions < 3:
            raise ConfigError("[data] min_user_interactions must be >= 3 (one train, one val, one test)")
        if self.kcore < 0:
            raise ConfigError("[data] kcore must be >= 0 (0 = no k-core filter)")
        if self.llmrec_layout not in ("auto", "movielens", "netflix"):
            raise ConfigError("[data] llmrec_layout must be auto, movielens or netflix")
        if not 0 <= self.llmrec_val_from_train < 1:
            raise ConfigError("[data] llmrec_val_from_train must be in [0, 1) (0 = use the release's val.json)")
