"""The `matris` command line: predict, eval, relax, md, and the lazy train/convert dispatch."""

import json
import subprocess
import sys
import types

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from calc_helpers import small_model
from helpers import structures

import matris
from matris.cli import main


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(matris.save(small_model(smooth=True), tmp_path_factory.mktemp("m") / "m.npz"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Three structures in an extxyz file: periodic, triclinic, molecule."""
    s = structures()
    atoms_list = [s["fecr"], s["triclinic"], s["molecule"]]
    path = tmp_path_factory.mktemp("in") / "in.extxyz"
    ase.io.write(path, atoms_list, format="extxyz")
    return str(path), atoms_list


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "matris.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("predict", "eval", "relax", "md", "train", "convert"):
        assert command in out


def test_predict_matches_api(model_path, inputs, tmp_path):
    path, atoms_list = inputs
    out = tmp_path / "out.extxyz"
    main(["predict", path, "-o", str(out), "--model", model_path, "--no-progress"])
    frames = ase.io.read(out, ":")
    expected = matris.predict(atoms_list, model_path, progress=False)
    assert len(frames) == len(atoms_list)
    for frame, res in zip(frames, expected, strict=True):
        assert frame.get_potential_energy() == pytest.approx(res["energy"], abs=1e-6)
        np.testing.assert_allclose(frame.get_forces(), res["forces"], atol=1e-6)
        np.testing.assert_allclose(frame.get_magnetic_moments(), res["magmoms"], atol=1e-6)
        if frame.pbc.all():
            np.testing.assert_allclose(frame.get_stress(voigt=False), res["stress"], atol=1e-6)


@pytest.mark.parametrize("mode", [["--batch"], ["--fix-cell", "--optimizer", "BFGS",
                                                "--index", "0"]])
def test_relax_writes_structures(model_path, inputs, tmp_path, mode):
    path, atoms_list = inputs
    out = tmp_path / "relaxed.extxyz"
    main(["relax", path, "-o", str(out), "--model", model_path, "--steps", "5",
          "--fmax", "0.05", *mode])
    frames = ase.io.read(out, ":")
    assert len(frames) == (1 if "--index" in mode else len(atoms_list))
    for frame in frames:
        assert 0 <= frame.info["relax_steps"] <= 5 and "relax_converged" in frame.info
        assert np.isfinite(frame.get_potential_energy())


def test_md_writes_trajectory_log_summary(model_path, inputs, tmp_path):
    path = inputs[0]  # first frame: an 8-atom periodic cell
    traj, log, summary = tmp_path / "md.traj", tmp_path / "md.log", tmp_path / "md.json"
    main(["md", path, "-o", str(traj), "--log", str(log), "--summary", str(summary),
          "--model", model_path, "--ensemble", "nvt", "--thermostat", "langevin",
          "--temperature", "800", "--steps", "10", "--loginterval", "5"])
    assert len(ase.io.read(traj, ":")) == 3
    assert len(log.read_text().splitlines()) == 4
    data = json.loads(summary.read_text())
    assert data["steps"] == 10 and data["ns_per_day"] > 0 and len(data["temperature"]) == 3


def test_bad_input_names_the_frame(model_path, tmp_path):
    path = tmp_path / "bad.extxyz"
    ase.io.write(path, [bulk("Cu"), Atoms("H2", positions=[[0, 0, 0], [0.01, 0, 0]])])
    with pytest.raises(SystemExit, match=r"bad.extxyz:1: .*closer than"):
        main(["predict", str(path), "-o", str(tmp_path / "o.extxyz"), "--model", model_path])
    assert not (tmp_path / "o.extxyz").exists()


@pytest.mark.parametrize("command", ["predict", "relax", "md"])
def test_unreadable_or_missing_input_file_is_named(model_path, tmp_path, command):
    bad = tmp_path / "broken.extxyz"
    bad.write_text("3\nLattice=\"3 0 0 0 3 0 0 0 3\" pbc=\"T T T\"\nFe 0 0 0\n")
    out = ["-o", str(tmp_path / "o.extxyz"), "--model", model_path]
    with pytest.raises(SystemExit, match=r"broken.extxyz: cannot read structure 0 .*1 atoms"):
        main([command, str(bad), *out])
    with pytest.raises(SystemExit, match=r"missing.xyz: no such file"):
        main([command, str(tmp_path / "missing.xyz"), *out])
    assert not (tmp_path / "o.extxyz").exists()


@pytest.mark.parametrize("command,module", [("train", "training"), ("convert", "convert")])
def test_lazy_dispatch(monkeypatch, command, module):
    seen = []
    fake = types.ModuleType(f"matris.{module}")
    fake.main = lambda argv: seen.append(argv) or {"not": "an exit code"}
    monkeypatch.setitem(sys.modules, f"matris.{module}", fake)
    assert main([command, "x.yaml", "--flag", "-o", "y"]) == 0
    assert seen == [["x.yaml", "--flag", "-o", "y"]]
    monkeypatch.setitem(sys.modules, f"matris.{module}", None)  # module missing
    with pytest.raises(SystemExit, match=f"matris.{module} is not available"):
        main([command, "x.yaml"])

