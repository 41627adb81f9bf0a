"""Core repulsion (config ``core_repulsion``): the ZBL pair term against its formula, its
smooth switch-off, its forces, and what it does to the shipped model."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from ase import Atoms
from ase.data import covalent_radii
from helpers import predict, setup

import matris
from matris import make_predictor

FRACTION = 0.5


def zbl_reference(r: float, z1: int, z2: int) -> float:
    """The ZBL universal potential (eV), written out independently of the package."""
    a = 0.46850 / (z1 ** 0.23 + z2 ** 0.23)
    x = r / a
    phi = (0.18175 * np.exp(-3.19980 * x) + 0.50986 * np.exp(-0.94229 * x)
           + 0.28022 * np.exp(-0.40290 * x) + 0.02817 * np.exp(-0.20162 * x))
    return 14.399645 * z1 * z2 / r * phi


def envelope_reference(x: float, p: int = 8) -> float:
    """The polynomial cutoff in its expanded form (the package evaluates a factored form)."""
    if x >= 1:
        return 0.0
    return (1 - (p + 1) * (p + 2) / 2 * x ** p + p * (p + 2) * x ** (p + 1)
            - p * (p + 1) / 2 * x ** (p + 2))


@pytest.fixture(scope="module")
def models():
    cfg, params, fn = setup("tiny", "float64")
    cfg_rep = cfg.replace(core_repulsion=FRACTION)
    return (cfg, params, fn), (cfg_rep, params, jax.jit(make_predictor(cfg_rep, "efsm")))


def dimer(symbols: str, r: float) -> Atoms:
    return Atoms(symbols, positions=[[0.0, 0.0, 0.0], [r, 0.0, 0.0]])


@pytest.mark.parametrize("symbols", ["FeCr", "MgO", "OH"])
def test_added_energy_is_zbl_times_envelope(models, symbols):
    """E(with) - E(without) = V_ZBL(r) u_8(r / (f (R_1 + R_2))) inside, exactly 0 outside."""
    (cfg, params, fn), (cfg_rep, _, fn_rep) = models
    z1, z2 = Atoms(symbols).numbers
    r_out = FRACTION * (covalent_radii[z1] + covalent_radii[z2])
    for r in (0.25 * r_out, 0.6 * r_out, 0.95 * r_out, 1.05 * r_out, 2.0):
        atoms = [dimer(symbols, r)]
        plain = predict(cfg, params, fn, atoms)[0]["energy"][0]
        rep = predict(cfg_rep, params, fn_rep, atoms)[0]["energy"][0]
        want = zbl_reference(r, z1, z2) * envelope_reference(r / r_out)
        assert rep - plain == pytest.approx(want, rel=1e-9, abs=1e-12), (symbols, r)
        if r >= r_out:
            assert rep == plain


def test_forces_and_stress_against_finite_differences(models):
    """A compressed FeCr crystal with pairs inside the switch radius: F = -dE/dx, and the
    virial part of the stress, with the term switched on."""
    (_, _, _), (cfg, params, fn) = models
    atoms = Atoms("FeCr", cell=[[2.3, 0.1, 0.0], [0.0, 2.4, 0.2], [0.1, 0.0, 2.5]],
                  scaled_positions=[[0, 0, 0], [0.3, 0.28, 0.31]], pbc=True)
    out, _ = predict(cfg, params, fn, [atoms])
    r_min = atoms.get_distance(0, 1, mic=True)
    assert r_min < FRACTION * (covalent_radii[26] + covalent_radii[24])  # the term is on
    h = 1e-5
    for i, k in [(0, 0), (1, 1), (1, 2)]:
        e = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[i, k] += sign * h
            e.append(predict(cfg, params, fn, [moved])[0]["energy"][0])
        assert out["forces"][i, k] == pytest.approx(-(e[0] - e[1]) / (2 * h), rel=1e-6, abs=1e-7)
    # stress: sigma_xx = (1/V) dE/d eps_xx
    e = []
    for sign in (1, -1):
        strained = atoms.copy()
        strain = np.eye(3)
        strain[0, 0] += sign * h
        strained.set_cell(atoms.cell @ strain, scale_atoms=True)
        e.append(predict(cfg, params, fn, [strained])[0]["energy"][0])
    sxx = (e[0] - e[1]) / (2 * h) / atoms.get_volume()
    assert out["stress"][0, 0, 0] == pytest.approx(sxx, rel=1e-6, abs=1e-8)
    assert np.allclose(out["forces"].sum(axis=0), 0.0, atol=1e-9)  # sum of forces zero


def test_smooth_at_switch_radius(models):
    """Energy and force continuous where the term switches off: the force at r_out -+ d
    differs by O(d^2), and the one-sided energy slopes agree."""
    (_, _, _), (cfg, params, fn) = models
    r_out = FRACTION * 2 * covalent_radii[26]
    d = 1e-4
    e, f = [], []
    for r in (r_out - d, r_out, r_out + d):
        out, _ = predict(cfg, params, fn, [dimer("FeFe", r)])
        e.append(out["energy"][0])
        f.append(out["forces"][1, 0])
    assert abs(f[0] - f[2]) < 1e-4
    assert (e[1] - e[0]) / d == pytest.approx((e[2] - e[1]) / d, abs=1e-3)


def test_shipped_model_repels_at_short_range():
    """The shipped model: dimers that the training data never brought closer than ~0.6 of
    their covalent-radius sum cost more energy the closer they get (no hole) below 0.4 of
    that sum, and a dimer at 0.3 A is far above its energy at 2.5 A."""
    model = matris.load()
    assert model.config.core_repulsion == FRACTION
    calc = matris.MatRISCalculator(model=model)
    for symbols in ("FeFe", "FeCr", "SiO", "UU"):
        energies = []
        for r in np.linspace(0.3, 0.5 * sum(covalent_radii[Atoms(symbols).numbers]) * 0.8, 6):
            atoms = dimer(symbols, r)
            atoms.calc = calc
            energies.append(atoms.get_potential_energy())
        assert np.all(np.diff(energies) < 0), (symbols, energies)
        far = dimer(symbols, 2.5)
        far.calc = calc
        assert energies[0] > far.get_potential_energy() + 10.0, symbols


def test_parameter_gradient_of_force_loss_is_finite(models):
    """Training differentiates the forces again with respect to the parameters: with pairs
    inside the switch radius (and padding rows), that gradient stays finite and nonzero."""
    (_, _, _), (cfg, params, _) = models
    from helpers import BUDGET

    from matris.graph import graph_for, pack

    atoms = Atoms("FeCr", cell=[[2.3, 0.1, 0.0], [0.0, 2.4, 0.2], [0.1, 0.0, 2.5]],
                  scaled_positions=[[0, 0, 0], [0.3, 0.28, 0.31]], pbc=True)
    batch, _ = pack([graph_for(atoms, cfg)], BUDGET, dtype=np.float64)
    fn = make_predictor(cfg, "ef")

    def loss(p):
        return jax.numpy.sum(fn(p, batch)["forces"] ** 2)

    grads = jax.tree_util.tree_leaves(jax.grad(loss)(params))
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert sum(float(np.abs(g).sum()) for g in grads) > 0
