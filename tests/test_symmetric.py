"""Unordered (symmetric) angle rows: the graph, exact equality with the ordered model whose bond
kernels are tied, derivatives, the chunked path, and a bundle round trip through the calculator."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers import predict, setup, structures

from matris import make_predictor
from matris.data.dataset import Dataset
from matris.data.frames import Frame
from matris.graph import budgets_for, build_graph, graph_for, pack
from matris.nn.symmetric import ordered_params

R3 = 3.3  # more angles than the tiny preset's r_3 in the small test cells


@pytest.fixture(scope="module")
def structs():
    return structures()


@pytest.fixture(scope="module")
def symmetric():
    return setup("tiny", "float64", seed=3, symmetric_angles=True, three_body_cutoff=R3)


def _rows(graph):
    return set(zip(graph.angle_center.tolist(), graph.angle_edge_1.tolist(),
                   graph.angle_edge_2.tolist()))


def test_rows_are_the_unordered_half(structs):
    """Each unordered pair of edges at a centre once (e1 < e2): half the ordered rows, and the
    same bonds; a self-image pair (180 degrees, one bond twice) is kept once."""
    for name, atoms in structs.items():
        ordered = build_graph(atoms, 5.0, R3)
        sym = build_graph(atoms, 5.0, R3, symmetric_angles=True)
        assert sym.symmetric_angles and not ordered.symmetric_angles
        assert 2 * sym.n_angles == ordered.n_angles, name
        assert _rows(sym) == {(c, a, b) for c, a, b in _rows(ordered) if a < b}, name
        np.testing.assert_array_less(sym.angle_edge_1, sym.angle_edge_2)
        np.testing.assert_array_equal(sym.angle_bond_t, sym.edge_bond[sym.angle_edge_1])
    self_image = build_graph(structs["self_image"], 5.0, R3, symmetric_angles=True)
    assert np.any(self_image.angle_bond_t == self_image.angle_bond_s)


def test_dataset_builds_the_configured_rows(structs):
    frames = [Frame(atoms=a, energy=None, forces=None, stress=None, magmoms=None, source=n)
              for n, a in structs.items() if a.pbc.all()]
    ordered, sym = Dataset(frames, 5.0, R3), Dataset(frames, 5.0, R3, symmetric_angles=True)
    for i in range(len(frames)):
        assert sym.graph(i).symmetric_angles and 2 * sym.graph(i).n_angles == ordered.graph(i).n_angles
    assert sym.subset([0]).graph(0).symmetric_angles


@pytest.mark.parametrize("chunk", [0, 200])
def test_equals_ordered_model_with_tied_kernels(symmetric, structs, chunk):
    """The symmetric model on unordered rows = the ordered model on ordered rows with the shared
    bond block written out for both bonds (`ordered_params`), padded batch of five structures;
    also through the chunked path (which runs the doubled ordered rows)."""
    cfg, params, fn = symmetric
    atoms = list(structs.values())
    ocfg = cfg.replace(symmetric_angles=False)
    budgets = budgets_for([graph_for(a, ocfg) for a in atoms])  # fits both
    if chunk:
        cfg = cfg.replace(chunk_rows=chunk)
        fn = jax.jit(make_predictor(cfg, "efsm"))
    sym, batch = predict(cfg, params, fn, atoms, budgets)
    assert int(batch.angle_mask.sum()) > 3 * 200
    oparams = ordered_params(params, cfg)
    ordered, _ = predict(ocfg, oparams, jax.jit(make_predictor(ocfg, "efsm")), atoms, budgets)
    for key in ("energy", "forces", "stress", "magmoms"):
        np.testing.assert_allclose(sym[key], ordered[key], rtol=1e-10, atol=1e-12, err_msg=key)
    assert np.abs(sym["forces"]).max() > 1e-4  # not a comparison between zeros
    n_line = lambda p: p["blocks"]["refine_line"]["message_mlp"]["core_in_kernel"].shape
    assert n_line(oparams)[1] == n_line(params)[1] + cfg.bond_dim  # [layers, fan_in, hidden]


def test_batches_carry_their_angle_rows(symmetric, structs):
    """A batch knows its angle-row kind (a static pytree field): a model refuses rows of the
    other kind (which it would count twice or half, silently), the packer refuses a mix, and
    an all-padding batch takes the kind it is asked for, so it stacks with real ones."""
    cfg, params, fn = symmetric
    atoms = structs["fecr"]
    ordered = build_graph(atoms, cfg.cutoff, cfg.three_body_cutoff, label="fecr-ordered")
    sym = graph_for(atoms, cfg)
    budgets = budgets_for([ordered])
    with pytest.raises(ValueError, match="ordered .*angle rows but the model needs unordered"):
        fn(params, pack([ordered], budgets)[0])
    ocfg = cfg.replace(symmetric_angles=False)
    ofn = make_predictor(ocfg, "ef")
    with pytest.raises(ValueError, match="unordered .*angle rows but the model needs ordered"):
        ofn(ordered_params(params, cfg), pack([sym], budgets)[0])
    with pytest.raises(ValueError, match="fecr-ordered has ordered angle rows"):
        pack([sym, ordered], budgets_for([sym, ordered]))
    with pytest.raises(ValueError, match="needs ordered"):
        pack([sym], budgets, symmetric_angles=False)
    real, empty = pack([sym], budgets)[0], pack([], budgets, symmetric_angles=True)[0]
    assert real.symmetric_angles and empty.symmetric_angles
    assert not pack([], budgets)[0].symmetric_angles
    stacked = jax.tree_util.tree_map(lambda *x: np.stack(x), real, empty)
    assert stacked.symmetric_angles and stacked.angle_mask.shape == (2, budgets.angles)


def test_forces_match_finite_differences(symmetric, structs):
    cfg, params, fn = symmetric
    atoms = structs["triclinic"].copy()
    budgets = budgets_for([graph_for(atoms, cfg)])  # bucketed: the moved copies fit too
    out, _ = predict(cfg, params, fn, [atoms], budgets)
    h, rng = 1e-5, np.random.default_rng(0)
    for _ in range(3):
        i, k = int(rng.integers(len(atoms))), int(rng.integers(3))
        e = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[i, k] += sign * h
            e.append(predict(cfg, params, fn, [moved], budgets)[0]["energy"][0])
        np.testing.assert_allclose(out["forces"][i, k], -(e[0] - e[1]) / (2 * h), rtol=1e-5,
                                   atol=1e-7)
    np.testing.assert_allclose(out["forces"][: len(atoms)].sum(axis=0), 0.0, atol=1e-10)


def test_bundle_round_trip_and_calculator(symmetric, structs, tmp_path):
    """A symmetric model saved and loaded keeps its setting; the calculator builds unordered
    rows for it and returns the predictor's numbers."""
    import matris
    from matris.calculator import MatRISCalculator
    from matris.potential import Model

    cfg, params, fn = symmetric
    path = tmp_path / "sym.npz"
    matris.save(Model(cfg, params), path)
    loaded = matris.load(path)
    assert loaded.config.symmetric_angles
    atoms = structs["fecr"].copy()
    calc = MatRISCalculator(loaded, task="efs")
    assert calc.graph(atoms).symmetric_angles
    atoms.calc = calc
    out, _ = predict(cfg, params, fn, [atoms])
    np.testing.assert_allclose(atoms.get_potential_energy(), out["energy"][0], rtol=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), out["forces"][: len(atoms)], atol=1e-9)
