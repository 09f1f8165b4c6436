"""Convert a GGUF file to a Hugging Face folder once, and reuse it.

transformers loads GGUF by de-quantising every tensor (30-50 s for SmolLM2)
and vLLM 0.32 cannot load GGUF at all, so both backends load a converted
folder instead: `<models dir>/<gguf stem>-<sha256 prefix>/`. The sha prefix
ties the folder to the file's bytes, so a changed GGUF gets a new folder.

The folder is written to a temporary directory and renamed into place, so an
interrupted conversion never leaves a half-written model that later loads.
Two processes converting the same file serialise on a lock file.

The tokenizer transformers rebuilds from GGUF metadata round-trips badly, so
it is fixed after `save_pretrained`:
- `tokenizer_config.json`: `tokenizer_class` -> `PreTrainedTokenizerFast`
  (the saved class name does not load in other transformers versions, e.g.
  the one inside vLLM's venv);
- byte-level BPE files (SmolLM2's): `tokenizer.json`'s `decoder` -> a plain
  ByteLevel decoder (otherwise decoded answers contain `Ċ` for every newline
  and `Ġ` for spaces);
- SentencePiece files (Gemma's): the tokenizer model is rebuilt as the BPE it
  is (`gguf_tokenizer`; transformers makes it a Unigram that mangles words).
  Their folders and completion-store revisions carry `gguf_tokenizer.REBUILT_TAG`,
  so nothing converted or scored through the old tokenizer is reused.

Run `python -m llmrec.backends.gguf_convert [GGUF] [--models-dir DIR]` to
convert ahead of time (scripts/setup-vllm does this for CI).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from llmrec.backends.gguf_tokenizer import REBUILT_TAG, is_sentencepiece, rebuild_spm_tokenizer
from llmrec.errors import ConfigError
from llmrec.paths import llmrec_home

logger = logging.getLogger(__name__)

# Written last inside a converted folder; its presence means "complete".
DONE_MARKER = "llmrec-converted.json"
_SHA_PREFIX_LEN = 12


def models_dir() -> Path:
    """Where converted models live: `$LLMREC_MODELS_DIR`, else `$LLMREC_HOME/models`.

    A separate variable lets a test session (or a cluster) share one converted
    copy while each test keeps its own LLMREC_HOME.
    """
    override = os.environ.get("LLMREC_MODELS_DIR")
    return Path(override).expanduser() if override else llmrec_home() / "models"


def is_gguf(path: str | Path) -> bool:
    return str(path).lower().endswith(".gguf")


def _sha256_prefix(path: Path) -> str:
    stat = path.stat()
    return _sha256_prefix_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_prefix_of(path: str, size: int, mtime_ns: int) -> str:
    """Hash each file version once per process (a Gemma GGUF is 250 MB; size and mtime key the version)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:_SHA_PREFIX_LEN]


def converted_dir(gguf_path: Path, target_root: Path | None = None) -> Path:
    """The folder a GGUF file converts into (whether or not it exists yet)."""
    root = (target_root if target_root is not None else models_dir()).absolute()
    return root / f"{gguf_path.stem}-{gguf_revision(gguf_path).replace('+', '-')}"


def is_converted(folder: Path) -> bool:
    return (folder / DONE_MARKER).is_file()


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _fix_tokenizer(gguf_path: Path, folder: Path) -> None:
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    if is_sentencepiece(gguf_path):
        rebuild_spm_tokenizer(gguf_path, folder)
        return
    tokenizer_path = folder / "tokenizer.json"
    tokenizer = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    tokenizer["decoder"] = {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": True,
        "use_regex": True,
    }
    tokenizer_path.write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")


def _convert_into(gguf_path: Path, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    # The GGUF tokenizer comes back with eos = <|im_start|> for SmolLM2; the
    # model config has the ids the model was trained to stop and pad with.
    for attribute in ("eos_token", "pad_token"):
        token_id = getattr(model.config, f"{attribute}_id", None)
        if isinstance(token_id, int):
            setattr(tokenizer, attribute, tokenizer.convert_ids_to_tokens(token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _fix_tokenizer(gguf_path, folder)


def gguf_revision(gguf_path: str | Path) -> str:
    """The GGUF's weights fingerprint (its sha256 prefix, as in its converted folder's name).

    Backends put it into the completion-store key, so answers of another file
    under the same name are never served from the store. A SentencePiece file
    adds the tokenizer rebuild's tag: its scores changed with the tokenizer.
    """
    sha = _sha256_prefix(Path(gguf_path))
    return f"{sha}+{REBUILT_TAG}" if is_sentencepiece(gguf_path) else sha


def weights_folder(source: str) -> str:
    """What a model loader opens: the converted folder of a GGUF file, else `source` as it is."""
    return str(ensure_converted(source)) if is_gguf(source) else source


def ensure_converted(gguf_path: str | Path, target_root: Path | None = None) -> Path:
    """Return the converted HF folder of `gguf_path`, converting it first if needed."""
    gguf_path = Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        raise ConfigError(f"{gguf_path}: GGUF model file not found")
    folder = converted_dir(gguf_path, target_root)
    if is_converted(folder):
        return folder
    with _exclusive(folder.parent / f".{folder.name}.lock"):
        if is_converted(folder):  # another process finished while we waited
            return folder
        logger.info("converting %s to a Hugging Face folder (once; ~1 min)", gguf_path.name)
        started = time.perf_counter()
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            _convert_into(gguf_path, staging)
            marker = {"source": str(gguf_path), "revision": gguf_revision(gguf_path)}
            (staging / DONE_MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
            if folder.exists():  # a leftover without the marker: incomplete, replace it
                shutil.rmtree(folder)
            os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("converted into %s in %.0f s", folder, time.perf_counter() - started)
    return folder


def main(argv: list[str] | None = None) -> None:
    """Convert a GGUF file (default: the bundled SmolLM2) and print the folder."""
    from llmrec.logs import configure_logging

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("gguf", nargs="?", help="GGUF file or model alias (default: smollm2-135m)")
    parser.add_argument("--models-dir", type=Path, help="target root (default: $LLMREC_MODELS_DIR or $LLMREC_HOME/models)")
    args = parser.parse_args(argv)
    configure_logging()
    from llmrec.backends.aliases import resolve_model

    source = resolve_model(args.gguf or "smollm2-135m")
    if not is_gguf(source):
        raise SystemExit(f"error: {source} is not a .gguf file")
    try:
        folder = ensure_converted(source, args.models_dir)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(folder)  # noqa: T201 - the CLI's output is the folder path


if __name__ == "__main__":
    main()
