"""Geometry inside jit: strain, edge vectors and angle cosines from positions and cell."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..graph.types import GraphBatch


def apply_strain(positions, cell, strain, node_graph):
    """Deform by the symmetric part of ``strain`` (row-vector convention, spec 1.3).

    positions [N,3], cell [G,3,3], strain [G,3,3], node_graph [N] -> (positions, cell).
    """
    eps = 0.5 * (strain + jnp.swapaxes(strain, 1, 2))
    positions = positions + jnp.einsum("ni,nij->nj", positions, eps[node_graph])
    cell = cell + jnp.einsum("gki,gij->gkj", cell, eps)
    return positions, cell


def edge_vectors(batch: GraphBatch, positions: jax.Array, cell: jax.Array) -> jax.Array:
    """x_e = r_i - (r_j + n_e L_g), pointing from neighbour j to centre i.  -> [E, 3]."""
    graph_of_edge = batch.node_graph[batch.centers]
    shift = jnp.einsum("ei,eij->ej", batch.shifts.astype(positions.dtype), cell[graph_of_edge])
    return positions[batch.centers] - (positions[batch.neighbors] + shift)


def angle_cosines(unit: jax.Array, edge_1: jax.Array, edge_2: jax.Array) -> jax.Array:
    """cos of the angle at the shared centre between two unit edge vectors.  -> [A]."""
    return jnp.sum(unit[edge_1] * unit[edge_2], axis=-1)


def cell_volumes(cell: jax.Array, graph_mask: jax.Array) -> jax.Array:
    """|det L| per graph, 1 for padding graphs and degenerate cells (no division by 0)."""
    vol = jnp.abs(jnp.sum(cell[:, 0] * jnp.cross(cell[:, 1], cell[:, 2]), axis=-1))
    return jnp.where(graph_mask & (vol > 1e-12), vol, 1.0)
