"""The O(N^2) baseline: MatRIS with its atom-graph separable attention replaced by ordinary
dense softmax attention over all atom pairs of each structure.

Per interaction block the atom-graph sub-layer becomes a single-head transformer layer
(d = atom_dim):

    q, k, v = h W_q, h W_k, h W_v                        [N, d]
    A = softmax_j(q_i . k_j / sqrt(d))  over atoms j of i's structure (padding masked)
    h <- GatedMLP([h || A v]) + gamma h                  (bond features pass unchanged)

so the sub-layer costs 4 N^2 d multiply-adds forward and stores N x N scores for the backward
pass.  Everything else (embeddings, line-graph attention, both refinements, readout, forces and
stress by one gradient call) is the unchanged MatRIS code.  It is a cost-shape baseline with
random weights, not a trained model.

Use: ``install()`` once in a worker process before the model is traced; every MatRIS built
afterwards in that process uses the dense block (the module swaps the class that
``matris.nn.model.MatRIS`` looks up by name).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

import matris.nn.model as model_module
from matris.graph.types import GraphBatch
from matris.nn.attention import SeparableAttention
from matris.nn.layers import GatedMLP, Linear, residual
from matris.nn.refine import Refinement

MASKED = -1e9  # logit of a pair in different structures (finite: no NaN on empty rows)


class DenseAttention(nn.Module):
    """Dense softmax attention over the atoms that share a structure.

    x: [N, d] atom features; group: [N] structure index; mask: [N] real atoms.  Returns [N, d].
    """

    hidden: int
    norm: str = "layer"
    eps: float | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, group, mask):
        d = x.shape[1]
        q = Linear(d, dtype=self.dtype, name="query")(x)
        k = Linear(d, dtype=self.dtype, name="key")(x)
        v = Linear(d, dtype=self.dtype, name="value")(x)
        scores = (q @ k.T) * (1.0 / d**0.5)
        allowed = (group[:, None] == group[None, :]) & mask[None, :]
        alpha = jax.nn.softmax(jnp.where(allowed, scores, MASKED), axis=-1)
        message = alpha @ v
        update = GatedMLP((d, d), self.hidden, d, self.norm, self.eps, self.dtype,
                          name="node_mlp")([(x, None), (message, None)])
        return update + residual(self, "node_res", x)


class DenseInteractionBlock(model_module.InteractionBlock):
    """InteractionBlock with the atom-graph attention made dense (same order otherwise)."""

    @nn.compact
    def __call__(self, carry, rho, rho3, batch: GraphBatch, w_edge, w_angle):
        h, b, t = carry
        c = self.config
        dt = jnp.dtype(c.dtype)
        kw = dict(norm=c.norm, eps=c.norm_eps, dtype=dt)
        rkw = dict(kw, smoothed_delta=c.smoothed_delta_edge)
        ctr, nbr, d2u = batch.centers, batch.neighbors, batch.edge_bond
        bt, bs, ac = batch.angle_bond_t, batch.angle_bond_s, batch.angle_center
        b, t = SeparableAttention(c.bond_dim, name="attn_line", **kw)(b, t, bt, bs, None, w_angle)
        h = DenseAttention(c.atom_dim, name="attn_atom_dense", **kw)(
            h, batch.node_graph, batch.node_mask)
        line = Refinement((c.angle_dim, c.atom_dim, c.bond_dim, c.bond_dim), c.bond_dim,
                          name="refine_line", **rkw)
        b, t = line(b, t, [(t, None), (h, ac), (b, bt), (b, bs)], rho3, (bt, bs), bt)
        atom = Refinement((c.bond_dim, c.atom_dim, c.atom_dim), c.atom_dim,
                          name="refine_atom", **rkw)
        h, b = atom(h, b, [(b, d2u), (h, ctr), (h, nbr)], rho, (d2u,), ctr, d2u)
        return (h, b, t), None


def install() -> None:
    """Make every MatRIS traced from now on in this process use the dense block."""
    model_module.InteractionBlock = DenseInteractionBlock


def dense_flops_per_block(n_atoms: int, dim: int) -> float:
    """Forward FLOPs of the two N x N products of one dense sub-layer (2 * 2 N^2 d)."""
    return 4.0 * n_atoms * n_atoms * dim
