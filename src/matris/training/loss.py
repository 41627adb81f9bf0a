"""Masked losses and metrics for one padded batch (spec 7).

Every term is returned as a (sum, count) pair so that sub-batches on several devices can be
added before dividing: the loss of a global batch is independent of how it was split.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..graph.types import GraphBatch, Targets
from ..nn.ops import safe_norm
from ..potential import EV_PER_A3_TO_GPA
from .config import LOSS_TERMS, LossConfig

TERMS = LOSS_TERMS


def _penalty(err: jax.Array, delta: float) -> jax.Array:
    """|err| (delta = 0) or the Huber loss with the same slope for large errors."""
    a = jnp.abs(err)
    if delta <= 0:
        return a
    return jnp.where(a < delta, 0.5 * a * a / delta, a - 0.5 * delta)


def loss_terms(pred: dict, tgt: Targets, batch: GraphBatch, huber_delta: float = 0.0,
               forces_mse: bool = False) -> dict:
    """(sum, count) of each loss term and of plain MAE metrics for one batch.

    Losses: energy per atom |dE|/N; forces ||dF||_2 per atom (L2MAE), or ||dF||_2^2 in
    eV^2/A^2 with ``forces_mse`` (no Huber then); stress mean over the 9
    components of |ds| in GPa; magmoms |dm| per atom.  Metrics *_mae: the same with plain
    absolute errors (forces per component, eV/A).  Padding and missing labels are masked.
    """
    gmask, nmask = batch.graph_mask, batch.node_mask
    n_atoms = jnp.maximum(batch.graphs.n_node, 1).astype(pred["energy"].dtype)
    node_has = lambda has: nmask & has[batch.node_graph]
    out = {}

    e_err = (pred["energy"] - tgt.energy) / n_atoms
    m_e = gmask & tgt.has_energy
    out["energy"] = (_masked_sum(_penalty(e_err, huber_delta), m_e), m_e.sum())
    out["energy_mae"] = (_masked_sum(jnp.abs(e_err), m_e), m_e.sum())

    if "forces" in pred:
        df = pred["forces"] - tgt.forces
        m_f = node_has(tgt.has_forces)
        pen = jnp.sum(df * df, axis=-1) if forces_mse else _penalty(safe_norm(df), huber_delta)
        out["forces"] = (_masked_sum(pen, m_f), m_f.sum())
        out["forces_mae"] = (_masked_sum(jnp.abs(df).mean(-1), m_f), m_f.sum())
    if "stress" in pred:
        ds = (pred["stress"] - tgt.stress) * EV_PER_A3_TO_GPA
        m_s = gmask & tgt.has_stress
        out["stress"] = (_masked_sum(_penalty(ds, huber_delta).mean((-1, -2)), m_s), m_s.sum())
        out["stress_mae"] = (_masked_sum(jnp.abs(ds).mean((-1, -2)), m_s), m_s.sum())
    if "magmoms" in pred:
        dm = pred["magmoms"] - tgt.magmoms
        m_m = node_has(tgt.has_magmoms)
        out["magmoms"] = (_masked_sum(_penalty(dm, huber_delta), m_m), m_m.sum())
        out["magmoms_mae"] = (_masked_sum(jnp.abs(dm), m_m), m_m.sum())
    return out


def _masked_sum(values: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(mask, values, 0.0))


def weighted_loss(terms: dict, weights: LossConfig | dict) -> jax.Array:
    """sum_k w_k * sum_k / max(count_k, 1) over the loss terms present; ``weights`` a
    LossConfig (its first-stage weights) or {term: weight} (floats or traced scalars)."""
    if isinstance(weights, LossConfig):
        weights = weights.weights()
    total = 0.0
    for name in TERMS:
        if name in terms:
            s, c = terms[name]
            total = total + weights[name] * s / jnp.maximum(c, 1)
    return total


def means(terms: dict) -> dict:
    """{name: sum / count} (NaN-free: 0 when a term has no labelled rows)."""
    return {k: s / jnp.maximum(c, 1) for k, (s, c) in terms.items()}
