"""Recommender models: MF-BPR, LightGCN and the LLMRec feature-augmented LightGCN.

Every model returns a `Representations` from `forward`: final user and item
vectors (score = user . item), the layer-0 ID embeddings of the batch (for L2
regularisation) and, for LLMRec, the masked-feature reconstruction loss.

LLMRec here is LightGCN plus side features, after §3.2 of the original but with
the symmetric normalisation: each feature matrix is projected to d by a learned
Linear, propagated one hop to the other node type and back over the same graph,
L2-normalised row-wise, and added to the ID representation with its weight.
Masked feature reconstruction (the paper's MAE) masks a fresh random fraction
of user-profile / item-attribute rows on every training step (on a copy, never
in place), and a trained decoder reconstructs the original rows from their
propagated representation. All-zero rows (the LLM gave no valid answer) are
never masked or reconstructed, and stay zero after the projection (its bias
would otherwise reach their neighbours as if it were a feature).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from llmrec.recommender.graph import GraphEngine
from llmrec.recommender.losses import scaled_cosine_error

# features that live on items / users, and which of them the MAE masks
ITEM_FEATURES = ("item_text", "image", "item_attributes")
USER_FEATURES = ("user_profiles",)
MASKED_FEATURES = ("item_attributes", "user_profiles")


@dataclass
class Representations:
    users: torch.Tensor  # (n_users, d) final user vectors
    items: torch.Tensor  # (n_items, d) final item vectors
    user_ids: torch.Tensor  # (n_users, d) layer-0 ID embeddings (for L2 regularisation)
    item_ids: torch.Tensor  # (n_items, d)
    reconstruction_loss: torch.Tensor | None = None
    # LLMRec: feature name -> (user side, item side) propagated projections (the original variant's extra BPR)
    branches: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


class MatrixFactorization(nn.Module):
    """MF-BPR: a user and an item embedding table, no graph."""

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, dim)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, dim)))

    def forward(self, generator: torch.Generator | None = None) -> Representations:
        return Representations(self.user_embedding, self.item_embedding, self.user_embedding, self.item_embedding)


class LightGCN(MatrixFactorization):
    """LightGCN (He et al. 2020): ID embeddings averaged over `n_layers` propagation steps."""

    def __init__(self, n_users: int, n_items: int, dim: int, n_layers: int, engine: GraphEngine) -> None:
        super().__init__(n_users, n_items, dim)
        self.n_layers = n_layers
        self.engine = engine

    def propagate_ids(self) -> tuple[torch.Tensor, torch.Tensor]:
        user_layers, item_layers = [self.user_embedding], [self.item_embedding]
        for _ in range(self.n_layers):
            users = self.engine.items_to_users(item_layers[-1])
            items = self.engine.users_to_items(user_layers[-1])
            user_layers.append(users)
            item_layers.append(items)
        return torch.stack(user_layers).mean(0), torch.stack(item_layers).mean(0)

    def forward(self, generator: torch.Generator | None = None) -> Representations:
        users, items = self.propagate_ids()
        return Representations(users, items, self.user_embedding, self.item_embedding)


@dataclass(frozen=True)
class FeatureOptions:
    """How side features enter the model (weights 0 drop a feature entirely)."""

    modality_weight: float = 0.02  # item text and image features
    item_attribute_weight: float = 0.005
    user_profile_weight: float = 0.2
    mask_rate: float = 0.1
    reconstruction_weight: float = 0.1
    sce_alpha: float = 2.0

    def weight_of(self, feature: str) -> float:
        if feature in ("item_text", "image"):
            return self.modality_weight
        return self.item_attribute_weight if feature == "item_attributes" else self.user_profile_weight


class LLMRecModel(LightGCN):
    """LightGCN plus projected, propagated LLM/content features and masked reconstruction."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        n_layers: int,
        engine: GraphEngine,
        features: dict[str, torch.Tensor],
        options: FeatureOptions,
        original: bool = False,
    ) -> None:
        super().__init__(n_users, n_items, dim, n_layers, engine)
        self.options = options
        self.original = original  # the original code's sequential propagation with a last-layer softmax
        used = {name: values for name, values in features.items() if options.weight_of(name) != 0}
        self.feature_names = sorted(used)
        for name, values in used.items():
            # all-zero rows mark "no valid LLM answer" (docs/artifacts.md): never masked or reconstructed
            present = values.abs().sum(1) > 0
            self.register_buffer(f"feature_{name}", values, persistent=False)
            self.register_buffer(f"feature_present_{name}", present, persistent=False)
            # The MAE replaces masked rows by the column mean of the real rows, as the original did.
            mean = values[present].mean(0, keepdim=True) if bool(present.any()) else values[:1] * 0
            self.register_buffer(f"feature_mean_{name}", mean, persistent=False)
        self._propagation_cache: dict[str, tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = {}
        self.projections = nn.ModuleDict({name: nn.Linear(used[name].shape[1], dim) for name in self.feature_names})
        for projection in self.projections.values():
            nn.init.xavier_uniform_(projection.weight)
        self.decoders = nn.ModuleDict(
            {
                name: nn.Linear(dim, used[name].shape[1])
                for name in self.feature_names
                if name in MASKED_FEATURES and options.mask_rate > 0 and options.reconstruction_weight > 0
            }
        )

    def feature(self, name: str) -> torch.Tensor:
        return getattr(self, f"feature_{name}")

    def _masked_rows(self, name: str, generator: torch.Generator | None) -> torch.Tensor | None:
        if generator is None or name not in self.decoders:
            return None
        rows = self.feature(name).shape[0]
        draws = torch.rand(rows, generator=generator).to(self.feature(name).device)
        return (draws < self.options.mask_rate) & getattr(self, f"feature_present_{name}")

    def _two_hops(self, name: str, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(user-side, item-side) of `values` (rows of the feature's own node type) after two hops."""
        if name in USER_FEATURES:
            items = self.engine.users_to_items(values)
            return self.engine.items_to_users(items), items
        users = self.engine.items_to_users(values)
        return users, self.engine.users_to_items(users)

    def _propagated_inputs(self, name: str) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """The frozen feature and its presence column after two hops, computed once per device.

        Propagation is linear, so propagating the projection of an unmasked
        feature equals projecting its propagated rows:
        A((X W + b) * present) = (A X) W + (A present) b, because absent rows of
        X are zero. The graph and X never change, so the sparse products run
        once instead of on every step (measured: the item-text branch's two
        SpMMs were the largest share of an LLMRec step beyond LightGCN's).
        """
        values = self.feature(name)
        cached = self._propagation_cache.get(name)
        if cached is None or cached[0][0].device != values.device:
            present = getattr(self, f"feature_present_{name}").unsqueeze(1).to(values.dtype)
            with torch.no_grad():
                cached = (self._two_hops(name, values), self._two_hops(name, present))
            self._propagation_cache[name] = cached
        return cached

    def _feature_branch(self, name: str, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(user-side, item-side) propagated projection of one feature."""
        projection = self.projections[name]
        if mask is None:
            (user_values, item_values), (user_present, item_present) = self._propagated_inputs(name)
            return (F.linear(user_values, projection.weight) + user_present * projection.bias,
                    F.linear(item_values, projection.weight) + item_present * projection.bias)
        values = torch.where(mask.unsqueeze(1), getattr(self, f"feature_mean_{name}"), self.feature(name))
        # Rows without an LLM answer stay zero after the projection: its bias is not a feature to spread.
        return self._two_hops(name, projection(values) * getattr(self, f"feature_present_{name}").unsqueeze(1))

    def propagate_ids(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.original:
            return super().propagate_ids()
        # the original: u_l = A_ui i_{l-1}, then i_l = A_iu u_l from the new u_l; softmax over d at the last layer
        user_layers, item_layers = [self.user_embedding], [self.item_embedding]
        for layer in range(self.n_layers):
            last = layer == self.n_layers - 1
            users = self.engine.items_to_users(item_layers[-1])
            users = F.softmax(users, dim=1) if last else users
            items = self.engine.users_to_items(users)
            items = F.softmax(items, dim=1) if last else items
            user_layers.append(users)
            item_layers.append(items)
        return torch.stack(user_layers).mean(0), torch.stack(item_layers).mean(0)

    def forward(self, generator: torch.Generator | None = None) -> Representations:
        """Representations; pass the training generator to mask features (training only)."""
        users, items = self.propagate_ids()
        reconstruction_terms = []
        branches = {}
        for name in self.feature_names:
            mask = self._masked_rows(name, generator)
            user_side, item_side = self._feature_branch(name, mask)
            branches[name] = (user_side, item_side)
            weight = self.options.weight_of(name)
            users = users + weight * F.normalize(user_side, dim=1)
            items = items + weight * F.normalize(item_side, dim=1)
            if mask is not None and bool(mask.any()):
                own_side = user_side if name in USER_FEATURES else item_side
                decoded = self.decoders[name](own_side[mask])
                reconstruction_terms.append(
                    scaled_cosine_error(decoded, self.feature(name)[mask], self.options.sce_alpha)
                )
        reconstruction = torch.stack(reconstruction_terms).sum() if reconstruction_terms else None
        return Representations(users, items, self.user_embedding, self.item_embedding, reconstruction, branches)
