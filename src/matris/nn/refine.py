"""Refinement sub-layer (spec 4, steps 3 and 4): enveloped gated messages and bias-free FFNs."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from .chunked import chunked_refinement
from .layers import FFN, GatedMLP, Linear, Piece, norm_eps, residual
from .ops import pair_mean, segment_sum
from .symmetric import both_ways, doubled, ordered_gated, ordered_pieces


class Refinement(nn.Module):
    """f = G(pieces); n = sum_{rows into v} f * s; node += FFN_n(n); edge += FFN_e(f).

    Call arguments (R rows):
      node: [Nv, Dv] features receiving the messages; edge: [Ny, Dy] per-row features, or
      per bond when y_index is given (atom graph: per-row deltas are folded back by the
      mean of the two directions); pieces: inputs of G (see GatedMLP), rows R;
      radial: [U, K] enveloped radial basis per bond; envelope_index: tuple of [R] bond
      indices; the learnable envelope is s = prod_k (radial @ P)[envelope_index[k]];
      tgt: [R] receiving node of each row, or a tuple of such (symmetric rows: each row's
      message goes to every node named; `matris.nn.symmetric`).  Returns (node_new, edge_new).
    """

    in_dims: tuple[int, ...]
    hidden: int
    norm: str = "layer"
    eps: float | None = None
    smoothed_delta: bool = False
    dtype: jnp.dtype = jnp.float32
    chunk: int = 0  # > 0: the per-row work in chunks of rows (`matris.nn.chunked`)
    save_dots: bool = False  # chunked: keep the products of the loop body (`chunked.loop_body`)

    @nn.compact
    def __call__(
        self,
        node: jax.Array,
        edge: jax.Array,
        pieces: Sequence[Piece],
        radial: jax.Array,
        envelope_index: Sequence[jax.Array],
        tgt: jax.Array,
        y_index: jax.Array | None = None,
    ):
        rows = (tgt[0] if isinstance(tgt, tuple) else tgt).shape[0]
        if self.chunk and rows > self.chunk and not self.is_initializing():
            return self._chunked(node, edge, pieces, radial, envelope_index, tgt, y_index)
        dv, dy = node.shape[1], edge.shape[1]
        f = GatedMLP(self.in_dims, self.hidden, dy, self.norm, self.eps, self.dtype,
                     name="message_mlp")(pieces)
        proj = Linear(dy, dtype=self.dtype, name="envelope")(radial)
        s = proj[envelope_index[0]]
        for index in envelope_index[1:]:
            s = s * proj[index]
        smoothed = f * s
        n = sum(segment_sum(smoothed, ids, node.shape[0])
                for ids in (tgt if isinstance(tgt, tuple) else (tgt,)))
        node_new = FFN(dv, self.dtype, name="node_ffn")(n) + residual(self, "node_res", node)
        delta = FFN(dy, self.dtype, name="edge_ffn")(smoothed if self.smoothed_delta else f)
        if y_index is not None:
            delta = pair_mean(delta, y_index, edge.shape[0])
        return node_new, delta + residual(self, "edge_res", edge)

    def _chunked(self, node, edge, pieces, radial, envelope_index, tgt, y_index):
        """The chunked path; symmetric rows (tgt a pair) run as doubled ordered rows."""
        p, eps = self.variables["params"], norm_eps(self.norm, self.eps, self.dtype)
        in_dims, symmetric = self.in_dims, isinstance(tgt, tuple)
        rows = edge.shape[0]
        if symmetric:  # per-row edge features (the line graph): y_index is None
            p = {**p, "message_mlp": ordered_gated(p["message_mlp"], in_dims, pieces)}
            pieces, in_dims = ordered_pieces(pieces, in_dims)
            envelope_index, tgt = both_ways(envelope_index), both_ways(tgt)[0]
            edge = doubled(edge)
        node_new, edge_new = chunked_refinement(
            p, node, edge, pieces, in_dims, radial, envelope_index, tgt, y_index, self.norm,
            eps, self.smoothed_delta, self.chunk, self.save_dots)
        return node_new, (edge_new[:rows] if symmetric else edge_new)
