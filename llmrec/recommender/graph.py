"""Graph engines: one normalised propagation step over the user-item graph.

Models only ever ask for two operations, `items_to_users(x)` and
`users_to_items(x)`, each a sum over neighbours weighted by the symmetric
LightGCN normalisation 1/sqrt(d_u d_i). Two interchangeable engines implement
them:

- `DGLEngine`: a DGL heterograph with both relations, ('user','rates','item')
  and ('item','rated_by','user'). The symmetric weight factorises,
  1/sqrt(d_u d_i) = d_u^-1/2 * d_i^-1/2, so a step is a dense scaling by the
  source degrees, DGL's unweighted `copy_u_sum` SpMM over one relation, and a
  dense scaling by the target degrees. That form is the fast one on CPU:
  measured on an ml-latest-small-sized graph (1 thread) the weighted
  `update_all(u_mul_e, sum)` took 49 ms per forward pair against 7 ms here
  (torch.sparse.mm: 14 ms), because DGL's CPU kernel for an edge-weighted
  message is far slower than its copy kernel; see bench/results/train.md.
- `TorchSparseEngine`: the same operator as CSR matrices with `torch.sparse.mm`.
  DGL's newest Linux wheel imports only with torch <= 2.2.1 and has no CUDA
  build for newer torch, so GPU boxes fall back to this one.

`--engine auto` picks DGL when it imports and can live on the device, else the
torch engine, and the log says which.
"""

from __future__ import annotations

import logging
import warnings
from typing import Protocol

import numpy as np
import torch

logger = logging.getLogger(__name__)

ENGINES = ("auto", "dgl", "torch")


class GraphEngine(Protocol):
    name: str

    def items_to_users(self, item_values: torch.Tensor) -> torch.Tensor:
        """Row u of the result: sum over u's items i of x_i / sqrt(d_u d_i)."""

    def users_to_items(self, user_values: torch.Tensor) -> torch.Tensor:
        """Row i of the result: sum over i's users u of x_u / sqrt(d_u d_i)."""


def symmetric_edge_weights(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> np.ndarray:
    """1/sqrt(d_u d_i) per edge; degrees count the edges given (every edge has d >= 1)."""
    user_degree = np.bincount(users, minlength=n_users).astype(np.float64)
    item_degree = np.bincount(items, minlength=n_items).astype(np.float64)
    return (1.0 / np.sqrt(user_degree[users] * item_degree[items])).astype(np.float32)


class DGLEngine:
    """Propagation with DGL's SpMM on a two-relation user/item heterograph."""

    name = "dgl"

    def __init__(self, pairs: np.ndarray, n_users: int, n_items: int, device: torch.device) -> None:
        import dgl

        users = torch.from_numpy(np.ascontiguousarray(pairs[:, 0]))
        items = torch.from_numpy(np.ascontiguousarray(pairs[:, 1]))
        graph = dgl.heterograph(
            {("user", "rates", "item"): (users, items), ("item", "rated_by", "user"): (items, users)},
            num_nodes_dict={"user": n_users, "item": n_items},
        ).to(device)
        # One relation graph per direction, with its sparse formats built once
        # here instead of on the first call of every process.
        self.user_to_item_graph = graph["rates"]
        self.item_to_user_graph = graph["rated_by"]
        self.user_to_item_graph.create_formats_()
        self.item_to_user_graph.create_formats_()
        # Nodes without edges get scale 1: their sums are empty anyway, and
        # 0^-1/2 would turn them into inf * 0 = nan.
        self.user_scale = _inverse_sqrt_degree(pairs[:, 0], n_users).to(device)
        self.item_scale = _inverse_sqrt_degree(pairs[:, 1], n_items).to(device)

    def items_to_users(self, item_values: torch.Tensor) -> torch.Tensor:
        import dgl

        return dgl.ops.copy_u_sum(self.item_to_user_graph, item_values * self.item_scale) * self.user_scale

    def users_to_items(self, user_values: torch.Tensor) -> torch.Tensor:
        import dgl

        return dgl.ops.copy_u_sum(self.user_to_item_graph, user_values * self.user_scale) * self.item_scale


def _inverse_sqrt_degree(nodes: np.ndarray, n_nodes: int) -> torch.Tensor:
    """d^-1/2 per node as an (n, 1) column, degree counted over the given edges (>= 1)."""
    degree = np.maximum(np.bincount(nodes, minlength=n_nodes), 1).astype(np.float64)
    return torch.from_numpy((1.0 / np.sqrt(degree)).astype(np.float32)).unsqueeze(1)


class _NormalisedSpMM(torch.autograd.Function):
    """y = A x with the backward pass using the precomputed A^T (no transpose per step)."""

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, matrix_t: torch.Tensor, values: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.matrix_t = matrix_t
        return torch.sparse.mm(matrix, values)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[None, None, torch.Tensor]:  # type: ignore[override]
        return None, None, torch.sparse.mm(ctx.matrix_t, grad_output)


class TorchSparseEngine:
    """Propagation as CSR sparse-dense products (`torch.sparse.mm`)."""

    name = "torch"

    def __init__(self, pairs: np.ndarray, n_users: int, n_items: int, device: torch.device) -> None:
        weights = torch.from_numpy(symmetric_edge_weights(pairs[:, 0], pairs[:, 1], n_users, n_items))
        index = torch.from_numpy(np.ascontiguousarray(pairs.T))
        user_item = torch.sparse_coo_tensor(index, weights, (n_users, n_items)).coalesce()
        with warnings.catch_warnings():  # "sparse CSR support is in beta": we test what we use
            warnings.simplefilter("ignore", UserWarning)
            self.user_item = user_item.to_sparse_csr().to(device)
            self.item_user = user_item.t().coalesce().to_sparse_csr().to(device)

    def items_to_users(self, item_values: torch.Tensor) -> torch.Tensor:
        return _NormalisedSpMM.apply(self.user_item, self.item_user, item_values)

    def users_to_items(self, user_values: torch.Tensor) -> torch.Tensor:
        return _NormalisedSpMM.apply(self.item_user, self.user_item, user_values)


def _dgl_failure(device: torch.device) -> str | None:
    """Why DGL cannot run here, or None when it can."""
    try:
        import dgl
    except Exception as exc:  # noqa: BLE001 - DGL fails with many error types against a newer torch
        return f"dgl does not import ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    if device.type == "cuda":
        try:
            dgl.graph(([0], [0])).to(device)
        except Exception as exc:  # noqa: BLE001 - a CPU-only DGL build raises DGLError
            return f"this dgl build cannot use {device} ({str(exc).splitlines()[0][:120]})"
    return None


def build_engine(
    pairs: np.ndarray, n_users: int, n_items: int, device: torch.device, engine: str = "auto"
) -> GraphEngine:
    """The propagation engine for the (user, item) training pairs on `device`."""
    from llmrec.errors import ConfigError

    if engine not in ENGINES:
        raise ConfigError(f"[train] option 'engine' = {engine!r}: expected one of {ENGINES}")
    if engine in ("auto", "dgl"):
        failure = _dgl_failure(device)
        if failure is None:
            return DGLEngine(pairs, n_users, n_items, device)
        if engine == "dgl":
            raise ConfigError(f"--engine dgl: {failure}; use --engine torch")
        logger.warning("graph engine: %s; using the torch sparse engine instead", failure)
    return TorchSparseEngine(pairs, n_users, n_items, device)
