"""The MatRIS network: embeddings, interaction blocks (spec 4) and readout (spec 5)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..config import MatRISConfig
from ..graph.types import GraphBatch
from .attention import SeparableAttention
from .embed import NUM_ELEMENTS, AngleEmbedding, AtomEmbedding, BondEmbedding
from .geometry import angle_cosines, edge_vectors
from .layers import MLP, Norm
from .ops import polynomial_envelope, safe_norm
from .refine import Refinement
from .repulsion import core_repulsion_energies

ARCCOS_SHRINK = 1.0 - 1e-6  # theta = arccos((1 - 1e-6) cos): finite gradient at +-1


def check_angle_rows(batch: GraphBatch, config: MatRISConfig) -> None:
    """Raise ValueError unless the batch's angle rows are the kind the model is built for
    (ordered pairs, or unordered ones with ``symmetric_angles``): the other kind would count
    each pair of bonds twice, or half of them not at all, without any error."""
    have = batch.symmetric_angles
    if have != config.symmetric_angles:
        kinds = {True: "unordered (symmetric_angles=True)", False: "ordered (symmetric_angles=False)"}
        raise ValueError(f"the graph batch has {kinds[have]} angle rows but the model needs "
                         f"{kinds[config.symmetric_angles]} ones: build its graphs with "
                         "matris.graph.graph_for(structure, config)")


class InteractionBlock(nn.Module):
    """Line attention -> atom attention -> line refinement -> atom refinement.

    Arguments: carry = (h [N, dn], b [U, de], t [A, dt]), rho / rho3 [U, K], the batch, and
    the smooth-cutoff weights (w_edge [E], w_angle [A]) or None.  Returns ((h, b, t), None),
    the signature ``nn.scan`` needs.  Layer parameters are stacked on a leading axis; the
    scan is unrolled unless ``config.scan_blocks`` (then a deep model compiles as fast as a
    one-block model, at some run-time cost on CPU).
    """

    config: MatRISConfig

    @nn.compact
    def __call__(self, carry, rho, rho3, batch: GraphBatch, w_edge, w_angle):
        h, b, t = carry
        c = self.config
        dt = jnp.dtype(c.dtype)
        kw = dict(norm=c.norm, eps=c.norm_eps, dtype=dt, save_dots=c.remat_save_dots)
        rkw = dict(kw, smoothed_delta=c.smoothed_delta_edge)
        ctr, nbr, d2u = batch.centers, batch.neighbors, batch.edge_bond
        bt, bs, ac = batch.angle_bond_t, batch.angle_bond_s, batch.angle_center
        sym = c.symmetric_angles
        b, t = SeparableAttention(c.bond_dim, chunk=c.chunk_rows, symmetric=sym,
                                  name="attn_line", **kw)(b, t, bt, bs, None, w_angle)
        h, b = SeparableAttention(c.atom_dim, chunk=c.chunk_rows, name="attn_atom", **kw)(
            h, b, ctr, nbr, d2u, w_edge)
        bonds = [(b, (bt, bs))] if sym else [(b, bt), (b, bs)]  # shared or separate kernels
        line = Refinement((c.angle_dim, c.atom_dim) + (c.bond_dim,) * len(bonds), c.bond_dim,
                          chunk=c.chunk_rows, name="refine_line", **rkw)
        b, t = line(b, t, [(t, None), (h, ac)] + bonds, rho3, (bt, bs), (bt, bs) if sym else bt)
        atom = Refinement((c.bond_dim, c.atom_dim, c.atom_dim), c.atom_dim,
                          chunk=c.chunk_rows, name="refine_atom", **rkw)
        h, b = atom(h, b, [(b, d2u), (h, ctr), (h, nbr)], rho, (d2u,), ctr, d2u)
        return (h, b, t), None


class MatRIS(nn.Module):
    """Per-atom energies (eV, reference included) and magnetic moments (muB).

    __call__(batch, positions [N,3], cell [G,3,3]) -> {"energies": [N], "magmoms": [N]},
    zero on padding atoms.  Positions and cell are passed separately from the batch so
    that forces and stress can be taken as gradients with respect to them.
    """

    config: MatRISConfig

    @nn.compact
    def __call__(self, batch: GraphBatch, positions: jax.Array, cell: jax.Array):
        c = self.config
        check_angle_rows(batch, c)
        dt = jnp.dtype(c.dtype)
        positions, cell = positions.astype(dt), cell.astype(dt)
        vec = edge_vectors(batch, positions, cell)
        length = safe_norm(vec)
        unit = vec / jnp.where(length > 0, length, 1.0)[:, None]
        bond_length = length[batch.bond_edge]
        cos_theta = angle_cosines(unit, batch.angle_edge_1, batch.angle_edge_2)
        theta = jnp.arccos(ARCCOS_SHRINK * cos_theta)

        h = AtomEmbedding(c.atom_dim, dt, c.element_features, c.element_chemistry,
                          name="atom_embedding")(batch.numbers)
        b, rho, rho3 = BondEmbedding(
            c.bond_dim, c.num_radial, c.cutoff, c.three_body_cutoff, c.envelope_exponent,
            c.learnable_basis, dt, name="bond_embedding",
        )(bond_length)
        t = AngleEmbedding(c.angle_dim, c.angle_basis, c.num_angular, c.cutoff,
                           c.learnable_basis, dt, name="angle_embedding")(theta, cos_theta)

        w_edge = w_angle = None
        if c.smooth:
            w_edge = polynomial_envelope(length / c.cutoff, c.envelope_exponent)
            w_bond3 = polynomial_envelope(bond_length / c.three_body_cutoff, c.envelope_exponent)
            w_angle = w_bond3[batch.angle_bond_t] * w_bond3[batch.angle_bond_s]

        block = InteractionBlock
        if c.remat:
            # Rematerialisation needs the rolled loop: inside an unrolled scan XLA sees the
            # recomputation next to the forward pass and merges them again (CSE), so nothing
            # is saved (measured: 4.4 GB temp either way at 128 Fe atoms, official shape;
            # rolled: 0.9 GB at the same speed).
            policy = (jax.checkpoint_policies.dots_with_no_batch_dims_saveable
                      if c.remat_save_dots else None)
            block = nn.remat(InteractionBlock, prevent_cse=False, policy=policy)
        rolled = c.scan_blocks or c.remat
        blocks = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                         in_axes=(nn.broadcast,) * 5, length=c.num_layers,
                         unroll=1 if rolled else c.num_layers)
        (h, b, t), _ = blocks(c, name="blocks")((h, b, t), rho, rho3, batch, w_edge, w_angle)

        h_hat = Norm(c.norm, c.norm_eps, dt, name="readout_norm")(h)
        energy = MLP(c.energy_hidden, 1, dt, zero_last=True, name="energy_head")(h_hat)[:, 0]
        magmom = jnp.abs(MLP(c.magmom_hidden, 1, dt, name="magmom_head")(h_hat)[:, 0])
        reference = self.param("reference_energy", nn.initializers.zeros, (NUM_ELEMENTS,), dt)
        energy = energy + reference[jnp.clip(batch.numbers - 1, 0, NUM_ELEMENTS - 1)]
        if c.core_repulsion > 0:
            energy = energy + core_repulsion_energies(
                length, batch.numbers, batch.centers, batch.neighbors, batch.edge_mask,
                c.core_repulsion, c.cutoff, h.shape[0])
        mask = batch.node_mask
        return {"energies": jnp.where(mask, energy, 0.0), "magmoms": jnp.where(mask, magmom, 0.0)}
