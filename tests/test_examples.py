"""The flagship Fe-Cr example runs end to end (16 atoms, a few steps) and writes its outputs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fecr_example_writes_outputs(tmp_path):
    fecr = _load_example("fecr_1500k")
    summary = fecr.main(["--size", "2", "--equil-steps", "5", "--steps", "10", "--loginterval",
                         "5", "--out", str(tmp_path)])
    for name in ("trajectory.traj", "rdf.png", "rdf.csv", "msd.png", "msd.csv",
                 "temperature.png", "temperature.csv", "md.log", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["atoms"] == 16 and summary["production_steps"] == 10
    assert saved["compilations_during_production"] == 0
    assert np.isfinite(saved["wall_s_per_step"]) and saved["wall_s_per_step"] > 0
    assert 1.5 < saved["rdf_first_peak_A"] < 3.5   # bcc first neighbours near 2.5 A
    assert all(np.isfinite(v) for v in saved["msd_final_A2"].values())
    msd = np.loadtxt(tmp_path / "msd.csv", delimiter=",", skiprows=1)
    assert msd.shape == (3, 3) and np.all(msd[0, 1:] == 0.0)
