"""Training losses: BPR, noise pruning of augmented samples, scaled cosine error, L2.

Pruning follows the paper's prose, not its code: the LLM-augmented (user,
liked, disliked) triples are the noisy ones, so the highest-loss `prune_rate`
fraction of the *augmented* samples is dropped from each batch. The original
code instead sorted the log-sigmoid of *all* samples ascending and kept the
lowest 29% (the largest losses), i.e. it discarded the 71% easiest samples of
the whole batch (see the reference notes, §3.4).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

COSINE_EPS = 1e-8  # F.cosine_similarity's: a reconstruction shorter than this counts as this long


def bpr_per_sample(users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(u.i+ - u.i-) per row; rows are vectors of the same batch sample."""
    margin = (users * positives).sum(1) - (users * negatives).sum(1)
    return -F.logsigmoid(margin)


def prune_highest(losses: torch.Tensor, prune_rate: float) -> torch.Tensor:
    """The losses left after dropping the `prune_rate` fraction with the largest values."""
    keep = losses.numel() - int(prune_rate * losses.numel())
    if keep >= losses.numel():
        return losses
    return torch.topk(losses, keep, largest=False).values


def scaled_cosine_error(reconstructed: torch.Tensor, unit_target: torch.Tensor, alpha: float) -> torch.Tensor:
    """mean((1 - cos)^alpha) (GraphMAE's SCE, the paper's Eq. 9) against targets already L2-normalised row-wise.

    The cosine needs only the targets' directions, and a model's targets are
    fixed for an epoch, so they are normalised once; per step this reads the
    reconstruction twice (norm, dot). `F.cosine_similarity` normalised both
    sides on every call, and its backward made LLMRec's item-attribute
    reconstruction (~630 rows x 384) cost twice as much.
    """
    norm = torch.linalg.vector_norm(reconstructed, dim=1).clamp_min(COSINE_EPS)
    cosine = (reconstructed * unit_target).sum(1) / norm
    return (1.0 - cosine).clamp_min(0.0).pow(alpha).mean()


def l2_penalty(*batch_embeddings: torch.Tensor) -> torch.Tensor:
    """0.5 * sum of squared norms of the batch's layer-0 embeddings, per batch row."""
    rows = batch_embeddings[0].shape[0]
    return sum(embedding.pow(2).sum() for embedding in batch_embeddings) / (2.0 * rows)
