"""Physics and behaviour of the MatRIS model: symmetries, derivatives, batching, padding."""

import jax
import numpy as np
import pytest
from ase import Atoms
from helpers import BUDGET, predict, setup, structures
from scipy.spatial.transform import Rotation

from matris import PRESETS, make_predictor
from matris.graph import Budgets, build_graph, pack


@pytest.fixture(scope="module")
def model():
    return setup("tiny", "float64")


@pytest.fixture(scope="module")
def structs():
    return structures()


@pytest.mark.parametrize(
    "preset,count",
    [("10m", 10_443_505), ("6m", 6 * 1_024_768 + 195_825), ("4m", 4 * 1_024_768 + 195_825)],
)
def test_parameter_count(preset, count):
    from matris.bundle import expected_shapes

    shapes = expected_shapes(PRESETS[preset])
    assert sum(int(np.prod(s)) for s in shapes.values()) == count


def test_rotation_translation_invariance(model, structs):
    cfg, params, fn = model
    rot = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    for name in ["fecr", "triclinic", "molecule"]:
        atoms = structs[name]
        moved = atoms.copy()
        moved.positions = atoms.positions @ rot.T + np.array([0.7, -1.3, 2.1])
        moved.cell = atoms.cell.array @ rot.T
        a, _ = predict(cfg, params, fn, [atoms])
        b, _ = predict(cfg, params, fn, [moved])
        n = len(atoms)
        assert abs(a["energy"][0] - b["energy"][0]) < 1e-9, name
        np.testing.assert_allclose(b["forces"][:n], a["forces"][:n] @ rot.T, atol=1e-9)
        np.testing.assert_allclose(b["magmoms"][:n], a["magmoms"][:n], atol=1e-9)
        if atoms.pbc.all():
            np.testing.assert_allclose(b["stress"][0], rot @ a["stress"][0] @ rot.T, atol=1e-9)


def test_permutation_and_wrapping(model, structs):
    cfg, params, fn = model
    atoms = structs["fecr"]
    perm = np.random.default_rng(0).permutation(len(atoms))
    shuffled = atoms[perm]
    shuffled.positions += atoms.cell.array[0] * 1.0  # move out of the cell; graph must not care
    a, _ = predict(cfg, params, fn, [atoms])
    b, _ = predict(cfg, params, fn, [shuffled])
    n = len(atoms)
    assert abs(a["energy"][0] - b["energy"][0]) < 1e-9
    np.testing.assert_allclose(b["forces"][:n], a["forces"][:n][perm], atol=1e-9)
    np.testing.assert_allclose(b["energies"][:n], a["energies"][:n][perm], atol=1e-9)
    np.testing.assert_allclose(b["stress"][0], a["stress"][0], atol=1e-9)


def _energy(cfg, params, fn, atoms):
    return predict(cfg, params, fn, [atoms])[0]["energy"][0]


@pytest.mark.parametrize("name", ["fecr", "triclinic", "self_image", "molecule"])
def test_forces_match_finite_differences(model, structs, name):
    cfg, params, fn = model
    atoms = structs[name]
    out, _ = predict(cfg, params, fn, [atoms])
    h = 1e-5
    for i, ax in [(0, 0), (len(atoms) - 1, 2)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, ax] += h
        minus.positions[i, ax] -= h
        fd = -(_energy(cfg, params, fn, plus) - _energy(cfg, params, fn, minus)) / (2 * h)
        assert abs(fd - out["forces"][i, ax]) < 1e-6 * max(1.0, abs(fd)), (name, i, ax)
    assert np.abs(out["forces"][: len(atoms)].sum(0)).max() < 1e-10


@pytest.mark.parametrize("name", ["fecr", "triclinic", "self_image"])
def test_stress_matches_finite_strain(model, structs, name):
    cfg, params, fn = model
    atoms = structs[name]
    out, _ = predict(cfg, params, fn, [atoms])
    h, vol = 1e-5, atoms.get_volume()
    for a, b in [(0, 0), (1, 2), (0, 1)]:
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h

        def strained(e):
            new = atoms.copy()
            new.set_cell(atoms.cell.array @ (np.eye(3) + e), scale_atoms=True)
            return new

        de = _energy(cfg, params, fn, strained(eps)) - _energy(cfg, params, fn, strained(-eps))
        fd = de / (2 * h) / vol / (1 if a == b else 2)
        assert abs(fd - out["stress"][0, a, b]) < 1e-6 * max(1.0, abs(fd)), (name, a, b)
    np.testing.assert_allclose(out["stress"][0], out["stress"][0].T, atol=1e-12)


def test_supercell_consistency(model, structs):
    cfg, params, fn = model
    atoms = structs["mgo"]
    big = atoms * (2, 1, 2)
    a, _ = predict(cfg, params, fn, [atoms])
    b, _ = predict(cfg, params, fn, [big])
    n = len(atoms)
    assert abs(a["energy_per_atom"][0] - b["energy_per_atom"][0]) < 1e-9
    np.testing.assert_allclose(b["forces"][: 4 * n], np.tile(a["forces"][:n], (4, 1)), atol=1e-9)
    np.testing.assert_allclose(b["stress"][0], a["stress"][0], atol=1e-9)


def test_batch_equals_single_and_padding_is_inert(model, structs):
    cfg, params, fn = model
    names = ["fecr", "mgo", "triclinic", "molecule"]
    batch_out, batch = predict(cfg, params, fn, [structs[n] for n in names])
    start = 0
    more = Budgets(*(2 * b for b in BUDGET))
    for g, name in enumerate(names):
        n = len(structs[name])
        for budgets in (BUDGET, more):
            single, _ = predict(cfg, params, fn, [structs[name]], budgets)
            assert abs(single["energy"][0] - batch_out["energy"][g]) < 1e-6
            np.testing.assert_allclose(single["forces"][:n], batch_out["forces"][start : start + n],
                                       atol=1e-6)
            np.testing.assert_allclose(single["stress"][0], batch_out["stress"][g], atol=1e-6)
            np.testing.assert_allclose(single["magmoms"][:n], batch_out["magmoms"][start : start + n],
                                       atol=1e-6)
        start += n
    pad_nodes = ~np.asarray(batch.node_mask)
    for key in ("energies", "forces", "magmoms"):
        assert np.all(batch_out[key][pad_nodes] == 0.0), key
    pad_graphs = ~np.asarray(batch.graph_mask)
    assert np.all(batch_out["energy"][pad_graphs] == 0) and np.all(batch_out["stress"][pad_graphs] == 0)


def test_jit_equals_eager_and_float32_default(structs):
    cfg, params, _ = setup("tiny", "float32")
    graph = build_graph(structs["mgo"], cfg.cutoff, cfg.three_body_cutoff)
    batch, _ = pack([graph], BUDGET)
    fn = make_predictor(cfg, "ef")  # eager runs op by op: energy and forces keep it short
    eager = fn(params, batch)
    jitted = jax.jit(fn)(params, batch)
    for key in eager:
        assert jitted[key].dtype == np.float32, key
        np.testing.assert_allclose(np.asarray(jitted[key]), np.asarray(eager[key]), atol=1e-5)


def test_second_derivatives_finite_with_padding(structs):
    """Training differentiates through forces: the parameter gradient must be finite."""
    cfg, params, _ = setup("tiny", "float32")
    graphs = [build_graph(structs[n]) for n in ("self_image", "molecule")]
    batch, _ = pack(graphs, BUDGET)
    fn = make_predictor(cfg, "efs")

    def loss(p):
        out = fn(p, batch)
        return (out["energy"] ** 2).sum() + (out["forces"] ** 2).sum() + (out["stress"] ** 2).sum()

    grads = jax.jit(jax.grad(loss))(params)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert sum(float(np.abs(np.asarray(g)).sum()) for g in leaves) > 0


def test_isolated_atom_and_no_angles(model):
    """An atom with no neighbours gets its reference-plus-readout energy and zero force."""
    cfg, params, fn = model
    lone = Atoms("Fe", positions=[[0, 0, 0]])
    far = Atoms("FeCr", positions=[[0, 0, 0], [0, 0, 5.0]])  # a bond, but no angle (r3 = 4)
    out, _ = predict(cfg, params, fn, [lone, far])
    assert np.all(np.isfinite(out["energy"][:2]))
    np.testing.assert_allclose(out["forces"][0], 0.0, atol=1e-12)
    assert abs(out["forces"][1:3].sum(0)).max() < 1e-10
    assert abs(out["forces"][1, 2]) > 0  # the bond does act


def _dimer_energy(cfg, params, fn, d):
    atoms = Atoms("FeCrNi", positions=[[0, 0, 0], [2.3, 0, 0], [2.3 + d, 0.0, 0.0]])
    out, _ = predict(cfg, params, fn, [atoms])
    return out["energy"][0], out["forces"][2, 0]


@pytest.mark.parametrize("smooth", [True, False])
def test_cutoff_continuity(smooth):
    """Energy and forces across r_c (a third atom leaving) and r_3 (an angle appearing).

    The jump over a 2e-7 A step, minus the change a continuous function makes over that step
    (force * step), must vanish for the smooth option; the faithful model jumps (spec 10.5).
    """
    cfg, params, fn = setup("tiny", "float64", smooth=smooth)
    step = 1e-7
    jumps = []
    for cut in (cfg.cutoff - 2.3, cfg.three_body_cutoff):
        e_in, f_in = _dimer_energy(cfg, params, fn, cut - step)
        e_out, f_out = _dimer_energy(cfg, params, fn, cut + step)
        jumps.append((abs(e_in - e_out) - 2 * step * abs(f_in), abs(f_in - f_out)))
    if smooth:
        for de, df in jumps:
            assert de < 1e-9 and df < 1e-5, jumps
    else:
        assert max(de for de, _ in jumps) > 1e-5, jumps


def test_remat_same_numbers_and_less_memory(model, structs):
    """remat=True (with or without keeping the products) gives the same energies/forces/stress
    and needs less scratch memory for a force call (XLA's memory analysis; an unrolled remat
    would be merged away by CSE); keeping the products sits between the two."""
    cfg, params, fn = model
    atoms = structs["fecr"] * (2, 1, 1)
    graph = build_graph(atoms, cfg.cutoff, cfg.three_body_cutoff)
    batch, _ = pack([graph], BUDGET, dtype=np.float64)
    remat_fn = jax.jit(make_predictor(cfg.replace(remat=True), "efsm"))
    ref, got = fn(params, batch), remat_fn(params, batch)
    for key in ("energy", "forces", "stress", "magmoms"):
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(ref[key]), atol=1e-10)
    dots_fn = jax.jit(make_predictor(cfg.replace(remat=True, remat_save_dots=True), "efsm"))
    got = dots_fn(params, batch)
    for key in ("energy", "forces", "stress", "magmoms"):
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(ref[key]), atol=1e-10)
    variants = {"none": dict(remat=False), "full": dict(remat=True),
                "dots": dict(remat=True, remat_save_dots=True)}
    temp = {k: jax.jit(make_predictor(cfg.replace(num_layers=4, **v), "ef"))
            .lower(params_for_layers(params, 4), batch).compile()
            .memory_analysis().temp_size_in_bytes for k, v in variants.items()}
    assert temp["full"] < 0.6 * temp["none"], temp
    assert temp["full"] <= temp["dots"] < temp["none"], temp


def params_for_layers(params, n: int):
    """The tiny preset's parameters with the stacked block parameters repeated to n blocks."""
    def grow(path, x):
        if any(getattr(k, "key", None) == "blocks" for k in path):
            reps = -(-n // x.shape[0])
            return np.concatenate([x] * reps, axis=0)[:n]
        return x
    return jax.tree_util.tree_map_with_path(grow, params)
