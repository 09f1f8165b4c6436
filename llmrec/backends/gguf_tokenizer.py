"""The tokenizer of a SentencePiece GGUF (Gemma's), rebuilt as the BPE it is.

A GGUF whose `tokenizer.ggml.model` is "llama" stores a SentencePiece
vocabulary: pieces, one score per piece and piece types, no merges. llama.cpp
tokenizes such a file by BPE: starting from characters, it merges the adjacent
pair whose joined piece is in the vocabulary with the highest score, again and
again; characters outside the vocabulary become byte pieces (`<0x0A>`).

transformers 4.57 rebuilds Gemma's GGUF tokenizer as a Unigram model instead,
reading the scores as log-probabilities. Gemma's scores are merge ranks
(`▁the` -12, `▁movie` -5893), so the Unigram picks the segmentation with the
fewest rare pieces: "movie" becomes `▁m` `ov` `ie` and a prompt ~1.5x its true
length, text the model never saw in training. Every Gemma score measured
through that tokenizer was a score of mangled text.

`rebuild_spm_tokenizer` replaces the model in the converted folder's
`tokenizer.json` with a BPE whose merges are derived from the scores (every
split of a piece into two vocabulary pieces is a merge, ranked by the joined
piece's score), which reproduces llama.cpp's segmentation (tested against a
direct implementation of its algorithm on MovieLens text).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

#: `tokenizer.ggml.model` of SentencePiece vocabularies (Llama 1/2, Gemma); "gpt2" files carry real BPE merges.
SENTENCEPIECE = "llama"
#: Marks converted folders and completion-store revisions of GGUFs whose tokenizer this module rebuilt.
REBUILT_TAG = "spmbpe1"

# GGUF metadata value types (ggml/docs/gguf.md): fixed sizes, 8 = string, 9 = array
_FIXED_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
# piece types (llama.cpp's llama_token_type): the ones that take part in merges
_NORMAL, _USER_DEFINED = 1, 4


def tokenizer_model(gguf_path: str | Path) -> str | None:
    """The file's `tokenizer.ggml.model`, read from the header up to that key (the whole reader takes ~15 s on Gemma)."""
    with open(gguf_path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ValueError(f"{gguf_path}: not a GGUF file (magic bytes missing)")
        (version,) = struct.unpack("<I", handle.read(4))
        if version < 2:
            raise ValueError(f"{gguf_path}: GGUF version {version} is not supported (expected 2 or later)")
        _tensors, n_keys = struct.unpack("<QQ", handle.read(16))
        for _ in range(n_keys):
            key = _read_string(handle)
            (value_type,) = struct.unpack("<I", handle.read(4))
            if key == "tokenizer.ggml.model" and value_type == _STRING:
                return _read_string(handle)
            _skip_value(handle, value_type)
    return None


def is_sentencepiece(gguf_path: str | Path) -> bool:
    return tokenizer_model(gguf_path) == SENTENCEPIECE


def _read_string(handle: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", handle.read(8))
    return handle.read(length).decode("utf-8", errors="replace")


def _skip_value(handle: BinaryIO, value_type: int) -> None:
    if value_type in _FIXED_SIZES:
        handle.seek(_FIXED_SIZES[value_type], 1)
    elif value_type == _STRING:
        (length,) = struct.unpack("<Q", handle.read(8))
        handle.seek(length, 1)
    elif value_type == _ARRAY:
        element_type, count = struct.unpack("<IQ", handle.read(12))
        if element_type in _FIXED_SIZES:
            handle.seek(_FIXED_SIZES[element_type] * count, 1)
        else:
            for _ in range(count):
                _skip_value(handle, element_type)
    else:
        raise ValueError(f"unknown GGUF metadata value type {value_type}")


def read_vocabulary(gguf_path: str | Path) -> tuple[list[str], list[float], list[int]]:
    """Pieces, scores and piece types of a GGUF's tokenizer."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))

    def field(name: str) -> Any:
        found = reader.fields.get(name)
        if found is None:
            raise ValueError(f"{gguf_path}: GGUF metadata has no {name}")
        return found

    tokens, score_field, type_field = (field(f"tokenizer.ggml.{name}") for name in ("tokens", "scores", "token_type"))
    pieces = [bytes(tokens.parts[index]).decode("utf-8", errors="replace") for index in tokens.data]
    scores = [float(score_field.parts[index][0]) for index in score_field.data]
    types = [int(type_field.parts[index][0]) for index in type_field.data]
    if not len(pieces) == len(scores) == len(types):
        raise ValueError(f"{gguf_path}: tokens, scores and token types differ in length")
    return pieces, scores, types


def bpe_merges(pieces: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """Every (left, right) whose join is a mergeable piece, best joined score first (ties: lower ids first)."""
    ids = {piece: index for index, piece in enumerate(pieces) if types[index] in (_NORMAL, _USER_DEFINED)}
    ranked = []
    for piece, index in ids.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                ranked.append((-scores[index], ids[left], ids[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def rebuild_spm_tokenizer(gguf_path: str | Path, folder: Path) -> None:
    """Replace the Unigram model in `folder/tokenizer.json` with the GGUF vocabulary's BPE (see the module doc)."""
    pieces, scores, types = read_vocabulary(gguf_path)
    path = folder / "tokenizer.json"
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    unknown = next((index for index, kind in enumerate(types) if kind == 2), None)  # 2: the unknown piece
    tokenizer["model"] = {
        "type": "BPE",
        "dropout": None,
        "unk_token": pieces[unknown] if unknown is not None else None,
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": True,
        "byte_fallback": True,
        "ignore_merges": False,
        "vocab": {piece: index for index, piece in enumerate(pieces)},
        "merges": [[left, right] for left, right in bpe_merges(pieces, scores, types)],
    }
    # llama.cpp's SentencePiece path: spaces become "▁", no split before merging, byte pieces decode to bytes
    tokenizer["normalizer"] = {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
    tokenizer["pre_tokenizer"] = None
    tokenizer["decoder"] = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
        ],
    }
    path.write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
