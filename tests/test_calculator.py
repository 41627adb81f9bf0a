"""MatRISCalculator and matris.predict: equal to direct model calls, batching-invariant, few
compilations in MD, clear errors on bad input, isolated atoms."""

import jax
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk, fcc100
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.verlet import VelocityVerlet
from calc_helpers import small_model
from helpers import structures

import matris
from matris import calculator as calculator_module
from matris.bundle import DEFAULT_MODEL, MODELS_DIR
from matris.calculator import CompiledPredictor, compiled_predictor, needs_low_memory, variants_for
from matris.graph import budgets_for, build_graph, graph_sizes, pack
from matris.graph.neighbors import has_own_cell
from matris.md import init_velocities

TOL = 1e-10


@pytest.fixture(scope="module")
def model():
    return small_model(smooth=True)


def slab() -> Atoms:
    """Mixed periodicity: a Cu(100) slab, periodic in x and y only."""
    atoms = fcc100("Cu", size=(2, 2, 2), vacuum=4.0)
    atoms.pbc = (True, True, False)
    atoms.rattle(0.03, seed=7)
    return atoms


@pytest.fixture(scope="module")
def structs():
    s = structures()
    return {"periodic": s["fecr"], "molecule": s["molecule"], "slab": slab(),
            "triclinic": s["triclinic"], "atom": Atoms("Fe", positions=[[1.0, 2.0, 3.0]])}


@pytest.fixture(scope="module")
def floor(model, structs):
    """Budgets that fit each test structure alone: one compiled shape for all of them."""
    cfg = model.config
    sizes = graph_sizes([build_graph(a, cfg.cutoff, cfg.three_body_cutoff)
                         for a in structs.values()])
    return budgets_for(sizes.max(axis=0)[None, :], n_graphs=1)


@pytest.fixture(scope="module")
def direct_fn(model):
    return jax.jit(model.predictor("efsm"))


def test_calculator_equals_direct_call(model, structs, floor, direct_fn):
    calc = matris.MatRISCalculator(model, budgets=floor)
    cfg = model.config
    for name in ("periodic", "molecule", "slab"):
        atoms = structs[name].copy()
        atoms.calc = calc
        graph = build_graph(atoms, cfg.cutoff, cfg.three_body_cutoff)
        batch, _ = pack([graph], floor, dtype=np.float64)
        ref = {k: np.asarray(v) for k, v in direct_fn(model.params, batch).items()}
        n = len(atoms)
        assert abs(atoms.get_potential_energy() - ref["energy"][0]) < TOL, name
        assert atoms.get_potential_energy() == calc.get_property("free_energy", atoms)
        np.testing.assert_allclose(atoms.get_forces(), ref["forces"][:n], atol=TOL)
        np.testing.assert_allclose(atoms.get_potential_energies(), ref["energies"][:n], atol=TOL)
        np.testing.assert_allclose(atoms.get_magnetic_moments(), ref["magmoms"][:n], atol=TOL)
        assert abs(atoms.get_potential_energies().sum() - atoms.get_potential_energy()) < 1e-9
        if name in ("periodic", "slab"):  # the slab has a cell of its own (vacuum on z)
            np.testing.assert_allclose(atoms.get_stress(voigt=False), ref["stress"][0], atol=TOL)
        else:  # a molecule without cell has no volume: no stress
            with pytest.raises(PropertyNotImplementedError):
                atoms.get_stress()
    assert calc.budgets == floor
    assert calc.compilations <= 1  # one shape for all three structures


def test_slab_stress_equals_periodic_slab_and_strain_derivative(model, floor):
    """A slab periodic in x, y only, in a box with vacuum wider than the cutoff: energy,
    forces and stress equal those of the same box made periodic on z (no atom sees its z
    image), and the stress is the finite-difference strain derivative over the box volume."""
    atoms = fcc100("Cu", size=(2, 2, 2), vacuum=0.5 * model.config.cutoff + 1.0)
    atoms.rattle(0.03, seed=3)
    atoms.pbc = (True, True, False)
    atoms.calc = matris.MatRISCalculator(model, budgets=floor)
    closed = atoms.copy()
    closed.pbc = True
    closed.calc = matris.MatRISCalculator(model, budgets=floor)
    assert abs(atoms.get_potential_energy() - closed.get_potential_energy()) < TOL
    np.testing.assert_allclose(atoms.get_forces(), closed.get_forces(), atol=TOL)
    stress = atoms.get_stress(voigt=False)
    np.testing.assert_allclose(stress, closed.get_stress(voigt=False), atol=TOL)
    assert np.abs(stress[:2, :2]).max() > 1e-4  # in-plane stress is really computed
    h, volume = 1e-5, atoms.get_volume()
    for i, j in ((0, 0), (0, 1), (1, 1), (2, 2)):
        energies = []
        for sign in (1, -1):
            strained = atoms.copy()
            eps = np.zeros((3, 3))
            eps[i, j] = eps[j, i] = sign * h
            strained.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            strained.calc = atoms.calc
            energies.append(strained.get_potential_energy())
        numeric = (energies[0] - energies[1]) / (2 * h) / volume / (1 if i == j else 2)
        assert abs(numeric - stress[i, j]) < 1e-6, (i, j, numeric, stress[i, j])


def test_kept_heap_gives_free_pages_back_before_a_call_when_memory_is_short(model, structs,
                                                                             floor, monkeypatch):
    """A kept heap may hold two or three calls' scratch (an aligned request does not always
    fit the block the last call freed): before a big call, when the free memory is short of
    GUARD_FACTOR times its scratch, the free pages are given back; otherwise nothing."""
    released = []
    monkeypatch.setattr(calculator_module, "release_free_heap", lambda: released.append(1) or True)
    monkeypatch.setattr(calculator_module, "heap_kept", lambda: True)
    big = 1 << 30
    monkeypatch.setattr(calculator_module, "host_available", lambda: 1.2 * big)
    assert calculator_module.make_room(big) and released == [1]
    assert not calculator_module.make_room(calculator_module.GUARD_MIN_SCRATCH - 1)  # small call
    monkeypatch.setattr(calculator_module, "host_available", lambda: 1.3 * big)
    assert not calculator_module.make_room(big) and released == [1]  # enough memory
    monkeypatch.setattr(calculator_module, "host_available", lambda: 0)
    monkeypatch.setattr(calculator_module, "heap_kept", lambda: False)
    assert not calculator_module.make_room(big)  # malloc's own settings: nothing kept
    asked = []
    monkeypatch.setattr(calculator_module, "make_room", lambda scratch: asked.append(scratch))
    graph = build_graph(structs["periodic"], model.config.cutoff, model.config.three_body_cutoff)
    batch, _ = pack([graph], floor)
    holder = CompiledPredictor(model.config, "efs")
    holder(model.params, batch)
    holder(model.params, batch)
    temp = holder.executable(model.params, batch).memory_analysis().temp_size_in_bytes
    assert asked == [temp, temp] and holder.compilations == 1  # before every call


def test_large_shapes_use_low_memory_variants_with_equal_results(model, structs, floor,
                                                                  direct_fn, monkeypatch):
    """A force call compiles the fastest variant whose scratch estimate fits the memory
    budget (plain, chunked keeping products, chunked, chunked + remat) and falls through to
    the next when XLA's memory analysis says it does not fit: same results every time."""
    assert variants_for(model.config, "efs", 1000)[0] == "plain"  # a few MB
    big = model.config.replace(dtype="float32", angle_dim=128, num_layers=6)  # 256 Fe atoms
    monkeypatch.setattr(calculator_module, "available_memory", lambda: 24e9)
    monkeypatch.setattr(calculator_module, "heap_kept", lambda: False)
    assert variants_for(big, "efs", 23296)[0] == "plain"  # 3.7 GB estimated
    assert variants_for(big, "efs", 46592)[0] == "chunked_dots"  # 7.4 > PLAIN_SCRATCH_LIMIT
    monkeypatch.setattr(calculator_module, "heap_kept", lambda: True)  # that limit is off
    assert variants_for(big, "efs", 2 * 46592)[0] == "plain"  # 14.9 GB < 70 % of 24 GB
    assert variants_for(big, "efs", 3 * 46592)[0] == "chunked_dots"  # 13.3 GB
    assert variants_for(big, "efs", 6 * 46592) == ["chunked", "lean"]  # 15.5 GB
    assert variants_for(big, "efs", 64 * 46592) == ["lean"]
    monkeypatch.setattr(calculator_module, "available_memory", lambda: 3e9)
    assert variants_for(big, "efs", 23296)[0] == "chunked"  # products kept: 2.2 GB > 2.1 GB
    assert needs_low_memory(big, "efs", 23296) and not needs_low_memory(big, "efs", 100)
    monkeypatch.setattr(calculator_module, "CHUNK_ROWS", 300)
    cfg = model.config
    graph = build_graph(structs["periodic"], cfg.cutoff, cfg.three_body_cutoff)
    batch, _ = pack([graph], floor, dtype=np.float64)
    assert batch.angle_center.shape[0] > 2 * 300  # the chunked executables do loop
    ref = direct_fn(model.params, batch)
    chunked = dict(chunk_rows=300, remat=False, remat_save_dots=False)
    for memory, estimate, chosen, compilations in (
            (1 << 40, None, dict(chunked, remat_save_dots=True), 1),  # the first that fits
            (4, 1.0, dict(chunked, remat=True), 3)):  # XLA's analysis refuses all but the last
        monkeypatch.setattr(calculator_module, "available_memory", lambda: memory)
        if estimate is not None:  # every estimate fits (1 byte < 2), no executable does
            monkeypatch.setattr(calculator_module, "scratch_estimate", lambda *a: estimate)
        monkeypatch.setattr(calculator_module, "PLAIN_SCRATCH_LIMIT", 0)
        monkeypatch.setattr(calculator_module, "heap_kept", lambda: False)
        holder = CompiledPredictor(cfg, "efsm")
        holder._jitted["plain"] = None  # the plain function must not be used for this shape
        got = holder(model.params, batch)
        for key in ("energy", "forces", "stress", "magmoms"):
            np.testing.assert_allclose(got[key], np.asarray(ref[key]), atol=TOL, err_msg=key)
        assert holder.compilations == compilations
        assert holder.chosen[holder.key(batch)] == cfg.replace(**chosen)
    assert variants_for(cfg, "e", 1) == ["config"]  # energy only: no backward pass
    assert variants_for(cfg.replace(remat=True), "efs", 1) == ["config"]  # the config chose
    assert variants_for(cfg.replace(chunk_rows=64), "efs", 1) == ["config"]


def test_task_and_dtype(model, structs, floor):
    atoms = structs["molecule"].copy()
    atoms.calc = matris.MatRISCalculator(model, budgets=floor)
    e64 = atoms.get_potential_energy()
    calc = matris.MatRISCalculator(model, task="e", dtype="float32")
    assert calc.model.config.dtype == "float32" and jax.config.jax_enable_x64
    atoms.calc = calc
    assert abs(atoms.get_potential_energy() - e64) < 1e-4 * max(1.0, abs(e64))
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_forces()
    with pytest.raises(ValueError, match="task must be one of"):
        matris.MatRISCalculator(model, task="fs")


def test_model_argument_forms(model, structs, floor, tmp_path):
    path = matris.save(model, tmp_path / "m.npz")
    atoms = structs["periodic"].copy()
    atoms.calc = matris.MatRISCalculator(model, budgets=floor)
    e_model = atoms.get_potential_energy()
    atoms.calc = matris.MatRISCalculator(str(path), budgets=floor)
    assert abs(atoms.get_potential_energy() - e_model) < TOL
    shipped = (MODELS_DIR / f"{DEFAULT_MODEL}.npz").exists()
    if not shipped:  # no argument = the shipped model; before it exists, a clear error
        with pytest.raises(FileNotFoundError, match=DEFAULT_MODEL):
            matris.MatRISCalculator()
    with pytest.raises(FileNotFoundError, match="no such file or shipped model"):
        matris.MatRISCalculator("no-such-model")


BAD = {
    "nan": (Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]]), "non-finite position"),
    "overlap": (Atoms("H2", positions=[[0, 0, 0], [0.05, 0, 0]]), "closer than"),
    "unknown element": (Atoms(numbers=[1, 0], positions=[[0, 0, 0], [1, 0, 0]]),
                        "atomic number 0"),
    "empty": (Atoms(), "empty structure"),
    "singular cell": (Atoms("Cu", cell=[[2, 0, 0], [4, 0, 0], [0, 0, 2]], pbc=True),
                      "singular or degenerate cell"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_raises_before_computing(model, case):
    atoms, message = BAD[case]
    holder = compiled_predictor(model.config, "efsm")
    before = holder.compilations
    calc = matris.MatRISCalculator(model)
    with pytest.raises(ValueError, match=message):
        calc.get_potential_energy(atoms.copy())
    with pytest.raises(ValueError, match=f"structure 1: .*{message}"):
        matris.predict([bulk("Cu"), atoms.copy()], model, progress=False)
    assert calc.compilations == 0 and holder.compilations == before


def test_isolated_atom(model, structs, floor):
    """No neighbours: energy = reference energy + readout of the bare embedding; additive."""
    calc = matris.MatRISCalculator(model, budgets=floor)
    atom = structs["atom"].copy()
    e1 = calc.get_potential_energy(atom)
    assert np.isfinite(e1)
    np.testing.assert_allclose(calc.get_forces(atom), 0.0, atol=TOL)
    boxed = Atoms("Fe", positions=[[0.3, 0.2, 0.1]], cell=np.eye(3) * 10.0, pbc=True)
    assert abs(calc.get_potential_energy(boxed) - e1) < TOL
    pair = Atoms("Fe2", positions=[[0, 0, 0], [0, 0, model.config.cutoff + 0.5]])
    assert abs(calc.get_potential_energy(pair) - 2 * e1) < TOL
    # the reference energy enters additively: shift it and the energy follows exactly
    ref = np.array(model.params["reference_energy"])
    ref[25] += 1.25
    shifted = matris.Model(model.config, {**model.params, "reference_energy": ref})
    e2 = matris.MatRISCalculator(shifted, budgets=floor).get_potential_energy(atom)
    assert abs(e2 - e1 - 1.25) < TOL


def test_md_compiles_at_most_three_times(model):
    """200 MD steps of a small hot cell: neighbour counts change all the time, compilations
    stay <= 3 because budgets are bucketed and only grow."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 1, 1)
    atoms.rattle(0.05, seed=1)
    calc = matris.MatRISCalculator(model)
    atoms.calc = calc
    cfg = model.config
    sizes, budgets = [], []

    def observe():
        sizes.append(build_graph(atoms, cfg.cutoff, cfg.three_body_cutoff).sizes)
        budgets.append(calc.budgets)

    init_velocities(atoms, 2000.0, seed=3)
    dyn = VelocityVerlet(atoms, 2.0 * units.fs)
    dyn.attach(observe, interval=1)
    dyn.run(200)
    assert len(set(sizes)) > 3, "neighbour counts did not fluctuate; the test proves nothing"
    assert calc.compilations <= 3
    for a, b in zip(budgets, budgets[1:], strict=False):  # budgets never shrink
        assert all(x <= y for x, y in zip(a, b, strict=True))


def test_predict_batched_equals_one_by_one(model, structs, floor):
    atoms_list = list(structs.values())
    holder = compiled_predictor(model.config, "efsm")
    before = holder.compilations
    batched = matris.predict(atoms_list, model, batch_size=2, progress=False)  # 3 batches
    assert holder.compilations - before <= 1  # all batches share one shape
    calc = matris.MatRISCalculator(model, budgets=floor)
    for atoms, res in zip(atoms_list, batched, strict=True):
        atoms = atoms.copy()
        atoms.calc = calc
        assert abs(res["energy"] - atoms.get_potential_energy()) < TOL
        assert abs(res["energy_per_atom"] * len(atoms) - res["energy"]) < 1e-9
        np.testing.assert_allclose(res["forces"], atoms.get_forces(), atol=TOL)
        np.testing.assert_allclose(res["energies"], atoms.get_potential_energies(), atol=TOL)
        np.testing.assert_allclose(res["magmoms"], atoms.get_magnetic_moments(), atol=TOL)
        if has_own_cell(atoms.cell.array):  # the rule the package applies
            np.testing.assert_allclose(res["stress"], atoms.get_stress(voigt=False), atol=TOL)
        else:
            assert "stress" not in res
