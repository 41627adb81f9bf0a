"""Atom graph, bonds and line graph against brute-force references (design spec 1.1-1.2)."""

import itertools

import numpy as np
import pytest
from ase import Atoms

from matris.graph import angle_cosines, build_graph, model_cell, pair_reverse_edges

RC, R3 = 6.0, 4.0


def brute_edges(atoms, cutoff=RC):
    """Set of (i, j, n0, n1, n2) with 0 < |r_i - (r_j + n @ cell)| <= cutoff, by image loop."""
    pos = atoms.positions
    cell = model_cell(atoms.cell.array, atoms.pbc, pos, cutoff)
    frac = pos @ np.linalg.inv(cell)
    diff = frac[:, None, :] - frac[None, :, :]
    reach = cutoff * np.linalg.norm(np.linalg.inv(cell), axis=0)  # max |fractional| per axis
    ranges = []
    for k in range(3):
        if atoms.pbc[k]:
            lo = int(np.floor(diff[..., k].min() - reach[k])) - 1
            hi = int(np.ceil(diff[..., k].max() + reach[k])) + 1
            ranges.append(range(lo, hi + 1))
        else:
            ranges.append([0])
    found = set()
    for n in itertools.product(*ranges):
        d = np.linalg.norm(pos[:, None, :] - (pos[None, :, :] + np.array(n) @ cell), axis=-1)
        for i, j in zip(*np.nonzero((d > 0) & (d <= cutoff)), strict=False):
            found.add((int(i), int(j)) + tuple(n))
    return found


def edge_set(g):
    return {(int(i), int(j)) + tuple(int(x) for x in s)
            for i, j, s in zip(g.centers, g.neighbors, g.shifts, strict=False)}


def brute_angles(g, r3=R3):
    """Set of (e1, e2): same centre, e1 != e2, d1 <= r3, d2 < r3, by explicit double loop."""
    d = np.linalg.norm(g.edge_vectors(), axis=1)
    out = set()
    for e1 in range(g.n_edges):
        for e2 in np.nonzero(g.centers == g.centers[e1])[0]:
            if e1 != e2 and d[e1] <= r3 and d[e2] < r3:
                out.add((e1, int(e2)))
    return out


def tiny_cell():
    return Atoms("Fe", positions=[[0.3, 0.2, 0.1]],
                 cell=[[2.1, 0.0, 0.0], [0.4, 1.9, 0.0], [0.3, 0.2, 2.3]], pbc=True)


def triclinic():
    rng = np.random.default_rng(3)
    cell = np.array([[4.2, 0.0, 0.0], [1.3, 3.9, 0.0], [0.9, -0.7, 4.4]])
    frac = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.1], [0.25, 0.7, 0.6], [0.8, 0.2, 0.45]])
    pos = (frac + rng.integers(-2, 3, frac.shape)) @ cell  # unwrapped on purpose
    return Atoms("FeCoNiO", positions=pos, cell=cell, pbc=True)


def molecule():
    pos = [[0, 0, 0], [1.09, 0, 0], [-0.36, 1.03, 0], [-0.36, -0.51, 0.89], [5.0, 5.0, 5.0],
           [-0.36, -0.51, -0.89]]
    return Atoms("CHHHNH", positions=pos)


def slab_zero_vector():
    pos = [[0.0, 0.0, 0.0], [1.4, 1.2, 1.1], [0.7, 2.0, -1.3]]
    return Atoms("CuCuAu", positions=pos, cell=[[2.9, 0, 0], [0.0, 0.0, 0.0], [0.3, 0, 3.1]],
                 pbc=[True, False, True])


CASES = {"tiny_cell": tiny_cell, "triclinic": triclinic, "molecule": molecule,
         "mixed_pbc": slab_zero_vector}


@pytest.mark.parametrize("name", CASES)
def test_edges_match_brute_force(name):
    atoms = CASES[name]()
    g = build_graph(atoms, RC, R3)
    ref = brute_edges(atoms)
    assert edge_set(g) == ref and g.n_edges == len(ref)
    keys = np.column_stack([g.centers, g.neighbors, g.shifts])
    assert np.all(np.lexsort(keys.T[::-1]) == np.arange(g.n_edges)), "edges not sorted"
    d = np.linalg.norm(g.edge_vectors(), axis=1)
    assert np.all((d > 0) & (d <= RC))
    if name == "tiny_cell":
        assert g.n_edges > 50 and np.all(g.centers == 0) and np.all(g.neighbors == 0)
    if name == "mixed_pbc":
        assert np.all(g.shifts[:, 1] == 0) and np.any(g.shifts[:, 0] != 0)


@pytest.mark.parametrize("name", CASES)
def test_reverse_pairs_and_bond_maps(name):
    g = build_graph(CASES[name](), RC, R3)
    rows = list(zip(g.centers, g.neighbors, map(tuple, g.shifts), strict=True))
    key = {k: e for e, k in enumerate(rows)}
    rev = np.array([key[(j, i, tuple(-np.array(s)))] for i, j, s in rows])
    edges = np.arange(g.n_edges)
    assert np.all(rev != edges) and g.n_bonds * 2 == g.n_edges
    assert np.all(g.edge_bond == g.edge_bond[rev])  # both directions share a bond
    assert np.all(g.bond_edge[g.edge_bond] == np.minimum(edges, rev))  # u2d = smaller index
    assert np.all(g.edge_bond[g.bond_edge] == np.arange(g.n_bonds))


@pytest.mark.parametrize("name", CASES)
def test_angles_match_brute_force(name):
    g = build_graph(CASES[name](), RC, R3)
    ref = brute_angles(g)
    got = set(zip(g.angle_edge_1.tolist(), g.angle_edge_2.tolist(), strict=False))
    assert got == ref and g.n_angles == len(ref)
    assert np.all(g.angle_center == g.centers[g.angle_edge_1])
    assert np.all(g.angle_center == g.centers[g.angle_edge_2])
    assert np.all(g.angle_bond_t == g.edge_bond[g.angle_edge_1])
    assert np.all(g.angle_bond_s == g.edge_bond[g.angle_edge_2])
    d = np.linalg.norm(g.edge_vectors(), axis=1)
    k3 = np.bincount(g.centers[d < R3], minlength=g.n_atoms)
    assert np.array_equal(g.angles_per_atom, k3 * (k3 - 1))  # no ties in these cases


def test_tie_at_three_body_cutoff_and_cutoff():
    """A-B 4.0 A (= r3), B-C 2.0 A, A-C 6.0 A (= rc): only (B<-A, B<-C) is an angle."""
    g = build_graph(Atoms("OFeO", positions=[[0, 0, 0], [4.0, 0, 0], [6.0, 0, 0]]), RC, R3)
    assert g.n_edges == 6  # the 6.0 A pair is kept (d <= rc)
    assert g.n_angles == 1
    e1, e2 = g.angle_edge_1[0], g.angle_edge_2[0]
    assert (g.centers[e1], g.neighbors[e1], g.neighbors[e2]) == (1, 0, 2)
    assert g.angle_bond_t[0] == g.edge_bond[e1] != g.angle_bond_s[0]


def test_simple_cubic_self_images_at_r3():
    """One atom at the origin (exact float64 lengths), a = 4.0: the six images sit exactly at
    r3 -> no angle; at r3 = 4.5 -> 30,
    including 180 degree angles whose two ends are the same undirected bond."""
    atoms = Atoms("Po", positions=[[0.0, 0.0, 0.0]], cell=np.eye(3) * 4.0, pbc=True)
    assert build_graph(atoms, RC, 4.0).n_angles == 0
    g = build_graph(atoms, RC, 4.5)
    assert g.n_edges == 18 and g.n_bonds == 9 and g.n_angles == 30
    cos = angle_cosines(g.edge_vectors(), g.angle_edge_1, g.angle_edge_2)
    straight = np.isclose(cos, -1.0)
    assert straight.sum() == 6 and np.all(g.angle_bond_t[straight] == g.angle_bond_s[straight])


def test_isolated_atom_and_far_molecule():
    g = build_graph(Atoms("ArAr", positions=[[0, 0, 0], [10.0, 0, 0]]), RC, R3)
    assert g.sizes == (2, 0, 0, 0)
    g = build_graph(Atoms("H", positions=[[0, 0, 0]], cell=np.eye(3) * 7.0, pbc=True), RC, R3)
    assert g.sizes == (1, 0, 0, 0)


def test_missing_reverse_is_reported():
    c, n = np.array([0, 1, 1]), np.array([1, 0, 1])
    s = np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match="item:7: edge 2 .*no reverse"):
        pair_reverse_edges(c, n, s, "item:7")


def invariants(g):
    d = np.sort(np.linalg.norm(g.edge_vectors(), axis=1))
    cos = np.sort(angle_cosines(g.edge_vectors(), g.angle_edge_1, g.angle_edge_2))
    return g.sizes, d, cos


def transformed(atoms, how, rng):
    out = atoms.copy()
    if how == "rotate":
        out.rotate(37.0, (1.0, 2.0, -0.5), center="COM", rotate_cell=True)
    elif how == "translate":
        out.positions += rng.normal(size=3) * 5.0
    elif how == "permute":
        out = out[rng.permutation(len(out))]
    elif how == "wrap":
        out.wrap()
    return out


@pytest.mark.parametrize("name", ["triclinic", "molecule", "mixed_pbc"])
@pytest.mark.parametrize("how", ["rotate", "translate", "permute", "wrap"])
def test_invariance(name, how):
    atoms = CASES[name]()
    rng = np.random.default_rng(0)
    sizes, d, cos = invariants(build_graph(atoms, RC, R3))
    sizes2, d2, cos2 = invariants(build_graph(transformed(atoms, how, rng), RC, R3))
    assert sizes == sizes2
    np.testing.assert_allclose(d, d2, atol=1e-9)
    np.testing.assert_allclose(cos, cos2, atol=1e-9)


def test_deterministic_and_label_free_of_input_order():
    atoms = triclinic()
    a, b = build_graph(atoms), build_graph(atoms.copy())
    for name in ("centers", "neighbors", "shifts", "edge_bond", "bond_edge", "angle_edge_1"):
        assert np.array_equal(getattr(a, name), getattr(b, name))


def test_model_cell_placeholders():
    mol = molecule()
    cell = model_cell(mol.cell.array, mol.pbc, mol.positions, RC)
    assert np.linalg.det(cell) > 0 and np.allclose(cell, np.diag(np.diag(cell)))
    slab = slab_zero_vector()
    cell = model_cell(slab.cell.array, slab.pbc, slab.positions, RC)
    assert np.allclose(cell[[0, 2]], slab.cell.array[[0, 2]]) and np.linalg.det(cell) > 0
    assert np.allclose(cell[1] @ cell[0], 0) and np.allclose(cell[1] @ cell[2], 0)
    box = Atoms("H", positions=[[0, 0, 0]], cell=np.eye(3) * 9.0, pbc=False)
    assert np.array_equal(model_cell(box.cell.array, box.pbc, box.positions), np.eye(3) * 9.0)


BAD = {
    "nan position": (Atoms("HH", positions=[[0, 0, 0], [np.nan, 0, 0]]), "non-finite position"),
    "inf cell": (Atoms("H", positions=[[0, 0, 0]], cell=[[np.inf, 0, 0], [0, 3, 0], [0, 0, 3]],
                       pbc=True), "non-finite cell"),
    "too close": (Atoms("HH", positions=[[0, 0, 0], [0.05, 0, 0]]), "closer than 0.1"),
    "on top of each other": (Atoms("FeFe", positions=[[1, 1, 1], [1, 1, 1]], cell=np.eye(3) * 3,
                                   pbc=True), "atoms 0 and 1 .* 0 A apart"),
    "close via image": (Atoms("HH", positions=[[0.02, 1, 1], [4.97, 1, 1]], cell=np.eye(3) * 5,
                              pbc=True), "closer than 0.1"),
    "self image": (Atoms("H", positions=[[0, 0, 0]], cell=np.diag([0.05, 3, 3]), pbc=True),
                   "closer than 0.1"),
    "tiny periodic cell": (Atoms("H", positions=[[0, 0, 0]], cell=np.diag([1e-3, 1e-3, 3]),
                                 pbc=True), "cell too small"),
    "Z=0": (Atoms(numbers=[0, 1], positions=[[0, 0, 0], [1, 0, 0]]), "atomic number 0"),
    "Z=95": (Atoms(numbers=[95], positions=[[0, 0, 0]]), "atomic number 95"),
    "empty": (Atoms(), "empty"),
    "singular cell": (Atoms("H", positions=[[0, 0, 0]], cell=[[3, 0, 0], [6, 0, 0], [0, 0, 3]],
                            pbc=True), "singular"),
    "zero periodic vector": (Atoms("H", positions=[[0, 0, 0]], cell=[[3, 0, 0], [0, 0, 0],
                                                                     [0, 0, 3]],
                                   pbc=[True, True, False]), "singular"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_raises_with_label(case):
    atoms, message = BAD[case]
    with pytest.raises(ValueError, match=f"data/x.extxyz:17: .*{message}"):
        build_graph(atoms, RC, R3, label="data/x.extxyz:17")


def test_pymatgen_input():
    mg = pytest.importorskip("pymatgen.core")
    s = mg.Structure(mg.Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    g = build_graph(s)
    assert g.n_atoms == 2 and g.n_edges == 128 and np.all(g.angles_per_atom == 14 * 13)
