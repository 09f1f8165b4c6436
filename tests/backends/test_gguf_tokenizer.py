"""The bundled Gemma GGUF's tokenizer, rebuilt as the BPE llama.cpp runs, on real MovieLens text.

No conversion of the weights here (~7 min): the tokenizer is built from the GGUF's metadata alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from llmrec.backends.gguf_convert import converted_dir, gguf_revision
from llmrec.backends.gguf_tokenizer import REBUILT_TAG, read_vocabulary, rebuild_spm_tokenizer, tokenizer_model
from llmrec.bundled import gemma3_gguf_path, smollm2_gguf_path

_NORMAL, _USER_DEFINED, _BYTE = 1, 4, 6


@pytest.fixture(scope="module")
def gemma_vocabulary() -> tuple[list[str], list[float], list[int]]:
    return read_vocabulary(gemma3_gguf_path())


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory):
    """The rebuilt tokenizer, from a bare tokenizer.json (what `save_pretrained` leaves, minus its model)."""
    from tokenizers import Tokenizer

    folder = tmp_path_factory.mktemp("gemma_tokenizer")
    bare = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": None, "post_processor": None, "decoder": None, "model": {}}  # fmt: skip
    (folder / "tokenizer.json").write_text(json.dumps(bare), encoding="utf-8")
    rebuild_spm_tokenizer(gemma3_gguf_path(), folder)
    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def _llama_cpp_segmentation(text: str, vocabulary: tuple[list[str], list[float], list[int]]) -> list[int]:
    """llama.cpp's SentencePiece tokenizer, written out plainly: the reference the rebuilt BPE must match.

    Spaces become "▁"; from single characters, the adjacent pair whose join is a
    piece with the highest score merges first (the leftmost on ties), until no
    join is a piece; a symbol outside the vocabulary becomes its UTF-8 bytes.
    """
    pieces, scores, types = vocabulary
    ids = {piece: index for index, piece in enumerate(pieces) if types[index] in (_NORMAL, _USER_DEFINED)}
    byte_ids = {int(piece[3:5], 16): index for index, piece in enumerate(pieces) if types[index] == _BYTE}
    symbols = list(text.replace(" ", "▁"))
    while True:
        joins = [(scores[ids[a + b]], -k) for k, (a, b) in enumerate(zip(symbols, symbols[1:])) if a + b in ids]
        if not joins:
            break
        k = -max(joins)[1]
        symbols[k : k + 2] = [symbols[k] + symbols[k + 1]]
    out: list[int] = []
    for symbol in symbols:
        out.extend([ids[symbol]] if symbol in ids else [byte_ids[b] for b in symbol.encode("utf-8")])
    return out


def test_rebuilt_gemma_tokenizer_segments_movielens_text_as_llama_cpp_does(rebuilt, gemma_vocabulary, data_mirror):
    movies = pd.read_csv(data_mirror / "ml-latest-small" / "movies.csv").sample(400, random_state=0)
    texts = [f"- {title}, {genres}\n" for title, genres in zip(movies.title, movies.genres)]
    texts += [
        "Movies this user watched and liked, most recent first:\n- Heat (1995)\n\nThe next movie this user watched and loved:",
        "Question: would this user enjoy the movie Amélie (2001)? Answer yes or no.\nAnswer:",
        " yes", " no", "  two spaces,\ta tab, 😀 and 12345",
    ]  # fmt: skip
    assert len(texts) > 400 and any(not text.isascii() for text in texts)
    pieces = gemma_vocabulary[0]
    for text in texts:
        expected = _llama_cpp_segmentation(text, gemma_vocabulary)
        got = rebuilt.encode(text, add_special_tokens=False).ids
        assert got == expected, (text, [pieces[i] for i in got], [pieces[i] for i in expected])
    # whole words are single pieces (the Unigram reading of the scores made "movie" three: ▁m ov ie)
    words = rebuilt.encode("The next movie this user watched and loved: yes", add_special_tokens=False).ids
    assert [pieces[i] for i in words] == ["The", "▁next", "▁movie", "▁this", "▁user", "▁watched", "▁and", "▁loved", ":", "▁yes"]
    assert rebuilt.decode(rebuilt.encode("Amélie (2001)\n😀 x", add_special_tokens=False).ids) == "Amélie (2001)\n😀 x"


def test_only_sentencepiece_ggufs_get_the_rebuild_and_its_tag() -> None:
    gemma, smollm2 = gemma3_gguf_path(), smollm2_gguf_path()
    assert tokenizer_model(gemma) == "llama" and tokenizer_model(smollm2) == "gpt2"
    # SmolLM2's revision (and so every stored SmolLM2 answer's key) is its checksum, as before the rebuild existed
    digest = hashlib.sha256(Path(smollm2).read_bytes()).hexdigest()[:12]
    assert gguf_revision(smollm2) == digest and converted_dir(Path(smollm2)).name.endswith(digest)
    # Gemma's carries the tag: scores made through the old tokenizer are never served for the rebuilt one
    assert gguf_revision(gemma).endswith("+" + REBUILT_TAG)
    assert converted_dir(Path(gemma)).name.endswith("-" + REBUILT_TAG)
