"""Every model shipped in src/matris/models/ loads by name and is what its experiments config
says it is (architecture, name); bundles are written with the umask's permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import matris
from matris.bundle import MODELS_DIR
from matris.training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPING = [p for p in sorted((ROOT / "experiments").glob("*.yaml"))
            if str(load_config(p).release).startswith("src/matris/models/")]


def test_every_shipped_bundle_has_a_config():
    written = {Path(load_config(p).release).name for p in SHIPPING}
    assert {p.name for p in MODELS_DIR.glob("*.npz")} <= written


@pytest.mark.parametrize("config_path", SHIPPING, ids=lambda p: p.stem)
def test_shipped_bundle_matches_its_config(config_path):
    cfg = load_config(config_path)
    bundle = ROOT / cfg.release
    if not bundle.exists():
        pytest.skip(f"{bundle.name} not trained yet")
    model = matris.load(bundle.stem)  # by name, as users load it
    expected = matris.get_config(cfg.model.preset, **cfg.model.overrides)
    assert model.config == expected
    assert model.metadata.get("name") == cfg.name


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_bundle_follows_the_umask(tmp_path, umask):
    model = matris.load()
    old = os.umask(umask)
    try:
        path = matris.save(model, tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary file left
    assert matris.load(path).metadata == model.metadata


def test_unseen_elements_warn_once_and_name_the_structure():
    """The shipped model lists its 88 training elements; a structure with one it never saw
    (Po) warns, naming the element and the structure, once per calculator; known ones do
    not warn; `matris.predict` names the structure by its index."""
    import warnings

    import numpy as np
    from ase import Atoms
    from ase.build import bulk

    from matris.calculator import UnseenElementWarning

    model = matris.load()
    assert len(model.trained_elements) == 88 and 84 not in model.trained_elements
    calc = matris.MatRISCalculator(model=model, task="e")
    po = Atoms("Po", cell=[3.35] * 3, pbc=True)
    po.calc = calc
    with pytest.warns(UnseenElementWarning, match=r"Po in MatRISCalculator"):
        assert np.isfinite(po.get_potential_energy())
    fe = bulk("Fe", "bcc", a=2.87)
    fe.calc = calc
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnseenElementWarning)
        po.positions += 0.01
        po.get_potential_energy()  # already reported by this calculator
        fe.get_potential_energy()
        matris.predict([fe], model, task="e", progress=False)
    with pytest.warns(UnseenElementWarning, match=r"Po in structure 1"):
        matris.predict([fe, Atoms("Po", cell=[3.35] * 3, pbc=True)], model, task="e",
                       progress=False)
