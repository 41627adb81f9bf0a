"""Attention and refinement sub-layers computed in chunks of rows (``MatRISConfig.chunk_rows``).

A row is an angle (line graph) or a directed edge (atom graph).  Angles outnumber bonds ~5x and
atoms ~180x (official shape, bcc Fe), and every per-row array is [R, 128]: a force call's
backward pass keeps dozens of them per block.  Here the per-row work of a sub-layer runs in a
``lax.scan`` over chunks of rows whose body is rematerialised: the backward pass keeps only the
chunk inputs (per-row features where the sub-layer has them, and the index columns) and
recomputes one chunk at a time, so the per-row scratch is a few [chunk, 128] arrays (with
``remat_save_dots`` the body's matrix products are kept per row and only the elementwise work
is recomputed: more memory, less time; `loop_body`).  Per-node
quantities stay whole: projections of gathered pieces are computed once per node outside the
loop (loop constants); softmax sums, message sums and the per-bond fold of the atom graph's
per-edge outputs are accumulated into per-node carries.

The separable softmax needs each node's maximum logit before any sum: a first scan over the
chunks (not differentiated: the softmax does not depend on the constant it subtracts) finds
it.  Results equal the unchunked modules (SeparableAttention, Refinement) up to float rounding
(the scatter-adds run in the same row order); the parameters are theirs, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .layers import (
    Piece,
    add_pair,
    apply_ffn,
    gated_input_bias,
    gated_mlp,
    gated_output,
    piece_projection,
)
from .ops import finite_or_zero, softmax_normalise, softmax_numerators


def loop_body(body, save_dots: bool):
    """The scan body, rematerialised in the backward pass: everything is recomputed from the
    chunk's inputs (least memory), or with save_dots only the elementwise work, the matrix
    products' outputs being kept per row (a few [rows, width] arrays per sub-layer; official
    shape, 256 Fe-Cr atoms: XLA scratch 2.4 -> 4.0 GB, about 20 % faster)."""
    policy = jax.checkpoint_policies.dots_with_no_batch_dims_saveable if save_dots else None
    return jax.checkpoint(body, policy=policy)


def chunk_layout(rows: int, chunk: int) -> tuple[int, int]:
    """(number of chunks C, rows per chunk S) with C * S >= rows and S <= chunk; S divides
    rows when a chunk count up to twice the least one allows it (then nothing is padded)."""
    first = -(-rows // chunk)
    for count in range(first, 2 * first + 1):
        if rows % count == 0:
            return count, rows // count
    return first, -(-rows // first)


def to_chunks(columns: dict, rows: int, chunk: int) -> dict:
    """{name: (x [rows, ...] or None, fill)} -> {name: [C, S, ...] or None}, padded with fill
    (index columns: the padding node, so padding rows only touch padding segments)."""
    count, size = chunk_layout(rows, chunk)
    out = {}
    for name, (x, fill) in columns.items():
        if x is not None and count * size > rows:
            x = jnp.concatenate([x, jnp.full((count * size - rows,) + x.shape[1:], fill, x.dtype)])
        out[name] = None if x is None else x.reshape((count, size) + x.shape[1:])
    return out


def from_chunks(y: jax.Array, rows: int) -> jax.Array:
    """[C, S, ...] -> [rows, ...] (the padding rows dropped)."""
    return y.reshape((-1,) + y.shape[2:])[:rows]


def _pieces(p: dict, in_dims: Sequence[int], pieces: Sequence[Piece], columns: dict):
    """Per-row pieces become chunk columns, gathered pieces per-node tables (projected once)
    plus index columns; returns the per-chunk input-layer function c -> (core, gate) [S, h]."""
    tables = {}
    for k, (x, index) in enumerate(pieces):
        if index is None:
            columns[f"x{k}"] = (x, 0.0)
        else:
            tables[k] = piece_projection(p, in_dims, k, x)
            columns[f"i{k}"] = (index, x.shape[0] - 1)
    bias = gated_input_bias(p)

    def acc(c):
        out = bias
        for k in range(len(pieces)):
            if k in tables:
                core, gate = tables[k]
                out = add_pair(out, (core[c[f"i{k}"]], gate[c[f"i{k}"]]))
            else:
                out = add_pair(out, piece_projection(p, in_dims, k, c[f"x{k}"]))
        return out

    return acc


def _fold(rows_out, carry_extra, y_index, rows: int):
    """Per-row outputs: the scan's ys [rows, D]; per-bond (y_index given): 0.5 * the sum of
    the two directions accumulated in the carry (`ops.pair_mean`)."""
    return from_chunks(rows_out, rows) if y_index is None else 0.5 * carry_extra


def chunked_attention(p: dict, x, y, tgt, src, y_index, w, kind: str, eps: float, chunk: int,
                      save_dots: bool = False):
    """SeparableAttention (same arguments and parameters p) over chunks of ``chunk`` rows.

    x [Nx, Dx] nodes; y [Ny, Dy] per row, or per bond with y_index [R]; tgt, src [R];
    w [R] smooth-cutoff weights or None; save_dots: see `loop_body`.
    Returns (x_new [Nx, Dx], y_new [Ny, Dy]).
    """
    (nx, dx), (ny, dy), rows = x.shape, y.shape, tgt.shape[0]
    pe, in_dims = p["edge_mlp"], (dy, dx, dx)
    w_logits = jnp.concatenate([p["target_logits"]["kernel"], p["source_logits"]["kernel"]], 1)
    columns = {"tgt": (tgt, nx - 1), "src": (src, nx - 1), "w": (w, 0.0)}
    acc = _pieces(pe, in_dims, [(y, y_index), (x, tgt), (x, src)], columns)
    if y_index is None:
        logits = lambda c: c["x0"] @ w_logits
    else:
        table = y @ w_logits
        logits = lambda c: table[c["i0"]]
    del columns["i1"], columns["i2"]  # the gather indices of pieces 1, 2 are tgt and src
    xs = to_chunks(columns, rows, chunk)
    xs["i1"], xs["i2"] = xs["tgt"], xs["src"]

    def max_body(carry, c):
        mt, ms = carry
        lg = logits(c)
        return (mt.at[c["tgt"]].max(lg[:, :dy]), ms.at[c["src"]].max(lg[:, dy:])), None

    lowest = jnp.full((nx, dy), -jnp.inf, y.dtype)
    (mt, ms), _ = jax.lax.scan(max_body, (lowest, lowest), jax.lax.stop_gradient(xs))
    mt, ms = finite_or_zero(mt), finite_or_zero(ms)

    def body(carry, c):
        nt, dt, ns, ds, fold = carry
        value = gated_output(pe, acc(c), kind, eps)
        lg = logits(c)
        message = value if c["w"] is None else value * c["w"][:, None]
        et = softmax_numerators(lg[:, :dy], mt, c["tgt"], c["w"])
        es = softmax_numerators(lg[:, dy:], ms, c["src"], c["w"])
        carry = (nt.at[c["tgt"]].add(et * message), dt.at[c["tgt"]].add(et),
                 ns.at[c["src"]].add(es * message), ds.at[c["src"]].add(es),
                 None if fold is None else fold.at[c["i0"]].add(value))
        return carry, (value if y_index is None else None)

    zeros = jnp.zeros((nx, dy), y.dtype)
    fold0 = None if y_index is None else jnp.zeros((ny, dy), y.dtype)
    carry0 = (zeros,) * 4 + (fold0,)
    (nt, dt, ns, ds, fold), values = jax.lax.scan(loop_body(body, save_dots), carry0, xs)
    weighted = w is not None
    m_t, m_s = softmax_normalise(nt, dt, weighted), softmax_normalise(ns, ds, weighted)
    x_new = gated_mlp(p["node_mlp"], (dx, dy, dy), [(x, None), (m_t, None), (m_s, None)],
                      kind, eps) + p["node_res"] * x
    return x_new, _fold(values, fold, y_index, rows) + p["edge_res"] * y


def chunked_refinement(p: dict, node, edge, pieces: Sequence[Piece], in_dims, radial,
                       envelope_index, tgt, y_index, kind: str, eps: float,
                       smoothed_delta: bool, chunk: int, save_dots: bool = False):
    """Refinement (same arguments and parameters p) over chunks of ``chunk`` rows.

    node [Nv, Dv]; edge [Ny, Dy] per row, or per bond with y_index [R]; pieces: the gated
    MLP's inputs; radial [U, K]; envelope_index: [R] bond indices; tgt [R].
    Returns (node_new, edge_new).
    """
    nv, (ny, dy), rows = node.shape[0], edge.shape, tgt.shape[0]
    pm = p["message_mlp"]
    columns = {"tgt": (tgt, nv - 1), "yi": (y_index, ny - 1)}
    acc = _pieces(pm, in_dims, pieces, columns)
    envelope = radial @ p["envelope"]["kernel"]
    for k, index in enumerate(envelope_index):
        columns[f"e{k}"] = (index, envelope.shape[0] - 1)
    xs = to_chunks(columns, rows, chunk)

    def body(carry, c):
        n, fold = carry
        f = gated_output(pm, acc(c), kind, eps)
        s = envelope[c["e0"]]
        for k in range(1, len(envelope_index)):
            s = s * envelope[c[f"e{k}"]]
        smoothed = f * s
        delta = apply_ffn(p["edge_ffn"], smoothed if smoothed_delta else f)
        carry = (n.at[c["tgt"]].add(smoothed),
                 None if fold is None else fold.at[c["yi"]].add(delta))
        return carry, (delta if y_index is None else None)

    fold0 = None if y_index is None else jnp.zeros((ny, dy), edge.dtype)
    (n, fold), deltas = jax.lax.scan(loop_body(body, save_dots),
                                     (jnp.zeros((nv, dy), node.dtype), fold0), xs)
    node_new = apply_ffn(p["node_ffn"], n) + p["node_res"] * node
    return node_new, _fold(deltas, fold, y_index, rows) + p["edge_res"] * edge
