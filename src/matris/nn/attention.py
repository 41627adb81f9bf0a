"""Separable attention (spec 3.2): written once, used on the atom graph and the line graph."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from .chunked import chunked_attention
from .layers import GatedMLP, Linear, norm_eps, residual
from .ops import pair_mean, segment_softmax_sum
from .symmetric import both_ways, doubled, ordered_gated


class SeparableAttention(nn.Module):
    """One attention sub-layer over a graph with node features x and edge features y.

    Call arguments (R rows = edges of this graph):
      x: [Nx, Dx] node features; y: [Ny, Dy] edge features, one per row or (atom graph)
      one per undirected bond; tgt, src: [R] target and source node of each row;
      y_index: [R] row -> y index (the atom graph's d2u) or None when y is per row;
      weights: [R] smooth-cutoff weights in [0, 1] or None (faithful model).
    Returns (x_new [Nx, Dx], y_new [Ny, Dy]).  When y is per bond, the per-row values are
    folded back with the mean of the two directions.  chunk > 0: the per-row work in
    chunks of that many rows with a rematerialised loop body (`matris.nn.chunked`).
    symmetric: rows are unordered pairs {tgt, src} (y per row): one kernel block for both
    nodes, and each row's message goes to both of them, in the softmax of either direction
    (`matris.nn.symmetric`).
    """

    hidden: int
    norm: str = "layer"
    eps: float | None = None
    dtype: jnp.dtype = jnp.float32
    chunk: int = 0
    symmetric: bool = False
    save_dots: bool = False  # chunked: keep the products of the loop body (`chunked.loop_body`)

    @nn.compact
    def __call__(self, x, y, tgt, src, y_index=None, weights=None):
        if self.chunk and tgt.shape[0] > self.chunk and not self.is_initializing():
            return self._chunked(x, y, tgt, src, y_index, weights)
        num_nodes, dx = x.shape
        dy = y.shape[1]
        kw = dict(norm=self.norm, eps=self.eps, dtype=self.dtype)
        if self.symmetric:
            value = GatedMLP((dy, dx), self.hidden, dy, name="edge_mlp", **kw)(
                [(y, y_index), (x, (tgt, src))])
        else:
            value = GatedMLP((dy, dx, dx), self.hidden, dy, name="edge_mlp", **kw)(
                [(y, y_index), (x, tgt), (x, src)])
        logit_t = Linear(dy, dtype=self.dtype, name="target_logits")(y)
        logit_s = Linear(dy, dtype=self.dtype, name="source_logits")(y)
        if y_index is not None:
            logit_t, logit_s = logit_t[y_index], logit_s[y_index]
        message = value if weights is None else value * weights[:, None]
        if self.symmetric:  # each row is in the softmax of both its nodes, in either direction
            ids, message, w = jnp.concatenate([tgt, src]), doubled(message), doubled(weights)
            m_t = segment_softmax_sum(doubled(logit_t), message, ids, num_nodes, w)
            m_s = segment_softmax_sum(doubled(logit_s), message, ids, num_nodes, w)
        else:
            m_t = segment_softmax_sum(logit_t, message, tgt, num_nodes, weights)
            m_s = segment_softmax_sum(logit_s, message, src, num_nodes, weights)
        node_mlp = GatedMLP((dx, dy, dy), self.hidden, dx, name="node_mlp", **kw)
        x_new = node_mlp([(x, None), (m_t, None), (m_s, None)]) + residual(self, "node_res", x)
        folded = value if y_index is None else pair_mean(value, y_index, y.shape[0])
        y_new = folded + residual(self, "edge_res", y)
        return x_new, y_new

    def _chunked(self, x, y, tgt, src, y_index, weights):
        """The chunked path; symmetric rows run as the equivalent doubled ordered rows."""
        p, eps = self.variables["params"], norm_eps(self.norm, self.eps, self.dtype)
        if not self.symmetric:
            return chunked_attention(p, x, y, tgt, src, y_index, weights, self.norm, eps,
                                     self.chunk, self.save_dots)
        rows = tgt.shape[0]
        edge_mlp = ordered_gated(p["edge_mlp"], (y.shape[1], x.shape[1]),
                                 ((y, None), (x, (tgt, src))))
        x_new, y_new = chunked_attention({**p, "edge_mlp": edge_mlp}, x, doubled(y),
                                         *both_ways((tgt, src)), None, doubled(weights),
                                         self.norm, eps, self.chunk, self.save_dots)
        return x_new, y_new[:rows]

