"""Host-side batching: StructureGraphs -> padded GraphBatch / Targets, budgets, packer.

Padding follows the rules in `types.py` (one padding atom/edge/bond/angle/graph at least; the
last graph owns all padding rows; padding rows point only at padding rows).  Arrays are numpy;
conversion to jax arrays happens at the jit boundary.

jraph 0.0.6 under jax >= 0.6: `jax.tree_map` / `jax.tree_leaves` were removed, which breaks
`jraph.zero_out_padding`, `jraph.with_zero_out_padding_outputs` and
`jraph.get_fully_connected_graph` (AttributeError when called; checked with jax 0.10.2).
`jraph.batch`, `jraph.pad_with_graphs`, `jraph.dynamically_batch`, the masks and segment ops
still run (they use jax.tree_util), but they know nothing of bonds and angles,
`dynamically_batch` may fill the edge budget completely (no padding edge) and `pad_with_graphs`
gives the padding rows to the *first* padding graph, not the last.  So only the
`jraph.GraphsTuple` container is used here, and no shim is needed.
"""

from __future__ import annotations

import collections
from typing import Iterator, Sequence

import jraph
import numpy as np

from .types import Budgets, GraphBatch, Targets

LEVELS = ("atoms", "edges", "bonds", "angles")


FINE_BUCKETS_FROM = 4096


def bucket(n: int) -> int:
    """Smallest value >= n of the form m * 2^k: m in 4..7 up to FINE_BUCKETS_FROM (at most 25 %
    above n; small shapes are cheap and compiled shapes are shared more often), m in 16..31
    above it (at most 6.25 % above n: padded rows cost as much as real ones, and at 128 atoms
    of bcc Fe-Cr steps of 25 % padded the 8,192 edges to 10,240).  Slowly varying sizes (MD,
    relaxation) reuse compiled shapes: the calculator adds its headroom before bucketing.
    """
    n = int(n)
    if n <= 7:
        return max(n, 1)
    bits = 3 if n <= FINE_BUCKETS_FROM else 5
    k = max(n.bit_length() - bits, 0)
    m = -(-n // (1 << k))  # ceil(n / 2^k)
    return m << k


def graph_sizes(graphs) -> np.ndarray:
    """[S,4] int64 (atoms, edges, bonds, angles) per structure; an [S,4] array passes through."""
    if isinstance(graphs, np.ndarray):
        return graphs.astype(np.int64).reshape(-1, 4)
    return np.array([g.sizes for g in graphs], np.int64).reshape(-1, 4)


def budgets_for(graphs, minimum: Budgets | None = None, n_graphs: int | None = None) -> Budgets:
    """Inference budgets for packing all `graphs` in one batch, each level rounded by `bucket`.

    minimum: budgets never to go below (pass the previous step's to keep compiled shapes);
    n_graphs: number of structures to make room for (default len(graphs)).
    """
    total = graph_sizes(graphs).sum(axis=0)
    n_graphs = len(graph_sizes(graphs)) if n_graphs is None else n_graphs
    sizes = [bucket(int(x) + 1) for x in total] + [bucket(n_graphs + 1)]
    if minimum is not None:
        sizes = [max(a, int(b)) for a, b in zip(sizes, minimum, strict=True)]
    return Budgets(*sizes)


def training_budgets(stats, batch_size: int, headroom: float = 1.0, multiple: int = 8,
                     max_graphs: int | None = None) -> Budgets:
    """Fixed budgets for a training run from dataset statistics.

    stats: object with `<level>_mean` and `<level>_max` for level in atoms, edges, bonds, angles
    (e.g. `matris.data.dataset.DatasetStats`).  Each level gets
    max(ceil(batch_size * mean * headroom), max) + 1, rounded up to a multiple of `multiple`;
    the graph budget is (max_graphs or batch_size) + 1.  The greedy packer then holds about
    batch_size average structures per batch, and every structure fits alone.
    """
    sizes = []
    for level in LEVELS:
        mean, largest = float(getattr(stats, f"{level}_mean")), int(getattr(stats, f"{level}_max"))
        need = max(int(np.ceil(batch_size * mean * headroom)), largest) + 1
        sizes.append(-(-need // multiple) * multiple)
    return Budgets(*sizes, (max_graphs or batch_size) + 1)


def _capacity(budgets: Budgets) -> np.ndarray:
    """[4] real rows allowed per level (budget - 1)."""
    return np.array([budgets.atoms, budgets.edges, budgets.bonds, budgets.angles]) - 1


def check_fits(sizes: np.ndarray, budgets: Budgets, labels: Sequence[str] | None = None) -> None:
    """Raise ValueError naming the first structure of [S,4] sizes too large for `budgets`."""
    over = np.any(sizes > _capacity(budgets), axis=1)
    if np.any(over):
        s = int(np.argmax(over))
        name = (labels[s] if labels is not None and labels[s] else f"structure {s}")
        have = dict(zip(LEVELS, sizes[s].tolist(), strict=True))
        raise ValueError(f"{name} does not fit the batch budgets: sizes {have}, budgets "
                         f"{budgets._asdict()} (each budget must exceed the real count by >= 1)")


def iterate_batches(graphs, budgets: Budgets, shuffle_rng: np.random.Generator | None = None,
                    lookahead: int = 0) -> Iterator[list[int]]:
    """Greedily pack structures (in order, or shuffled by `shuffle_rng`) into batches that fit.

    graphs: StructureGraphs or an [S,4] sizes array.  Yields lists of structure indices.
    lookahead = 0: a new batch starts when the next structure would overflow any level or the
    graph budget (order kept).  lookahead = W > 0: a structure that does not fit is set aside
    and the next ones are tried, until W have been set aside; those open the next batch, in
    their order (first fit over a window: fuller batches, fewer padded rows, each structure
    still exactly once).  Raises ValueError before yielding anything if one structure can
    never fit.
    """
    sizes = graph_sizes(graphs)
    labels = None if isinstance(graphs, np.ndarray) else [getattr(g, "label", "") for g in graphs]
    check_fits(sizes, budgets, labels)
    if budgets.graphs < 2:
        raise ValueError(f"graph budget {budgets.graphs} leaves no room for a padding graph")
    order = np.arange(len(sizes)) if shuffle_rng is None else shuffle_rng.permutation(len(sizes))
    cap, max_graphs = _capacity(budgets), budgets.graphs - 1
    queue = collections.deque(order.tolist())
    while queue:
        batch, used, aside = [], np.zeros(4, np.int64), []
        while queue and len(batch) < max_graphs:
            s = queue.popleft()
            if batch and np.any(used + sizes[s] > cap):
                aside.append(s)
                if len(aside) > lookahead:
                    break
                continue
            batch.append(s)
            used += sizes[s]
        queue.extendleft(reversed(aside))
        yield batch


def _offsets(counts: np.ndarray) -> np.ndarray:
    """Exclusive cumulative sum [S]."""
    return np.cumsum(counts) - counts


def _pad(x: np.ndarray, size: int, fill) -> np.ndarray:
    """Append rows equal to `fill` up to `size` rows."""
    extra = np.broadcast_to(np.asarray(fill, x.dtype), (size - len(x),) + x.shape[1:])
    return np.concatenate([x, extra])


def _cat(graphs, name: str, offsets=None, counts=None) -> np.ndarray:
    """Concatenate attribute `name` over graphs, adding per-graph offsets [S] if given."""
    arrays = [getattr(g, name) for g in graphs]
    out = np.concatenate(arrays) if arrays else np.zeros(0)
    if offsets is not None:
        out = out.astype(np.int64) + np.repeat(offsets, counts)
    return out


def angle_mode(graphs, symmetric_angles: bool | None = None) -> bool:
    """Whether the angle rows of ``graphs`` are unordered pairs (all must agree, and agree with
    ``symmetric_angles`` when given); ``symmetric_angles`` (default False) when there are no
    graphs.  Raises ValueError naming the first graph of the other kind."""
    want = symmetric_angles
    for s, g in enumerate(graphs):
        mine = bool(g.symmetric_angles)
        if want is None:
            want = mine
        elif mine != want:
            kind = "unordered" if mine else "ordered"
            raise ValueError(f"{g.label or f'structure {s}'} has {kind} angle rows, the batch "
                             f"needs {'unordered' if want else 'ordered'} ones: build every "
                             "graph with the same symmetric_angles (matris.graph.graph_for)")
    return bool(want)


def pack(graphs, budgets: Budgets, targets=None, dtype=np.float32,
         symmetric_angles: bool | None = None):
    """Concatenate and pad StructureGraphs into a GraphBatch (+ Targets if targets given).

    graphs: S StructureGraphs; targets: S objects with energy, forces, stress, magmoms
    (each None or array-like, e.g. `matris.data.Frame`) or None.  Floats are cast to `dtype`,
    indices to int32.  symmetric_angles: the angle-row kind the batch must have (`angle_mode`;
    None = the graphs'; it sets the kind of an all-padding batch).  Raises ValueError if the
    graphs do not fit the budgets or mix ordered and unordered angle rows.
    """
    symmetric = angle_mode(graphs, symmetric_angles)
    sizes = graph_sizes(graphs)
    check_fits(sizes.sum(axis=0, keepdims=True), budgets, ["batch of %d structures" % len(sizes)])
    if len(sizes) > budgets.graphs - 1:
        raise ValueError(f"{len(sizes)} structures need a graph budget > {len(sizes)}, "
                         f"got {budgets.graphs}")
    n_a, n_e, n_u, n_t = (sizes[:, k] for k in range(4))
    off_a, off_e, off_u = _offsets(n_a), _offsets(n_e), _offsets(n_u)
    N, E, U, A, G = budgets
    pad_atom, pad_edge, pad_bond = N - 1, E - 1, U - 1
    i32 = lambda x: x.astype(np.int32)
    rows = {
        "center": (_cat(graphs, "angle_center", off_a, n_t), pad_atom),
        "bond_t": (_cat(graphs, "angle_bond_t", off_u, n_t), pad_bond),
        "bond_s": (_cat(graphs, "angle_bond_s", off_u, n_t), pad_bond),
        "edge_1": (_cat(graphs, "angle_edge_1", off_e, n_t), pad_edge),
        "edge_2": (_cat(graphs, "angle_edge_2", off_e, n_t), pad_edge),
    }
    angles = {k: i32(_pad(v.reshape(-1), A, fill)) for k, (v, fill) in rows.items()}
    cells = np.concatenate([np.asarray([g.cell for g in graphs]).reshape(-1, 3, 3),
                            np.broadcast_to(np.eye(3), (G - len(sizes), 3, 3))])
    counts = lambda c, B: i32(np.concatenate([c, np.zeros(G - len(c) - 1), [B - c.sum()]]))
    shifts = _pad(_cat(graphs, "shifts").reshape(-1, 3).astype(dtype), E, [1.0, 0.0, 0.0])
    gt = jraph.GraphsTuple(
        nodes={"positions": _pad(_cat(graphs, "positions").reshape(-1, 3).astype(dtype), N, 0.0),
               "numbers": i32(_pad(_cat(graphs, "numbers").reshape(-1), N, 0))},
        edges={"shift": shifts,
               "bond": i32(_pad(_cat(graphs, "edge_bond", off_u, n_e).reshape(-1), E, pad_bond))},
        receivers=i32(_pad(_cat(graphs, "centers", off_a, n_e).reshape(-1), E, pad_atom)),
        senders=i32(_pad(_cat(graphs, "neighbors", off_a, n_e).reshape(-1), E, pad_atom)),
        globals={"cell": cells.astype(dtype)},
        n_node=counts(n_a, N), n_edge=counts(n_e, E))
    mask = lambda real, B: np.arange(B) < real
    batch = GraphBatch(
        graphs=gt,
        node_graph=i32(_pad(np.repeat(np.arange(len(sizes)), n_a), N, G - 1)),
        bond_edge=i32(_pad(_cat(graphs, "bond_edge", off_e, n_u).reshape(-1), U, pad_edge)),
        angle_center=angles["center"], angle_bond_t=angles["bond_t"],
        angle_bond_s=angles["bond_s"], angle_edge_1=angles["edge_1"],
        angle_edge_2=angles["edge_2"], n_bond=counts(n_u, U), n_angle=counts(n_t, A),
        node_mask=mask(n_a.sum(), N), edge_mask=mask(n_e.sum(), E), bond_mask=mask(n_u.sum(), U),
        angle_mask=mask(n_t.sum(), A), graph_mask=mask(len(sizes), G),
        symmetric_angles=symmetric)
    return batch, (None if targets is None else pack_targets(graphs, budgets, targets, dtype))


def _label_array(value, shape, name: str, label: str, dtype):
    """Array of `shape` from a label value (None -> zeros, False), checking shape/finiteness."""
    if value is None:
        return np.zeros(shape, dtype), False
    arr = np.asarray(value, np.float64)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{label or 'structure'}: {name} has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{label or 'structure'}: non-finite {name}")
    return arr.reshape(shape).astype(dtype), True


def pack_targets(graphs, budgets: Budgets, targets, dtype=np.float32) -> Targets:
    """Padded Targets aligned with `pack(graphs, budgets)`; zeros where absent or padded."""
    if len(targets) != len(graphs):
        raise ValueError(f"{len(targets)} targets for {len(graphs)} graphs")
    N, G = budgets.atoms, budgets.graphs
    out = {k: [] for k in ("energy", "forces", "stress", "magmoms")}
    has = {k: np.zeros(G, bool) for k in out}
    for s, (g, t) in enumerate(zip(graphs, targets, strict=True)):
        n = g.n_atoms
        shapes = {"energy": (), "forces": (n, 3), "stress": (3, 3), "magmoms": (n,)}
        for k, shape in shapes.items():
            arr, has[k][s] = _label_array(getattr(t, k, None), shape, k, g.label, dtype)
            out[k].append(arr)
    n_pad = G - len(graphs)
    energy = np.concatenate([np.asarray(out["energy"], dtype).reshape(-1), np.zeros(n_pad, dtype)])
    stress = np.concatenate([np.asarray(out["stress"], dtype).reshape(-1, 3, 3),
                             np.zeros((n_pad, 3, 3), dtype)])
    forces = _pad(np.concatenate(out["forces"] or [np.zeros((0, 3), dtype)]), N, 0.0)
    magmoms = _pad(np.concatenate(out["magmoms"] or [np.zeros(0, dtype)]), N, 0.0)
    return Targets(energy=energy, forces=forces, stress=stress, magmoms=magmoms,
                   has_energy=has["energy"], has_forces=has["forces"],
                   has_stress=has["stress"], has_magmoms=has["magmoms"])
