"""Unordered (symmetric) angle rows (``MatRISConfig.symmetric_angles``) as ordered ones.

With symmetric angles the line graph holds one row per unordered pair of bonds {p, q} at a
centre, and the line-graph MLPs apply one kernel block to both bonds (the piece
``(b, (bt, bs))`` of `matris.nn.layers.Piece`).  That is exactly the ordered model whose
target- and source-bond kernel blocks are equal: its rows (p, q) and (q, p) then carry equal
features in every block, so one of them suffices, and each kept row sends its message to
both bonds.

The functions here rebuild the ordered form: rows doubled ((p, q) then (q, p)) and the shared
kernel block written out once per bond piece.  The chunked sub-layers (`matris.nn.chunked`)
run on that form unchanged, and the tests compare a symmetric model with the ordered model
that `ordered_params` makes from its parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .layers import Piece

_IN_KERNELS = ("core_in_kernel", "gate_in_kernel")


def doubled(x: jax.Array | None) -> jax.Array | None:
    """[R, ...] -> [2R, ...]: the rows (p, q) then again for (q, p)."""
    return None if x is None else jnp.concatenate([x, x])


def both_ways(pair: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """(bt, bs) [R] -> (bt', bs') [2R]: the rows (p, q) and (q, p)."""
    a, b = pair
    return jnp.concatenate([a, b]), jnp.concatenate([b, a])


def ordered_pieces(pieces: Sequence[Piece], in_dims: Sequence[int]):
    """Pieces over R unordered rows -> (pieces over 2R ordered rows, their in_dims).

    A per-row piece is doubled, a gathered piece gets its index doubled, and a shared piece
    (x, (bt, bs)) becomes the two pieces (x, bt') and (x, bs') of `both_ways`.
    """
    out, dims = [], []
    for (x, index), d in zip(pieces, in_dims, strict=True):
        if isinstance(index, tuple):
            t, s = both_ways(index)
            out += [(x, t), (x, s)]
            dims += [d, d]
        else:
            out.append((doubled(x), None) if index is None else (x, doubled(index)))
            dims.append(d)
    return out, tuple(dims)


def ordered_gated(p: dict, in_dims: Sequence[int], pieces: Sequence[Piece]) -> dict:
    """A gated MLP's parameters with each shared piece's kernel rows written out twice.
    Kernels are [..., fan_in, hidden] (a leading layer axis, if any, is kept)."""
    blocks, start = {name: [] for name in _IN_KERNELS}, 0
    for (_, index), d in zip(pieces, in_dims, strict=True):
        for name in _IN_KERNELS:
            rows = p[name][..., start:start + d, :]
            blocks[name] += [rows, rows] if isinstance(index, tuple) else [rows]
        start += d
    return {**p, **{name: jnp.concatenate(blocks[name], axis=-2) for name in _IN_KERNELS}}


def ordered_params(params: dict, config) -> dict:
    """A symmetric model's parameters -> those of the same model with ordered angle rows
    (``config.replace(symmetric_angles=False)``): the line-graph MLPs' shared bond block is
    repeated for the target and the source bond.  Everything else is unchanged."""
    c, shared = config, (None, (0, 1))  # only the index kind of a piece matters here
    blocks = dict(params["blocks"])
    line, refine = dict(blocks["attn_line"]), dict(blocks["refine_line"])
    line["edge_mlp"] = ordered_gated(line["edge_mlp"], (c.bond_dim, c.bond_dim),
                                     ((None, None), shared))
    refine["message_mlp"] = ordered_gated(refine["message_mlp"],
                                          (c.angle_dim, c.atom_dim, c.bond_dim),
                                          ((None, None), (None, 0), shared))
    blocks["attn_line"], blocks["refine_line"] = line, refine
    return {**params, "blocks": blocks}
