"""Training: one compile per run, data-parallel equality, kill/resume, bad input."""

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT

import matris
from matris.data import make_frame, write_extxyz
from matris.graph import Budgets, build_graph, pack
from matris.training import from_dict, train
from matris.training.config import load_config
from matris.training.step import (
    init_state,
    make_mesh,
    make_optimizer,
    make_train_step,
    shard,
    stack,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = {"preset": "tiny", "overrides": {"num_layers": 1, "atom_dim": 16, "bond_dim": 16,
                                        "angle_dim": 16, "energy_hidden": [16],
                                        "magmom_hidden": [16]}}


def emt_frames(n: int = 30, seed: int = 0):
    """Small labelled set (EMT teacher): fcc metals, strained and rattled, with splits."""
    rng = np.random.default_rng(seed)
    lattice = {"Cu": 3.6, "Al": 4.05, "Ni": 3.52, "Ag": 4.09}
    frames = []
    for i in range(n):
        el = list(lattice)[i % 4]
        atoms = bulk(el, "fcc", a=lattice[el] * (1 + 0.02 * rng.standard_normal()))
        atoms = atoms * (2, 1, 1) if i % 3 else atoms * (1, 1, 1)
        atoms.rattle(0.08, seed=i)
        atoms.calc = EMT()
        frames.append(make_frame(
            atoms.copy(), energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
            stress=atoms.get_stress(voigt=False), magmoms=np.abs(rng.normal(size=len(atoms))),
            source=f"emt:{i}", info={"family": f"{el}{i % 5}",
                                     "split": ["train", "train", "train", "val", "test"][i % 5]}))
    return frames


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "emt.extxyz"
    write_extxyz(path, emt_frames())
    return path


def run_config(data_file, out, **extra):
    cfg = {"output": str(out), "data": {"train": str(data_file)}, "model": copy.deepcopy(TINY),
           "optim": {"epochs": 3, "warmup_steps": 2, "learning_rate": 2e-3},
           "batch": {"batch_size": 3, "eval_batch_size": 6}, "checkpoint": {"every_steps": 2},
           "devices": 1}
    for key, value in extra.items():
        cfg.setdefault(key, {}).update(value) if isinstance(value, dict) else cfg.update({key: value})
    return cfg


def test_unknown_config_key_is_named(tmp_path):
    with pytest.raises(ValueError, match="optim.*learning_rat"):
        from_dict({"optim": {"learning_rat": 1.0}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {train: x}\nmodle: {}\n")
    with pytest.raises(ValueError, match="modle"):
        load_config(bad)


@pytest.fixture(scope="module")
def trained(data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    return out, train(from_dict(run_config(data_file, out)), resume=False)


def test_train_compiles_once_learns_and_releases(trained):
    out, summary = trained
    assert summary["train_step_compilations"] == 1
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert (out / "learning_curves.png").stat().st_size > 1000
    model = matris.load(out / "model.npz")
    ref = np.asarray(model.params["reference_energy"])
    assert ref[29 - 1] != 0 and ref[13 - 1] != 0  # composition model fitted (Cu, Al)
    assert model.trained_elements == {13, 28, 29, 47}  # Al, Ni, Cu, Ag: bundle metadata
    # 20 steps only: the energy head starts at the composition model and must not get worse
    test_mae = summary["results"]["test"]["energy_mae"]
    assert test_mae < 1.2 * summary["baselines"]["test"]["energy_mae"]
    # the by-family table (calculator path) adds up to the split's MAEs (training eval path)
    text = (out / "results.md").read_text()
    table = text.split("Test-split families with the largest energy error:")[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| family")]
    n = np.array([int(r[1]) for r in rows])
    assert n.sum() == 6 and all(r[0][:2] in ("Cu", "Al", "Ni", "Ag") for r in rows)
    for col, want in ((2, test_mae), (3, summary["baselines"]["test"]["energy_mae"])):
        got = np.sum(n * np.array([float(r[col]) for r in rows])) / n.sum()
        assert abs(got - 1000 * want) < 1.0, (col, got, 1000 * want)


def test_two_devices_equal_one_device(data_file):
    """One step on a 2-device mesh equals one step on 1 device for the same global batch."""
    if len(jax.devices()) < 2:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=2")
    cfg = from_dict(run_config(data_file, "unused"))
    model_cfg = matris.get_config("tiny", **TINY["overrides"])
    frames = emt_frames(8)
    graphs = [build_graph(f.atoms) for f in frames]
    budgets = Budgets(24, 1400, 700, 6000, 5)
    items = [pack(graphs[:4], budgets, frames[:4]), pack(graphs[4:], budgets, frames[4:])]
    batches, targets = stack(items)
    params = matris.init_params(model_cfg, items[0][0], 0)
    results = []
    for n_dev in (1, 2):
        mesh = make_mesh(n_dev)
        opt = make_optimizer(cfg.optim, 10, params)
        step = make_train_step(model_cfg, cfg.loss, cfg.optim, opt, mesh)
        state, metrics = step(init_state(params, opt), shard(batches, mesh), shard(targets, mesh))
        results.append((float(metrics["loss"]), jax.device_get(state.params)))
    assert abs(results[0][0] - results[1][0]) < 1e-5 * abs(results[0][0])
    flat = [jax.tree_util.tree_leaves(r[1]) for r in results]
    for a, b in zip(*flat):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_late_loss_stage_switches_weights_at_its_step(data_file):
    """loss.late replaces the weights for the last late_fraction of the steps, without a
    second compilation; a bad late key is refused by name."""
    with pytest.raises(ValueError, match="energie"):
        from_dict({"loss": {"late": {"energie": 1.0}}})
    base = run_config(data_file, "unused")
    cfg = from_dict({**base, "loss": {**base.get("loss", {}), "late_fraction": 0.5,
                                      "late": {"energy": 0.0, "forces": 0.0, "stress": 0.0,
                                               "magmoms": 0.0}}})
    assert cfg.loss.late_start(4) == 2 and from_dict(base).loss.late_start(4) == 4
    model_cfg = matris.get_config("tiny", **TINY["overrides"])
    frames = emt_frames(4)
    budgets = Budgets(24, 1400, 700, 6000, 5)
    batches, targets = stack([pack([build_graph(f.atoms) for f in frames], budgets, frames)])
    params = matris.init_params(model_cfg, pack([build_graph(frames[0].atoms)], budgets)[0], 0)
    mesh = make_mesh(1)
    opt = make_optimizer(cfg.optim, 4, params)
    step = make_train_step(model_cfg, cfg.loss, cfg.optim, opt, mesh, total_steps=4)
    repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state, losses = jax.device_put(init_state(params, opt), repl), []  # as train() does
    for _ in range(4):
        state, metrics = step(state, shard(batches, mesh), shard(targets, mesh))
        losses.append(float(metrics["loss"]))
    assert losses[0] > 0 and losses[1] > 0 and losses[2] == 0.0 and losses[3] == 0.0
    assert len(step.traces) == 1


def _launch(config_path: Path, cache: Path, *extra):
    # the parent's XLA_FLAGS exactly (no narrow-model flags added): the resume test compares
    # against a run made in this process, so both must compile the same code
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache), MATRIS_KEEP_XLA_FLAGS="1",
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", PYTHONPATH=str(ROOT / "src"))
    return subprocess.Popen([sys.executable, "-m", "matris.training", str(config_path), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_then_resume_matches_uninterrupted(data_file, trained, tmp_path):
    """A run killed (SIGKILL) after its second checkpoint and started again resumes and ends
    with the parameters of the same config run without interruption (the `trained` run,
    in-process: same code path, deterministic on CPU)."""
    straight, _ = trained
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax-cache"))
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(run_config(data_file, tmp_path / "killed")))
    killed = _launch(config, cache)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 600
    while time.time() < deadline:  # kill once two whole checkpoints exist, mid-run
        steps = [p for p in ckpts.glob("[0-9]*") if p.is_dir()] if ckpts.exists() else []
        if len(steps) >= 2 or killed.poll() is not None:
            break
        time.sleep(0.02)
    assert killed.poll() is None, "run finished before it could be killed"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "model.npz").exists()
    resumed = _launch(config, cache)
    log = resumed.communicate(timeout=600)[0].decode()
    assert resumed.returncode == 0, log[-3000:]
    assert "resumed from" in log
    a = matris.load(straight / "model.npz")
    b = matris.load(tmp_path / "killed" / "model.npz")
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=1e-6)


def test_mismatched_checkpoint_is_refused_and_kept(data_file, trained):
    out, _ = trained
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    saved = (out / "model.npz").read_bytes()
    other = run_config(data_file, out)
    other["model"] = {"preset": "tiny", "overrides": dict(TINY["overrides"], atom_dim=8)}
    with pytest.raises(ValueError, match="another model config.*atom_dim"):
        train(from_dict(other), resume=True)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before
    assert (out / "model.npz").read_bytes() == saved


def test_resume_accepts_older_checkpoints_and_execution_changes():
    """A checkpoint that predates a model-config field (stored without it) or was written
    with another execution setting (remat, chunking) resumes; a shape change is named."""
    from matris.training.checkpoint import _diff

    run = matris.get_config("tiny").to_dict()
    older = {k: v for k, v in run.items() if k not in ("chunk_rows", "remat_save_dots")}
    assert _diff(older, run) == ""
    assert _diff(dict(run, remat=not run["remat"], chunk_rows=4096), run) == ""
    assert "atom_dim" in _diff(dict(run, atom_dim=run["atom_dim"] + 8), run)
    assert "dtype" in _diff(dict(run, dtype="float64"), dict(run, dtype="float32"))


def test_missing_energy_label_is_named(tmp_path):
    frames = emt_frames(4)
    frames[2] = make_frame(frames[2].atoms, forces=frames[2].forces, source="x:2")
    path = tmp_path / "partial.extxyz"
    write_extxyz(path, frames)
    cfg = from_dict(run_config(path, tmp_path / "run", data={"split_key": "nope"}))
    with pytest.raises(ValueError, match="no energy label"):
        train(cfg, resume=False)


def test_results_table_leaves_out_quantities_without_labels():
    from matris.training.report import table

    results = {s: {"energy_mae": 0.05, "magmoms_mae": 0.0} for s in ("val", "test")}
    base = {s: {"energy_mae": 0.2, "magmoms_mae": float("nan")} for s in ("val", "test")}
    text = table(results, base)
    assert "| energy (meV/atom) | test | 50.000 | 200.000 | 4.0x |" in text
    assert "magmoms" not in text and "nan" not in text


def test_fine_tuning_takes_the_stored_model_and_names_a_mismatch(data_file, trained, tmp_path):
    """Fine-tuning data: Cu and Ni frames only, labelled with the stored model's own energies
    shifted by +0.3 eV per Cu atom and -0.2 eV per Ni atom (as if from another functional).
    The frozen references must absorb exactly that shift, and Al and Ag, absent from the new
    data, must keep their stored references (a fresh fit would zero them)."""
    out, _ = trained
    start = matris.load(out / "model.npz")
    shift = {"Cu": 0.3, "Ni": -0.2}
    frames = [f for f in emt_frames() if f.atoms.get_chemical_symbols()[0] in shift]
    preds = matris.predict([f.atoms for f in frames], start, task="e", progress=False)
    tuning_file = tmp_path / "shifted.extxyz"
    write_extxyz(tuning_file, [
        make_frame(f.atoms, energy=p["energy"] + shift[f.atoms.get_chemical_symbols()[0]]
                   * f.n_atoms, forces=f.forces, stress=f.stress, magmoms=f.magmoms,
                   info=f.info, source=f.source) for f, p in zip(frames, preds, strict=True)])
    cfg = run_config(tuning_file, tmp_path / "ft", optim={"epochs": 1, "learning_rate": 1e-9})
    # no preset: the stored model; a runtime option may differ
    cfg["model"] = {"init_from": str(out / "model.npz"), "overrides": {"remat": True}}
    summary = train(from_dict(cfg), resume=False)
    tuned = matris.load(tmp_path / "ft" / "model.npz")
    assert tuned.config == start.config.replace(remat=True)
    assert tuned.trained_elements == start.trained_elements  # Cu, Ni added to Al..Ag
    assert summary["train_step_compilations"] == 1
    a, b = dict(start.params), dict(tuned.params)
    ref_a, ref_b = np.asarray(a.pop("reference_energy")), np.asarray(b.pop("reference_energy"))
    assert ref_b[29 - 1] == pytest.approx(ref_a[29 - 1] + 0.3, abs=1e-4)  # Cu
    assert ref_b[28 - 1] == pytest.approx(ref_a[28 - 1] - 0.2, abs=1e-4)  # Ni
    assert ref_b[13 - 1] == ref_a[13 - 1] != 0 and ref_b[47 - 1] == ref_a[47 - 1] != 0  # Al, Ag
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, atol=1e-5)  # learning rate ~0: parameters kept
    # and the tuned model reproduces the shifted labels from the first step
    tuned_e = matris.predict([f.atoms for f in frames[:4]], tuned, task="e", progress=False)
    for f, p, q in zip(frames, preds, tuned_e):
        want = p["energy"] + shift[f.atoms.get_chemical_symbols()[0]] * f.n_atoms
        assert q["energy"] == pytest.approx(want, abs=1e-3)
    cfg["model"] = {"preset": "tiny", "init_from": str(out / "model.npz"),
                    "overrides": dict(TINY["overrides"], atom_dim=8)}
    cfg["output"] = str(tmp_path / "ft2")
    with pytest.raises(ValueError, match=r"model.npz: its model config differs.*atom_dim: 16 != 8"):
        train(from_dict(cfg), resume=False)


def test_force_loss_l2mae_and_mse_on_real_atoms_only():
    """The force term is sum ||dF|| (L2MAE) or sum ||dF||^2 (forces_mse) over labelled real
    atoms, whatever the padding rows hold; the per-component MAE metric is unchanged."""
    from matris.training.loss import loss_terms

    structures = [bulk("Cu", "fcc", a=3.6) * (2, 1, 1), bulk("Al", "fcc", a=4.05)]
    graphs = [build_graph(s, 4.0, 3.0) for s in structures]
    rng = np.random.default_rng(0)
    frames = [make_frame(s, energy=-1.0, forces=rng.normal(size=(len(s), 3)))
              for s in structures]
    batch, tgt = pack(graphs, Budgets(8, 256, 128, 2048, 3), frames)
    real = np.asarray(batch.node_mask)
    delta = rng.normal(size=tgt.forces.shape)
    pred = {"energy": np.zeros(3, np.float32),
            "forces": np.where(real[:, None], tgt.forces + delta, 1e3).astype(np.float32)}
    norms = np.linalg.norm(delta[real], axis=1)
    l1 = loss_terms(pred, tgt, batch)
    l2 = loss_terms(pred, tgt, batch, forces_mse=True)
    assert int(l1["forces"][1]) == int(l2["forces"][1]) == 3
    np.testing.assert_allclose(l1["forces"][0], norms.sum(), rtol=1e-5)
    np.testing.assert_allclose(l2["forces"][0], (norms ** 2).sum(), rtol=1e-5)
    np.testing.assert_allclose(l2["forces_mae"][0], np.abs(delta[real]).mean(1).sum(), rtol=1e-5)
    assert from_dict({"data": {"train": "x"}, "loss": {"forces_mse": True}}).loss.forces_mse
