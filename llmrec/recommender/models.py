"""Recommender models behind one interface: popularity, MF-BPR, LightGCN and LLMRec.

The trainer never asks which model it holds (as RecBole's models own
`calculate_loss` and `full_sort_predict`). Every `Recommender` gives a
`scorer()` (user ids -> scores over all items, the evaluator's input);
popularity stops there: it has nothing to learn, so `fit` only evaluates it
and no weights are saved. An `EmbeddingRecommender` learns user and item ID
embeddings and is the trainer's whole interface:

- `forward(generator)`: its `Representations`: final user and item vectors
  (score = user . item), the layer-0 ID embeddings (for L2 regularisation)
  and, for LLMRec, the masked-feature reconstruction loss;
- `loss(batch, generator)`: one sampled batch's `BatchLoss` (BPR, L2, and the
  terms the model adds: LLMRec its pruned augmented triples and reconstruction);
- `augmented_rate`: augmented triples per real sample its loss reads (the
  trainer draws them with the batch);
- `optimizer(lr)` and `max_grad_norm`: its update rule;
- `start_epoch()`: called before each epoch's first step (LLMRec draws fresh
  feature masks at its next training forward).

LLMRec here is LightGCN plus side features, after §3.2 of the original but with
the symmetric normalisation: each feature matrix is projected to d by a learned
Linear, propagated one hop to the other node type and back over the same graph,
L2-normalised row-wise, and added to the ID representation with its weight.
Masked feature reconstruction (the paper's MAE) masks a fresh random fraction
of user-profile / item-attribute rows for every training epoch (on a copy, never
in place), and a trained decoder reconstructs the original rows from their
propagated representation. All-zero rows (the LLM gave no valid answer) are
never masked or reconstructed, and stay zero after the projection (its bias
would otherwise reach their neighbours as if it were a feature). The original
code's variant of this model is `original.OriginalLLMRecModel`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from llmrec.evaluation import popularity_scorer
from llmrec.recommender.graph import GraphEngine
from llmrec.recommender.losses import bpr_per_sample, l2_penalty, prune_highest, scaled_cosine_error
from llmrec.recommender.sampling import Batch

Scorer = Callable[[torch.Tensor], torch.Tensor]  # user ids -> (len(users), n_items) scores

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


@dataclass(frozen=True)
class LossOptions:
    """What a model's loss adds to BPR and how its update is bounded (0 turns a part off).

    `factory.build_model` copies them from the training options; each model
    reads the ones it has (MF and LightGCN: `l2_reg` and `max_grad_norm`).
    """

    l2_reg: float = 0.0
    max_grad_norm: float = 0.0  # gradient norm clipping
    aug_sample_rate: float = 0.0  # LLMRec: augmented triples per real sample of a batch
    prune_rate: float = 0.0  # LLMRec: the noisiest fraction of the augmented samples (original: of all) dropped


@dataclass
class BatchLoss:
    """One batch's loss (what `backward` runs on) and its terms, logged per epoch."""

    total: torch.Tensor
    bpr: torch.Tensor
    l2: torch.Tensor | None = None  # None: the model has no such term (logged as 0)
    reconstruction: torch.Tensor | None = None

    def logged(self) -> dict[str, float]:
        """The terms of the training history: loss, bpr, l2, reconstruction."""
        return {"loss": float(self.total.detach()), "bpr": float(self.bpr.detach()),
                "l2": _logged(self.l2), "reconstruction": _logged(self.reconstruction)}


def _logged(term: torch.Tensor | None) -> float:
    return float(term.detach()) if term is not None else 0.0


def layer_mean(layers: list[torch.Tensor]) -> torch.Tensor:
    """The mean of equally shaped layer outputs, as a running sum: no stacked copy.

    `torch.stack(layers).mean(0)` writes every layer into one (L+1, n, d)
    tensor and its backward writes the expanded gradient back out; the sum's
    backward passes one gradient through unchanged. Measured on LightGCN's
    ml-latest-small step (1 thread), the stack, the mean and its backward were
    ~15% of the step.
    """
    total = layers[0]
    for layer in layers[1:]:
        total = total + layer
    return total / len(layers)


class Recommender(nn.Module, ABC):
    """Anything the evaluator can rank with. `fit` trains the `EmbeddingRecommender`s and only evaluates the rest."""

    @abstractmethod
    def scorer(self) -> Scorer:
        """Scores of every item for a batch of user ids (the evaluator masks seen items in place)."""


class Popularity(Recommender):
    """Items ranked by their number of training users, the same list for everyone: nothing to train."""

    def __init__(self, train: sp.csr_matrix) -> None:
        super().__init__()
        self._scorer = popularity_scorer(train)

    def scorer(self) -> Scorer:
        return self._scorer


class EmbeddingRecommender(Recommender):
    """A user and an item ID embedding table learned with BPR (plus L2 on the batch's layer-0 embeddings).

    Subclasses say how the tables become final vectors (`forward`); models
    with more loss terms override `bpr_losses` or `batch_loss`.
    """

    def __init__(self, n_users: int, n_items: int, dim: int, loss_options: LossOptions = LossOptions()) -> None:
        super().__init__()
        self.loss_options = loss_options
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, dim)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, dim)))

    @abstractmethod
    def forward(self, generator: torch.Generator | None = None) -> Representations:
        """Representations; the training generator (None at evaluation) drives any random masking."""

    @property
    def augmented_rate(self) -> float:
        """Augmented triples per real sample that `loss` reads; 0: the trainer draws none."""
        return 0.0

    def start_epoch(self) -> None:
        """The trainer calls this before each epoch's first step; models with nothing fixed per epoch ignore it."""

    @property
    def max_grad_norm(self) -> float:
        """The trainer clips the gradient norm to this before each step; 0: no clipping."""
        return self.loss_options.max_grad_norm

    def optimizer(self, lr: float) -> torch.optim.Optimizer:
        """Adam; L2 is an explicit loss term on the batch's embeddings, not weight decay."""
        return torch.optim.Adam(self.parameters(), lr=lr)

    def loss(self, batch: Batch, generator: torch.Generator) -> BatchLoss:
        """The loss of one training batch (features masked with `generator` where the model masks)."""
        return self.batch_loss(self(generator), batch)

    def batch_loss(self, representations: Representations, batch: Batch) -> BatchLoss:
        """The batch's loss terms on representations already computed: mean BPR plus weighted L2."""
        bpr = self.bpr_losses(representations, batch).mean()
        l2 = self.loss_options.l2_reg * l2_penalty(
            representations.user_ids[batch.users], representations.item_ids[batch.positives],
            representations.item_ids[batch.negatives],
        )
        return BatchLoss(bpr + l2, bpr, l2)

    def bpr_losses(self, representations: Representations, batch: Batch) -> torch.Tensor:
        """BPR loss per sample of the batch."""
        return bpr_per_sample(representations.users[batch.users], representations.items[batch.positives],
                              representations.items[batch.negatives])

    @torch.no_grad()
    def final_representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(users, items) final vectors without feature masking; score = users @ items.T."""
        self.eval()
        representations = self(None)
        self.train()
        return representations.users.detach(), representations.items.detach()

    def scorer(self) -> Scorer:
        users, items = self.final_representations()
        return lambda batch: users[batch.to(users.device)] @ items.T


class MatrixFactorization(EmbeddingRecommender):
    """MF-BPR: the ID tables are the final vectors, no graph."""

    def forward(self, generator: torch.Generator | None = None) -> Representations:
        return Representations(self.user_embedding, self.item_embedding, self.user_embedding, self.item_embedding)


class LightGCN(EmbeddingRecommender):
    """LightGCN (He et al. 2020): ID embeddings averaged over `n_layers` propagation steps."""

    def __init__(self, n_users: int, n_items: int, dim: int, n_layers: int, engine: GraphEngine,
                 loss_options: LossOptions = LossOptions()) -> None:
        super().__init__(n_users, n_items, dim, loss_options)
        self.n_layers = n_layers
        self.engine = engine

    def propagate_ids(self) -> tuple[torch.Tensor, torch.Tensor]:
        user_layers, item_layers = [self.user_embedding], [self.item_embedding]
        for _ in range(self.n_layers):
            users = self.engine.items_to_users(item_layers[-1])
            items = self.engine.users_to_items(user_layers[-1])
            user_layers.append(users)
            item_layers.append(items)
        return layer_mean(user_layers), layer_mean(item_layers)

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


class _AddNormalizedRows(torch.autograd.Function):
    """base + sum_k weight_k * F.normalize(values_k, dim=1) (rows divided by max(norm, eps)), hand-written backward.

    Autograd's graph of that expression (norm, clamp, broadcast division,
    scaling, sum) runs about nine passes over the full (n, d) tensors per
    term in its backward; the closed form, grad_values = weight (g - y <g, y>) / max(norm, eps)
    with y the normalised rows (and <g, y> dropped on rows whose norm was
    clamped, whose denominator is then a constant), runs three, and base's
    gradient is g itself. All of a side's terms go into one output, added
    in order into the first sum: LLMRec adds three normalised (n_items, d)
    item sides per step, and one new (n, d) tensor per term was a fresh
    allocation and pass each.
    """

    @staticmethod
    def forward(ctx, base: torch.Tensor, weights: tuple[float, ...], eps: float,  # type: ignore[override]
                *values: torch.Tensor) -> torch.Tensor:
        total = base
        saved: list[torch.Tensor] = []
        for index, (value, weight) in enumerate(zip(values, weights, strict=True)):
            norm = torch.linalg.vector_norm(value, dim=1, keepdim=True)
            inverse = norm.clamp_min(eps).reciprocal()
            normalized = value * inverse
            # the first term makes a new tensor (base is never written), the others add into it
            total = torch.add(total, normalized, alpha=weight) if index == 0 else total.add_(normalized, alpha=weight)
            saved += [normalized, inverse * weight, norm < eps]
        ctx.save_for_backward(*saved)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        saved = ctx.saved_tensors
        value_grads = []
        for start in range(0, len(saved), 3):
            normalized, scale, clamped = saved[start:start + 3]
            along = (grad * normalized).sum(1, keepdim=True).masked_fill_(clamped, 0.0)
            value_grads.append(torch.addcmul(grad, normalized, along, value=-1.0).mul_(scale))
        return (grad, None, None, *value_grads)


def add_normalized_rows(base: torch.Tensor, terms: list[tuple[torch.Tensor, float]],
                        eps: float = 1e-12) -> torch.Tensor:
    """base + sum of weight * F.normalize(values, dim=1, eps=eps) over (values, weight) terms, up to float
    rounding (see `_AddNormalizedRows`); base itself when there are no terms."""
    if not terms:
        return base
    values, weights = zip(*terms)
    return _AddNormalizedRows.apply(base, weights, eps, *values)


@dataclass
class _BranchInputs:
    """What one feature branch reads on every step, propagated without gradient and cached.

    Propagation is linear, so propagating the projection of a feature equals
    projecting its propagated rows: A((X W + b) * present) = (A X) W + (A present) b,
    because absent rows of X are zero. No gradient flows into X, so the
    sparse products at the feature's own width run when X changes (never
    for an unmasked feature, once per epoch for a masked one) instead of on
    every step, and each step only projects (and hops at width d where
    `_feature_branch` says why).
    """

    # The feature's rows with the presence column appended (so one product [rows, presence] [W, b]^T adds
    # the bias), where the branch projects them: at the users (one hop away for an item feature, two for a
    # user feature narrower than d), at the items for features narrower than d (two hops for an item feature,
    # one for a user feature), and a user feature wider than d keeps only its own rows (`_feature_branch`).
    users: torch.Tensor | None
    items: torch.Tensor | None
    own_rows: torch.Tensor | None

    @property
    def device(self) -> torch.device:
        return next(rows for rows in (self.users, self.own_rows) if rows is not None).device


@dataclass
class _ReconstructionTarget:
    """What a masked feature's reconstruction reads on every step of an epoch: fixed with the epoch's mask."""

    rows: torch.Tensor  # indices of the masked rows
    directions: torch.Tensor  # the feature's original rows there, L2-normalised (SCE is a cosine)


class LLMRecModel(LightGCN):
    """LightGCN plus projected, propagated LLM/content features, masked reconstruction and augmented triples.

    Masks are drawn once per epoch, not per step: with fixed masks a masked
    feature's propagation is cached like an unmasked one's (`_BranchInputs`),
    and its sparse products at the feature's width run once per epoch. Fresh
    masks on every step kept the projection inside the hops, so each masked
    feature added two SpMMs forward and two backward to every step.

    What a step costs on top of LightGCN's (measured on ml-latest-small, one
    thread, 384-d item text, item attributes and user profiles; the work left
    once everything fixed is cached): per feature a (users x 385) x (385 x d)
    product and its weight gradient (dense, compute-bound), one or two hops
    at width d forward and back, and a normalised term on each side; plus the
    decoder's (masked rows x d) x (d x 384) products. Together that is about
    LightGCN's whole step (its four hops forward and back are sparse and
    memory-bound), so an LLMRec epoch takes 2.0-2.6x LightGCN's
    (bench/results/train.md).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        n_layers: int,
        engine: GraphEngine,
        features: dict[str, torch.Tensor],
        options: FeatureOptions,
        loss_options: LossOptions = LossOptions(),
    ) -> None:
        super().__init__(n_users, n_items, dim, n_layers, engine, loss_options)
        self.options = options
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
        self._unmasked_inputs: dict[str, _BranchInputs] = {}  # kept for the model's life (per device)
        self._epoch_masks: dict[str, torch.Tensor] | None = None  # None: drawn at the next training forward
        self._masked_inputs: dict[str, _BranchInputs] = {}  # this epoch's
        self._reconstruction_targets: dict[str, _ReconstructionTarget] = {}  # this epoch's

    def feature(self, name: str) -> torch.Tensor:
        return getattr(self, f"feature_{name}")

    def start_epoch(self) -> None:
        """Forget this epoch's masks: the next training forward draws fresh ones."""
        self._epoch_masks = None
        self._masked_inputs.clear()
        self._reconstruction_targets.clear()

    def _masked_rows(self, name: str, generator: torch.Generator) -> torch.Tensor:
        """A fresh draw of the rows of a masked feature to mask (mask_rate of the rows with an answer)."""
        rows = self.feature(name).shape[0]
        draws = torch.rand(rows, generator=generator).to(self.feature(name).device)
        return (draws < self.options.mask_rate) & getattr(self, f"feature_present_{name}")

    def _masks(self, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """The epoch's mask per masked feature (those with a decoder), drawn with `generator` on the epoch's first
        training forward; none at evaluation (generator None)."""
        if generator is None:
            return {}
        if self._epoch_masks is None:
            self._epoch_masks = {name: self._masked_rows(name, generator) for name in self.decoders}
            for name, mask in self._epoch_masks.items():
                rows = mask.nonzero().squeeze(1)
                self._reconstruction_targets[name] = _ReconstructionTarget(
                    rows, F.normalize(self.feature(name).index_select(0, rows), dim=1))
        return self._epoch_masks

    def _present_column(self, name: str) -> torch.Tensor:
        """1.0 on rows with an LLM answer, 0.0 on all-zero rows, as an (n, 1) column of the feature's dtype."""
        return getattr(self, f"feature_present_{name}").unsqueeze(1).to(self.feature(name).dtype)

    def _is_narrow(self, name: str) -> bool:
        """Narrower than d: projecting every item's propagated row is cheaper than a hop with its backward."""
        return self.feature(name).shape[1] <= self.projections[name].out_features

    def _branch_inputs(self, name: str, mask: torch.Tensor | None) -> _BranchInputs:
        """The feature's propagated rows for `mask` (None: unmasked), from the cache when they are there."""
        cache = self._unmasked_inputs if mask is None else self._masked_inputs
        cached = cache.get(name)
        if cached is not None and cached.device == self.feature(name).device:
            return cached
        values = self.feature(name)
        if mask is not None:
            values = torch.where(mask.unsqueeze(1), getattr(self, f"feature_mean_{name}"), values)
        narrow, user_feature = self._is_narrow(name), name in USER_FEATURES
        rows = torch.cat([values, self._present_column(name)], 1)
        with torch.no_grad():
            if user_feature and not narrow:
                cached = _BranchInputs(None, None, rows)
            elif user_feature:
                at_items = self.engine.users_to_items(rows)
                cached = _BranchInputs(self.engine.items_to_users(at_items), at_items, None)
            else:
                at_users = self.engine.items_to_users(rows)
                cached = _BranchInputs(at_users, self.engine.users_to_items(at_users) if narrow else None, None)
        cache[name] = cached
        return cached

    def _feature_branch(self, name: str, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(user-side, item-side) propagated projection of one feature (masked with `mask` unless None).

        Features narrower than d project cached rows on both sides. A wider
        feature's sides are hops at width d instead (measured: projecting every
        item's propagated row at width 384, a 6298 x 384 x 64 product and its
        weight gradient, was the largest dense work of a step): an item
        feature's user side projects cached rows and its item side is one hop
        (A^T) from there; a user feature projects its own rows, hops to the
        items (its item side) and back (its user side). One more hop at width d
        per step costs less than projecting the rows two hops away and
        propagating them at the feature's width whenever its mask changes.
        The bias reaches each side as (propagated presence) x b, so rows without
        an LLM answer stay zero: the bias is not a feature to spread.
        """
        projection = self.projections[name]
        inputs = self._branch_inputs(name, mask)
        weight_and_bias = torch.cat([projection.weight, projection.bias.unsqueeze(1)], 1)
        if inputs.own_rows is not None:  # a wide user feature: its item side, and from there back to the users
            item_side = self.engine.users_to_items(F.linear(inputs.own_rows, weight_and_bias))
            return self.engine.items_to_users(item_side), item_side
        user_side = F.linear(inputs.users, weight_and_bias)
        if inputs.items is not None:
            return user_side, F.linear(inputs.items, weight_and_bias)
        return user_side, self.engine.users_to_items(user_side)

    def forward(self, generator: torch.Generator | None = None) -> Representations:
        """Representations; pass the training generator to mask features (training only)."""
        users, items = self.propagate_ids()
        masks = self._masks(generator)
        branches = {name: self._feature_branch(name, masks.get(name)) for name in self.feature_names}
        weighted = [(branches[name], self.options.weight_of(name)) for name in self.feature_names]
        users = add_normalized_rows(users, [(user_side, weight) for (user_side, _), weight in weighted])
        items = add_normalized_rows(items, [(item_side, weight) for (_, item_side), weight in weighted])
        reconstruction_terms = [
            self._reconstruction_error(name, branches[name][0 if name in USER_FEATURES else 1])
            for name in masks if len(self._reconstruction_targets[name].rows)
        ]
        reconstruction = torch.stack(reconstruction_terms).sum() if reconstruction_terms else None
        return Representations(users, items, self.user_embedding, self.item_embedding, reconstruction, branches)

    def _reconstruction_error(self, name: str, own_side: torch.Tensor) -> torch.Tensor:
        """SCE of the decoder's reconstruction of the epoch's masked rows from their propagated representation."""
        target = self._reconstruction_targets[name]
        decoded = self.decoders[name](own_side.index_select(0, target.rows))
        return scaled_cosine_error(decoded, target.directions, self.options.sce_alpha)

    @property
    def augmented_rate(self) -> float:
        return self.loss_options.aug_sample_rate

    def batch_loss(self, representations: Representations, batch: Batch) -> BatchLoss:
        return self.with_reconstruction(super().batch_loss(representations, batch), representations)

    def bpr_losses(self, representations: Representations, batch: Batch) -> torch.Tensor:
        if not len(batch.augmented):
            return super().bpr_losses(representations, batch)
        # Real and augmented triples read each table with one index, so the backward pass scatters into
        # one zeroed (n_items, d) gradient instead of four (the per-sample losses are the same).
        augmented = batch.augmented
        users = representations.users[torch.cat([batch.users, augmented[:, 0]])]
        positives, negatives = representations.items[
            torch.cat([batch.positives, augmented[:, 1], batch.negatives, augmented[:, 2]])].chunk(2)
        losses = bpr_per_sample(users, positives, negatives)
        real = len(batch.users)
        # augmented triples join the batch (as in the original), minus the noisiest ones
        return torch.cat([losses[:real], prune_highest(losses[real:], self.loss_options.prune_rate)])

    def with_reconstruction(self, loss: BatchLoss, representations: Representations) -> BatchLoss:
        """`loss` plus the weighted masked-feature reconstruction error, when features were masked."""
        reconstruction = representations.reconstruction_loss
        if reconstruction is None:
            return loss
        total = loss.total + self.options.reconstruction_weight * reconstruction
        return dataclasses.replace(loss, total=total, reconstruction=reconstruction)
