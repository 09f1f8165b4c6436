"""`model_variant = "original"`: the parts of the original LLMRec model that this project changed.

For reproducing the original code's model (reference notes §3.2-3.4), not for
recommending: the project's model is the default. `OriginalLLMRecModel` (on a
`RowNormalisedEngine`) changes:

- normalisation: row-only D^-1/2 on each side (A_ui = D_u^-1/2 R and
  A_iu = D_i^-1/2 R^T) instead of the symmetric 1/sqrt(d_u d_i);
- ID propagation: sequential (u_l from i_{l-1}, then i_l from the new u_l),
  with a softmax over the embedding dimension at the last layer;
- optimiser: AdamW with weight decay 0.01 (the original's only real weight
  decay); no L2 term (its reciprocal `emb_loss` is ~0) and no gradient
  clipping (its clipping ran before backward, a no-op);
- pruning: of ALL samples of the batch (real and augmented), only the
  hardest (1 - prune_rate) are kept, prune_rate 0.71 by default (its Eq. 7
  and code, not its prose);
- extra BPR terms: 0.012 x BPR(user profile, item attributes) and
  1e-4 x BPR per item modality (text, image), pruned the same way.

Kept as in this project (not the original's): the per-feature weights and
learning rate (set them as options: user_profile_weight 2.8,
item_attribute_weight 0.005, modality_weight 0.02, lr 1e-4), masked
reconstruction (set mask_rate 0 for the original's default), one shared item
attribute table instead of five, no feature regulariser.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from llmrec.recommender.graph import GraphEngine
from llmrec.recommender.losses import bpr_per_sample
from llmrec.recommender.models import BatchLoss, LLMRecModel, Representations, layer_mean
from llmrec.recommender.sampling import Batch

ATTRIBUTE_BPR_WEIGHT = 0.012  # the original's aug_mf_rate
MODALITY_BPR_WEIGHT = 1e-4  # the original's mm_mf_rate
ADAMW_WEIGHT_DECAY = 0.01  # PyTorch's AdamW default, which the original never changed


class OriginalLLMRecModel(LLMRecModel):
    """LLMRec as the original code builds and trains it; give it a `RowNormalisedEngine` (`factory.build_model`)."""

    def propagate_ids(self) -> tuple[torch.Tensor, torch.Tensor]:
        # u_l = A_ui i_{l-1}, then i_l = A_iu u_l from the new u_l; softmax over d at the last layer
        user_layers, item_layers = [self.user_embedding], [self.item_embedding]
        for layer in range(self.n_layers):
            last = layer == self.n_layers - 1
            users = self.engine.items_to_users(item_layers[-1])
            users = F.softmax(users, dim=1) if last else users
            items = self.engine.users_to_items(users)
            items = F.softmax(items, dim=1) if last else items
            user_layers.append(users)
            item_layers.append(items)
        return layer_mean(user_layers), layer_mean(item_layers)

    @property
    def max_grad_norm(self) -> float:
        return 0.0  # the original clipped before `backward`: a no-op

    def optimizer(self, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=ADAMW_WEIGHT_DECAY)

    def batch_loss(self, representations: Representations, batch: Batch) -> BatchLoss:
        """The hardest samples of the whole batch (real and augmented), plus the side-feature BPR terms; no L2."""
        users = torch.cat([batch.users, batch.augmented[:, 0]])
        positives = torch.cat([batch.positives, batch.augmented[:, 1]])
        negatives = torch.cat([batch.negatives, batch.augmented[:, 2]])
        prune_rate = self.loss_options.prune_rate
        losses = bpr_per_sample(representations.users[users], representations.items[positives],
                                representations.items[negatives])
        bpr = keep_hardest(losses, prune_rate).mean()
        total = bpr + side_feature_losses(representations.branches, users, positives, negatives, prune_rate)
        return self.with_reconstruction(BatchLoss(total, bpr), representations)


class RowNormalisedEngine:
    """The original's operators on a symmetric engine: A_ui x = D_u^-1/2 R x = sym(D_i^1/2 x), and back."""

    def __init__(self, engine: GraphEngine, pairs: np.ndarray, n_users: int, n_items: int,
                 device: torch.device) -> None:
        self.engine = engine
        self.name = engine.name
        self.user_sqrt_degree = _sqrt_degree(pairs[:, 0], n_users).to(device)
        self.item_sqrt_degree = _sqrt_degree(pairs[:, 1], n_items).to(device)

    def items_to_users(self, item_values: torch.Tensor) -> torch.Tensor:
        return self.engine.items_to_users(item_values * self.item_sqrt_degree)

    def users_to_items(self, user_values: torch.Tensor) -> torch.Tensor:
        return self.engine.users_to_items(user_values * self.user_sqrt_degree)


def _sqrt_degree(nodes: np.ndarray, n_nodes: int) -> torch.Tensor:
    degree = np.bincount(nodes, minlength=n_nodes).astype(np.float64)
    return torch.from_numpy(np.sqrt(degree).astype(np.float32)).unsqueeze(1)


def keep_hardest(losses: torch.Tensor, prune_rate: float) -> torch.Tensor:
    """The int((1 - prune_rate) * n) largest losses (the original sorts log-sigmoid ascending and keeps the head)."""
    if prune_rate <= 0:
        return losses
    keep = max(int((1.0 - prune_rate) * losses.numel()), 1)
    return torch.topk(losses, keep, largest=True).values


def side_feature_losses(
    branches: dict[str, tuple[torch.Tensor, torch.Tensor]],
    users: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    prune_rate: float,
) -> torch.Tensor:
    """The original's extra BPR terms on the propagated (not normalised) feature representations."""
    total = torch.zeros((), device=users.device)
    if "item_attributes" in branches:
        # the user side is the propagated profile when there is one (as in the original), else the attributes' own
        user_side = branches.get("user_profiles", branches["item_attributes"])[0]
        item_side = branches["item_attributes"][1]
        losses = bpr_per_sample(user_side[users], item_side[positives], item_side[negatives])
        total = total + ATTRIBUTE_BPR_WEIGHT * keep_hardest(losses, prune_rate).mean()
    for name in ("item_text", "image"):
        if name in branches:
            user_side, item_side = branches[name]
            losses = bpr_per_sample(user_side[users], item_side[positives], item_side[negatives])
            total = total + MODALITY_BPR_WEIGHT * keep_hardest(losses, prune_rate).mean()
    return total
