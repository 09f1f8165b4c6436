"""Texts of a run -> sentence embeddings, cached by (model, sha256(text)).

`embed_run` embeds three things the recommender reads as side information:
item text (title, year, genres), LLM-written item attributes and LLM-written
user profiles. Rows are aligned with the run's contiguous ids; an item or user
without a valid LLM answer gets a zero row and `False` in the matching
`*_mask.npy`, so "missing" is explicit and never confused with a real vector.

Encoding is the slow part (~250-300 short sentences/s on 2 CPU cores), and
many texts repeat across runs (the same items, rerun augmentations), so every
vector is kept in a small SQLite cache under `$LLMREC_HOME/embeddings/`; a
rerun or another run with the same texts encodes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmrec import artifacts
from llmrec.augment.schemas import ATTRIBUTE_ANSWER, PROFILE_ANSWER
from llmrec.embed_config import EmbedConfig
from llmrec.devices import resolve_device
from llmrec.errors import ConfigError
from llmrec.paths import llmrec_home
from llmrec.progress import Progress
from llmrec.sqlite_files import chunks, connect_wal, placeholders

logger = logging.getLogger(__name__)

EMBED_STAGE = "embed"
#: Encoder batches per progress step: large enough that sentence-transformers' own
#: length sorting inside a call still groups similar texts.
_BATCHES_PER_PROGRESS_STEP = 16


@dataclasses.dataclass(frozen=True)
class EmbedSummary:
    """What `embed_run` did: shapes, how many texts were encoded vs served from the cache."""

    model: str
    dim: int
    n_texts: int
    encoded: int
    cached: int
    skipped: bool


def item_texts(items: pd.DataFrame) -> list[str]:
    """`"Title (year); genres: A, B"` per item, from the run's item table."""
    from llmrec.augment.context import movie_descriptions

    texts = []
    for movie in movie_descriptions(items):
        text = movie["title"] + (f" ({movie['year']})" if movie["year"] else "")
        if movie["genres"]:
            text += f"; genres: {movie['genres']}"
        texts.append(text)
    return texts


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, (list, tuple, np.ndarray)):
        return len(value) > 0
    return not (isinstance(value, float) and np.isnan(value)) and str(value) != ""


def _describe(row: pd.Series, fields: Sequence[str]) -> str | None:
    """`"field: value; ..."` of the fields that carry a value, None when none does."""
    parts = []
    for field in fields:
        value = row.get(field)
        if not _present(value):
            continue
        if isinstance(value, (list, tuple, np.ndarray)):
            value = ", ".join(str(v) for v in value)
        parts.append(f"{field.replace('_', ' ')}: {value}")
    return "; ".join(parts) or None


def attribute_texts(n_items: int, attributes: pd.DataFrame | None) -> list[str | None]:
    """Director / country / language text per item id; None where the LLM gave no valid answer."""
    texts: list[str | None] = [None] * n_items
    if attributes is not None:
        for _, row in attributes.iterrows():
            texts[int(row["item"])] = _describe(row, ATTRIBUTE_ANSWER.names)
    return texts


def profile_texts(n_users: int, profiles: pd.DataFrame | None) -> list[str | None]:
    """Profile text per user id; None where the LLM gave no valid profile."""
    texts: list[str | None] = [None] * n_users
    if profiles is not None:
        for _, row in profiles.iterrows():
            texts[int(row["user"])] = _describe(row, PROFILE_ANSWER.names)
    return texts


def cache_path() -> Path:
    return llmrec_home() / "embeddings" / "cache.sqlite"


class EmbeddingCache:
    """Vectors keyed by (model key, sha256 of the text) in one SQLite file.

    Committed once per `put_many`, so a killed run keeps every batch it
    finished. WAL mode lets parallel runs read while one writes.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_path()
        self._db = connect_wal(self.path, timeout_s=60.0, autocommit=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT, text_sha TEXT, dim INTEGER, "
            "vector BLOB, PRIMARY KEY (model, text_sha))"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS models (model TEXT PRIMARY KEY, dim INTEGER)")
        self._db.commit()

    def model_dim(self, model: str) -> int | None:
        row = self._db.execute("SELECT dim FROM models WHERE model = ?", (model,)).fetchone()
        return None if row is None else int(row[0])

    def get_many(self, model: str, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for chunk in chunks(list(text_hashes)):
            marks = placeholders(len(chunk))
            rows = self._db.execute(
                f"SELECT text_sha, dim, vector FROM vectors WHERE model = ? AND text_sha IN ({marks})",
                [model, *chunk],
            )
            for text_sha, dim, blob in rows:
                vector = np.frombuffer(blob, dtype=np.float32)
                if vector.shape == (dim,):
                    found[text_sha] = vector
        return found

    def put_many(self, model: str, vectors: dict[str, np.ndarray]) -> None:
        rows = [(model, sha, int(v.shape[0]), np.asarray(v, dtype=np.float32).tobytes()) for sha, v in vectors.items()]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)
            if rows:
                self._db.execute("INSERT OR REPLACE INTO models VALUES (?, ?)", (model, rows[0][2]))

    def close(self) -> None:
        self._db.close()


@contextlib.contextmanager
def open_cache(path: Path | None = None) -> Iterator[EmbeddingCache]:
    cache = EmbeddingCache(path)
    try:
        yield cache
    finally:
        cache.close()


def resolve_encoder(model: str | None) -> tuple[str, str]:
    """(what to load, cache key). The key fingerprints a local folder by its config files,
    so the same weights installed in two venvs share cache entries."""
    display_name = None
    if model is None:
        from llmrec.bundled import minilm_path

        model, display_name = str(minilm_path()), "all-MiniLM-L6-v2"
    folder = Path(model).expanduser()
    if not folder.exists():
        return model, model  # a hub id: the id is the key
    if not folder.is_dir():
        raise ConfigError(f"{folder}: embedding model must be a folder or a model id")
    digest = hashlib.sha256()
    for name in ("config.json", "modules.json", "config_sentence_transformers.json", "tokenizer.json"):
        if (folder / name).is_file():
            digest.update(name.encode() + (folder / name).read_bytes())
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    for path in weights:
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return str(folder), f"{display_name or folder.name}@{digest.hexdigest()[:16]}"


class TextEncoder:
    """A sentence-transformers model behind the cache; loaded only when a text misses."""

    def __init__(
        self, model: str | None = None, device: str | None = None, batch_size: int = EmbedConfig.batch_size
    ) -> None:
        self.source, self.key = resolve_encoder(model)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self._model: Any = None
        self.encoded = 0
        self.cached = 0

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            try:
                self._model = SentenceTransformer(self.source, device=self.device)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"embedding model '{self.source}' cannot be loaded ({exc})") from None
        return self._model

    def encode(self, texts: Sequence[str], cache: EmbeddingCache) -> np.ndarray:
        """float32 `len(texts) x d`; each distinct text encoded at most once, ever."""
        hashes = [artifacts.sha256_text(text) for text in texts]
        unique = dict(zip(hashes, texts))
        known = cache.get_many(self.key, list(unique))
        missing = [sha for sha in unique if sha not in known]
        self.cached += len(unique) - len(missing)
        if missing:
            logger.info("embedding %d new texts with %s on %s", len(missing), self.key, self.device)
            # Each step is committed as soon as it is encoded: a killed run keeps what it encoded,
            # and its rerun encodes the same steps (the same texts together) as an uninterrupted run.
            for start, vectors in self._encode_texts([unique[sha] for sha in missing]):
                fresh = dict(zip(missing[start : start + len(vectors)], vectors))
                cache.put_many(self.key, fresh)
                known.update(fresh)
                self.encoded += len(fresh)
        if not texts:
            return np.zeros((0, self.dim(cache)), dtype=np.float32)
        return np.stack([known[sha] for sha in hashes]).astype(np.float32, copy=False)

    def _encode_texts(self, texts: list[str]) -> Iterator[tuple[int, np.ndarray]]:
        """Encode in steps of a few batches, yielding (offset, vectors) per step; progress shows on a
        terminal and in a log file alike."""
        model = self._load()
        step = self.batch_size * _BATCHES_PER_PROGRESS_STEP
        with Progress(len(texts), f"embed {self.key.split('@')[0]}", "text") as progress:
            for start in range(0, len(texts), step):
                part = texts[start : start + step]
                vectors = model.encode(part, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
                yield start, vectors.astype(np.float32, copy=False)
                progress.update(len(part))

    def dim(self, cache: EmbeddingCache) -> int:
        """Vector size; read from the cache so a fully cached run never loads the model."""
        known = cache.model_dim(self.key)
        return known if known is not None else int(self._load().get_sentence_embedding_dimension())

    def encode_optional(self, texts: Sequence[str | None], cache: EmbeddingCache) -> tuple[np.ndarray, np.ndarray]:
        """Rows for present texts, zero rows for None; and the boolean mask of present rows."""
        mask = np.array([text is not None for text in texts], dtype=bool)
        present = [text for text in texts if text is not None]
        dim = self.dim(cache)
        matrix = np.zeros((len(texts), dim), dtype=np.float32)
        if present:
            matrix[mask] = self.encode(present, cache)
        return matrix, mask


def _optional_frame(run_dir: Path, rel: str) -> pd.DataFrame | None:
    return artifacts.read_run_parquet(run_dir, rel) if artifacts.run_artifact_present(run_dir, rel) else None


def embed_run(run_dir: Path | str, config: EmbedConfig = EmbedConfig()) -> EmbedSummary:
    """Write `embeddings/*.npy` for a run; a no-op when inputs and model are unchanged."""
    from llmrec.data.tables import load_split

    run_dir = Path(run_dir)
    tables = load_split(run_dir)
    encoder = TextEncoder(config.model, config.device, config.batch_size)
    sources = [name for name in (artifacts.ITEMS, artifacts.ITEM_ATTRIBUTES, artifacts.USER_PROFILES)
               if artifacts.run_artifact_present(run_dir, name)]
    inputs = {name: artifacts.run_artifact_digest(run_dir, name) for name in sources}
    params = {"model": encoder.key}
    if artifacts.stage_is_current(run_dir, EMBED_STAGE, params, inputs):
        logger.info("embed: %s is up to date", run_dir)
        return EmbedSummary(encoder.key, 0, 0, 0, 0, skipped=True)

    with open_cache() as cache:
        item_matrix = encoder.encode(item_texts(tables.items), cache)
        attributes = _optional_frame(run_dir, artifacts.ITEM_ATTRIBUTES)
        attribute_matrix, attribute_mask = encoder.encode_optional(attribute_texts(tables.n_items, attributes), cache)
        profiles = _optional_frame(run_dir, artifacts.USER_PROFILES)
        profile_matrix, profile_mask = encoder.encode_optional(profile_texts(tables.n_users, profiles), cache)

    outputs = {
        artifacts.ITEM_TEXT_EMBEDDINGS: item_matrix,
        artifacts.ITEM_ATTRIBUTES_EMBEDDINGS: attribute_matrix,
        artifacts.ITEM_ATTRIBUTES_MASK: attribute_mask,
        artifacts.USER_PROFILES_EMBEDDINGS: profile_matrix,
        artifacts.USER_PROFILES_MASK: profile_mask,
    }
    for rel, array in outputs.items():
        artifacts.save_npy(run_dir / rel, array)
    stats = {
        "dim": int(item_matrix.shape[1]), "items_with_attributes": int(attribute_mask.sum()),
        "users_with_profiles": int(profile_mask.sum()), "encoded": encoder.encoded, "cached": encoder.cached,
    }
    artifacts.record_stage(run_dir, EMBED_STAGE, params, inputs, list(outputs), stats)
    logger.info("embed: %s", stats)
    return EmbedSummary(encoder.key, stats["dim"], len(item_matrix), encoder.encoded, encoder.cached, skipped=False)
