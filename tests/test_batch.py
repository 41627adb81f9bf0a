"""Padded batches, budgets and the greedy packer (padding rules of graph/types.py)."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from matris.data import Frame
from matris.graph import (
    FINE_BUCKETS_FROM,
    Budgets,
    bucket,
    budgets_for,
    build_graph,
    iterate_batches,
    pack,
    training_budgets,
)


@pytest.fixture(scope="module")
def graphs():
    fe = bulk("Fe", "bcc", a=2.87)
    nacl = bulk("NaCl", "rocksalt", a=5.64)
    mol = Atoms("CHHH", positions=[[0, 0, 0], [1.09, 0, 0], [-0.36, 1.03, 0], [-0.36, -0.5, 0.9]])
    lonely = Atoms("ArAr", positions=[[0, 0, 0], [9.0, 0, 0]])
    slab = Atoms("Cu2", positions=[[0, 0, 0], [1.2, 1.3, 1.1]],
                 cell=[[2.6, 0, 0], [0, 2.6, 0], [0, 0, 0]], pbc=[True, True, False])
    return [build_graph(a, 6.0, 4.0, label=f"s{k}")
            for k, a in enumerate([fe, mol, nacl, lonely, slab])]


def fields(g):
    return {"centers": g.centers, "neighbors": g.neighbors, "shifts": g.shifts,
            "edge_bond": g.edge_bond, "bond_edge": g.bond_edge, "angle_center": g.angle_center,
            "angle_bond_t": g.angle_bond_t, "angle_bond_s": g.angle_bond_s,
            "angle_edge_1": g.angle_edge_1, "angle_edge_2": g.angle_edge_2}


def unpack(batch, s):
    """Rows of structure s, offsets removed, as in a StructureGraph."""
    gt = batch.graphs
    off = lambda counts: int(np.sum(counts[:s]))
    n, e, u, a = (np.asarray(c)[s] for c in (gt.n_node, gt.n_edge, batch.n_bond, batch.n_angle))
    oa, oe, ou, ot = off(gt.n_node), off(gt.n_edge), off(batch.n_bond), off(batch.n_angle)
    E, U, T = slice(oe, oe + e), slice(ou, ou + u), slice(ot, ot + a)
    return {"centers": gt.receivers[E] - oa, "neighbors": gt.senders[E] - oa,
            "shifts": gt.edges["shift"][E].astype(int), "edge_bond": gt.edges["bond"][E] - ou,
            "bond_edge": batch.bond_edge[U] - oe, "angle_center": batch.angle_center[T] - oa,
            "angle_bond_t": batch.angle_bond_t[T] - ou, "angle_bond_s": batch.angle_bond_s[T] - ou,
            "angle_edge_1": batch.angle_edge_1[T] - oe, "angle_edge_2": batch.angle_edge_2[T] - oe}


def test_batch_topology_equals_each_structure_alone(graphs):
    batch, _ = pack(graphs, budgets_for(graphs))
    for s, g in enumerate(graphs):
        alone, _ = pack([g], budgets_for([g]))
        for name, ref in fields(g).items():
            assert np.array_equal(unpack(batch, s)[name], ref), (s, name)
            assert np.array_equal(unpack(alone, 0)[name], ref), (s, name)
        atoms = slice(int(np.sum(batch.graphs.n_node[:s])), None)
        assert np.array_equal(batch.numbers[atoms][:g.n_atoms], g.numbers)
        assert np.allclose(batch.cell[s], g.cell)


def test_edge_vectors_from_batch(graphs):
    batch, _ = pack(graphs, budgets_for(graphs), dtype=np.float64)
    pos, cell = batch.positions, batch.cell[batch.node_graph[batch.centers]]
    x = pos[batch.centers] - (pos[batch.neighbors] + np.einsum("ek,ekl->el", batch.shifts, cell))
    ref = np.concatenate([g.edge_vectors() for g in graphs])
    np.testing.assert_allclose(x[batch.edge_mask], ref, atol=1e-12)
    assert np.allclose(np.linalg.norm(x[~batch.edge_mask], axis=1), 1.0)  # padding: never 0


def test_padding_rules(graphs):
    budgets = Budgets(atoms=40, edges=900, bonds=450, angles=6000, graphs=8)
    b, _ = pack(graphs, budgets)
    N, E, U, A, G = budgets
    S = len(graphs)
    real = np.sum([g.sizes for g in graphs], axis=0)
    masks = (b.node_mask, b.edge_mask, b.bond_mask, b.angle_mask)
    for mask, n, B in zip(masks, real, budgets[:4], strict=True):
        assert mask.shape == (B,) and mask.sum() == n and np.all(mask[:n])
    gm = b.graph_mask
    assert gm.shape == (G,) and gm.sum() == S and np.all(gm[:S])
    pa, pe, pu, pt = ~b.node_mask, ~b.edge_mask, ~b.bond_mask, ~b.angle_mask
    assert np.all(b.numbers[pa] == 0) and np.all(b.positions[pa] == 0)
    assert np.all(b.node_graph[pa] == G - 1)
    assert np.all(b.centers[pe] == N - 1) and np.all(b.neighbors[pe] == N - 1)
    assert np.all(b.shifts[pe] == [1, 0, 0]) and np.all(b.edge_bond[pe] == U - 1)
    assert np.all(b.bond_edge[pu] == E - 1)
    assert np.all(b.angle_center[pt] == N - 1)
    assert np.all((b.angle_bond_t[pt] == U - 1) & (b.angle_bond_s[pt] == U - 1))
    assert np.all((b.angle_edge_1[pt] == E - 1) & (b.angle_edge_2[pt] == E - 1))
    assert np.allclose(b.cell[S:], np.eye(3))
    for counts, B in ((b.graphs.n_node, N), (b.graphs.n_edge, E), (b.n_bond, U),
                      (b.n_angle, A)):
        assert counts.shape == (G,) and counts.sum() == B
        assert np.all(counts[S:-1] == 0) and counts[-1] == B - counts[:S].sum()
    assert np.array_equal(np.bincount(b.node_graph, minlength=G), b.graphs.n_node)
    for arr in (b.centers, b.neighbors, b.edge_bond, b.angle_center, b.node_graph):
        assert arr.dtype == np.int32
    assert b.positions.dtype == np.float32 and b.cell.dtype == np.float32


def test_batch_is_a_jax_pytree(graphs):
    jax = pytest.importorskip("jax")
    b, _ = pack(graphs[:2], budgets_for(graphs[:2]))
    jb = jax.tree_util.tree_map(jax.numpy.asarray, b)
    assert jb.graphs.n_node.shape == b.graphs.n_node.shape
    assert len(jax.tree_util.tree_leaves(jb)) == len(jax.tree_util.tree_leaves(b))


def test_budget_errors(graphs):
    exact = Budgets(*(np.sum([g.sizes for g in graphs], axis=0)), len(graphs) + 1)
    with pytest.raises(ValueError, match="exceed the real count"):
        pack(graphs, exact)  # atoms budget equals the real count: no padding atom
    with pytest.raises(ValueError, match="graph budget"):
        pack(graphs, budgets_for(graphs)._replace(graphs=len(graphs)))
    small = Budgets(atoms=5, edges=80, bonds=40, angles=400, graphs=4)
    with pytest.raises(ValueError, match=r"s2 does not fit.*'angles': 612"):
        list(iterate_batches(graphs, small))


def test_packer_covers_everything_and_fits(graphs):
    many = graphs * 7
    budgets = Budgets(atoms=12, edges=700, bonds=350, angles=4000, graphs=4)
    for rng in (None, np.random.default_rng(1)):
        batches = list(iterate_batches(many, budgets, shuffle_rng=rng))
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(len(many)))
        for idx in batches:
            pack([many[i] for i in idx], budgets)  # raises if it does not fit
        # greedy: the next batch's first structure did not fit into the previous batch
        sizes = np.array([g.sizes for g in many])
        cap = np.array(budgets[:4]) - 1
        for prev, nxt in zip(batches, batches[1:], strict=False):
            grown = sizes[prev].sum(axis=0) + sizes[nxt[0]]
            assert np.any(grown > cap) or len(prev) + 1 > budgets.graphs - 1
    shuffled = [list(iterate_batches(many, budgets, np.random.default_rng(5))) for _ in range(2)]
    assert shuffled[0] == shuffled[1]


def test_packer_lookahead_fills_batches():
    """First fit over a window: every structure exactly once, each batch fits, batches are
    fuller (fewer of them than without the window), each keeps the shuffled order, and the
    window changes nothing at 0."""
    rng = np.random.default_rng(3)
    sizes = np.stack([rng.integers(1, 30, 300)] + [rng.integers(1, 400, 300)] * 2
                     + [rng.integers(1, 2000, 300)], axis=1)
    budgets = Budgets(atoms=100, edges=1500, bonds=1500, angles=6000, graphs=9)
    cap = np.array(budgets[:4]) - 1
    plain = list(iterate_batches(sizes, budgets, np.random.default_rng(0)))
    order = [i for b in plain for i in b]
    for window in (1, 8, 64):
        packed = list(iterate_batches(sizes, budgets, np.random.default_rng(0), lookahead=window))
        assert sorted(i for b in packed for i in b) == list(range(len(sizes)))
        assert all(np.all(sizes[b].sum(axis=0) <= cap) and len(b) < budgets.graphs for b in packed)
        assert len(packed) < len(plain)
        # within a batch the shuffled order is kept
        rank = {s: k for k, s in enumerate(order)}
        for b in packed:
            assert [rank[i] for i in b] == sorted(rank[i] for i in b)
    assert list(iterate_batches(sizes, budgets, np.random.default_rng(0), lookahead=0)) == plain


def test_bucket():
    for n in range(1, 12000):
        b = bucket(n)
        coarse = n <= FINE_BUCKETS_FROM
        assert n <= b <= max(7, (1.25 if coarse else 1.0625) * n)
        bits = 3 if coarse else 5
        k = max(b.bit_length() - bits, 0)
        assert b % (1 << k) == 0 and (n <= 7 or (1 << (bits - 1)) <= b >> k < (1 << bits))
        assert bucket(b) == b and bucket(n + 1) >= b  # stable and monotonic
    assert [bucket(n) for n in (8, 9, 11, 17, 33, 100)] == [8, 10, 12, 20, 40, 112]
    assert [bucket(n) for n in (4097, 8193, 23297)] == [4352, 8704, 23552]


def test_budgets_for_and_minimum(graphs):
    b = budgets_for(graphs)
    real = np.sum([g.sizes for g in graphs], axis=0)
    assert all(x >= r + 1 for x, r in zip(b, real, strict=False)) and b.graphs >= len(graphs) + 1
    bigger = budgets_for(graphs[:1], minimum=b)
    assert tuple(bigger) == tuple(b)


def test_training_budgets():
    class Stats:
        atoms_mean, atoms_max, edges_mean, edges_max = 10.0, 40, 500.0, 2000
        bonds_mean, bonds_max, angles_mean, angles_max = 250.0, 1000, 3000.0, 20000

    b = training_budgets(Stats, batch_size=4)
    assert b.graphs == 5 and b.atoms == 48 and b.edges == 2008 and b.angles == 20008
    assert all(x % 8 == 0 for x in b[:4])


def test_targets_alignment(graphs):
    rng = np.random.default_rng(0)
    frames = []
    for k, g in enumerate(graphs):
        frames.append(Frame(atoms=None, energy=float(k) if k != 1 else None,
                            forces=rng.normal(size=(g.n_atoms, 3)),
                            stress=rng.normal(size=(3, 3)) if k % 2 == 0 else None,
                            magmoms=rng.normal(size=g.n_atoms) if k == 2 else None))
    budgets = budgets_for(graphs)
    batch, t = pack(graphs, budgets, frames)
    assert np.array_equal(t.has_energy[:5], [True, False, True, True, True])
    assert np.array_equal(t.has_stress[:5], [True, False, True, False, True])
    assert np.array_equal(t.has_magmoms[:5], [False, False, True, False, False])
    assert not np.any(t.has_forces[5:]) and np.all(t.energy[5:] == 0)
    rows = np.split(np.arange(batch.node_mask.sum()), np.cumsum([g.n_atoms for g in graphs])[:-1])
    for f, r in zip(frames, rows, strict=False):
        np.testing.assert_allclose(t.forces[r], f.forces, rtol=1e-6)
    assert np.all(t.forces[~batch.node_mask] == 0) and t.forces.shape == (budgets.atoms, 3)
    np.testing.assert_allclose(t.stress[2], frames[2].stress, rtol=1e-6)
    bad = frames[:1] + [Frame(atoms=None, forces=np.zeros((3, 3)))] + frames[2:]
    with pytest.raises(ValueError, match="s1: forces has shape"):
        pack(graphs, budgets, bad)
