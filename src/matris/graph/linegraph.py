"""Undirected bonds (d2u / u2d) and the line graph of angles (design spec 1.1-1.2).

Angle rule: for a centre c, every ordered pair of distinct directed edges (e1, e2) with centre
c, d(e1) <= r3 and d(e2) < r3.  Unordered (symmetric) rows: each pair once, e1 < e2, both
d < r3 (a row with a bond at exactly r3 has weight zero in a smooth model).  Two images of
one bond, (i, i, +n) and (i, i, -n), are distinct directed edges and form a 180 degree angle
whose two ends are the same undirected bond.
"""

from __future__ import annotations

import numpy as np


def _lexsort_rows(keys: np.ndarray) -> np.ndarray:
    """Order sorting the rows of [e,k] int keys lexicographically (column 0 most significant)."""
    return np.lexsort(keys.T[::-1])


def pair_reverse_edges(centers, neighbors, shifts, label: str = ""):
    """Pair each directed edge (i, j, n) with its reverse (j, i, -n) by exact key.

    centers, neighbors [e] int, shifts [e,3] int; keys must be unique.
    Returns edge_bond [e] int32 (d2u) and bond_edge [u] int32 (u2d = the smaller directed
    index of each pair, bonds numbered in order of that index).  Raises ValueError naming the
    first edge whose reverse is missing.
    """
    n_edges = len(centers)
    if n_edges == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    shifts = np.asarray(shifts, np.int64)
    forward = np.column_stack([centers, neighbors, shifts]).astype(np.int64)
    reverse = np.column_stack([neighbors, centers, -shifts]).astype(np.int64)
    fwd_order = _lexsort_rows(forward)
    rev_order = _lexsort_rows(reverse)
    mismatch = np.any(forward[fwd_order] != reverse[rev_order], axis=1)
    if np.any(mismatch):
        e = rev_order[np.argmax(mismatch)]
        raise ValueError(f"{label or 'structure'}: edge {e} (centre {centers[e]}, neighbour "
                         f"{neighbors[e]}, image {shifts[e].tolist()}) has no reverse edge")
    rev = np.empty(n_edges, np.int64)
    rev[rev_order] = fwd_order  # reverse key of edge rev_order[m] is the key of fwd_order[m]
    edges = np.arange(n_edges)
    if np.any(rev == edges):
        e = int(np.argmax(rev == edges))
        raise ValueError(f"{label or 'structure'}: edge {e} is its own reverse (zero image?)")
    bond_edge = np.nonzero(edges < rev)[0]
    bond_of = np.empty(n_edges, np.int64)
    bond_of[bond_edge] = np.arange(len(bond_edge))
    edge_bond = bond_of[np.minimum(edges, rev)]
    return edge_bond.astype(np.int32), bond_edge.astype(np.int32)


def _group_members(group_of_item, n_groups):
    """For items sorted by group: counts [g] and start offsets [g] of each group."""
    counts = np.bincount(group_of_item, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    return counts, starts


def angle_pairs(centers, lengths, n_atoms: int, three_body_cutoff: float,
                unordered: bool = False):
    """Ordered pairs (e1, e2) of distinct edges sharing a centre, d(e1) <= r3, d(e2) < r3;
    unordered: e1 < e2 and both d < r3.

    centers [e] int sorted ascending, lengths [e] float64.
    Returns edge_1, edge_2 [a] int64, sorted by (centre, e1, e2).
    """
    centers = np.asarray(centers, np.int64)
    if len(centers) > 1 and np.any(np.diff(centers) < 0):
        raise ValueError("angle_pairs needs edges sorted by centre")
    second = np.nonzero(lengths < three_body_cutoff)[0]
    first = second if unordered else np.nonzero(lengths <= three_body_cutoff)[0]
    k2, start2 = _group_members(centers[second], n_atoms)
    reps = k2[centers[first]]
    total = int(reps.sum())
    edge_1 = np.repeat(first, reps)
    within = np.arange(total) - np.repeat(np.cumsum(reps) - reps, reps)
    edge_2 = second[np.repeat(start2[centers[first]], reps) + within]
    keep = edge_1 < edge_2 if unordered else edge_1 != edge_2
    return edge_1[keep], edge_2[keep]


def angle_rows(centers, lengths, edge_bond, n_atoms: int, three_body_cutoff: float,
               unordered: bool = False) -> dict:
    """Angle rows as int32 arrays [a]: angle_center, angle_bond_t (bond of e1, the '<=' edge),
    angle_bond_s (bond of e2), angle_edge_1, angle_edge_2 (`angle_pairs`)."""
    e1, e2 = angle_pairs(centers, lengths, n_atoms, three_body_cutoff, unordered)
    centers = np.asarray(centers)
    return {
        "angle_center": centers[e1].astype(np.int32),
        "angle_bond_t": np.asarray(edge_bond)[e1].astype(np.int32),
        "angle_bond_s": np.asarray(edge_bond)[e2].astype(np.int32),
        "angle_edge_1": e1.astype(np.int32),
        "angle_edge_2": e2.astype(np.int32),
    }


def angle_cosines(vectors, edge_1, edge_2) -> np.ndarray:
    """[a] float64 cos(theta) = x^_e1 . x^_e2 from edge vectors [e,3]."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", unit[edge_1], unit[edge_2])
