"""Datasets by name: what files each needs, how to parse them, where to fetch them.

`llmrec data prepare NAME` and `llmrec data list` only talk to this registry,
so adding a dataset is one `DatasetSpec` and one loader function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llmrec.data import movielens
from llmrec.errors import DataError

if TYPE_CHECKING:
    from llmrec.data.prepare import PrepareConfig
    from llmrec.data.raw import RawDataset

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"
GROUPLENS_LICENCE = (
    "GroupLens usage licence: research use, no commercial use without permission, "
    "cite Harper & Konstan 2015"
)
NO_REDISTRIBUTION = "; no redistribution: download it from GroupLens, never bundle it"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its files, its parser and (for GroupLens releases) its zip.

    `zip_md5` is the checksum GroupLens publishes beside each zip;
    `member_sha256` pins files inside the zip where their sha256 is known.
    A spec without `url` reads only the user's own files (`--data-dir`).
    """

    name: str
    description: str
    licence: str
    required_files: tuple[str, ...]
    load: Callable[[Path, PrepareConfig], RawDataset]
    url: str | None = None
    zip_md5: str | None = None
    member_sha256: Mapping[str, str] = field(default_factory=dict)


def _csv(root: Path, config: PrepareConfig) -> RawDataset:
    from llmrec.data.generic_csv import load_csv

    return load_csv(root, config)


def _llmrec_format(root: Path, config: PrepareConfig) -> RawDataset:
    from llmrec.data.llmrec_format import load_llmrec_format

    return load_llmrec_format(root, config)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="ml-latest-small",
            description="MovieLens latest-small (2018): 100,836 ratings, 610 users, 9,742 movies",
            licence=GROUPLENS_LICENCE + "; redistribution allowed under the same terms",
            required_files=("ratings.csv", "movies.csv"),
            load=lambda root, _config: movielens.load_ml_latest_small(root),
            url=GROUPLENS_URL.format(name="ml-latest-small"),
            member_sha256={
                "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
                "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
            },
        ),
        DatasetSpec(
            name="ml-100k",
            description="MovieLens 100K (1998): 100,000 ratings, 943 users with age/gender/occupation",
            licence=GROUPLENS_LICENCE + NO_REDISTRIBUTION,
            required_files=("u.data", "u.item", "u.user"),
            load=lambda root, _config: movielens.load_ml_100k(root),
            url=GROUPLENS_URL.format(name="ml-100k"),
            zip_md5="0e33842e24a9c977be4e0107933c0723",
        ),
        DatasetSpec(
            name="ml-1m",
            description="MovieLens 1M (2003): 1,000,209 ratings, 6,040 users with demographics",
            licence=GROUPLENS_LICENCE + NO_REDISTRIBUTION,
            required_files=("ratings.dat", "movies.dat", "users.dat"),
            load=lambda root, _config: movielens.load_ml_1m(root),
            url=GROUPLENS_URL.format(name="ml-1m"),
            zip_md5="c4d9eecfca2ab87c1945afe126590906",
        ),
        DatasetSpec(
            name="csv",
            description="your own interactions + item metadata files (columns set by options)",
            licence="yours",
            required_files=(),
            load=_csv,
        ),
        DatasetSpec(
            name="llmrec-format",
            description="a data folder as LLMRec released it (train/val/test.json, item_attribute.csv)",
            licence="as released by the LLMRec authors (Netflix / MovieLens derived)",
            required_files=("train.json", "val.json", "test.json", "item_attribute.csv"),
            load=_llmrec_format,
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None
