"""The shipped MPtrj-like data set (data/mptrj_like.extxyz.gz) is intact and documented.

Runs in the main venv (no teacher potentials needed).  Checks the file against the
counts documented in data/README.md, the family-disjoint splits, the label contract
(REF_energy / REF_forces / REF_stress / REF_magmoms, units eV, eV/A, eV/A^3 ASE sign,
muB), physical consistency (forces sum to ~0, symmetric stress) and the finite-strain
stress check recorded in data/stress_check.json.
"""

from __future__ import annotations

import collections
import gzip
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
EXTXYZ = DATA / "mptrj_like.extxyz.gz"
README = DATA / "README.md"
STRESS_CHECK = DATA / "stress_check.json"

SPLITS = ("train", "val", "test")
KINDS = {"relaxed", "relax_traj", "eos", "strain", "rattle", "md300", "md1000", "md1500",
         "vacancy_relaxed"}


def _read_all(path: Path):
    """ase.io.read(path, ":") of the gzipped file, decompressed in memory first.

    ase.io.read/iread on a .gz path seeks back in the gzip stream once per frame, which
    restarts decompression: ~70 s for this file instead of ~1.5 s.
    """
    import ase.io

    with gzip.open(path, "rt") as fh:
        return ase.io.read(io.StringIO(fh.read()), ":", format="extxyz")


@pytest.fixture(scope="module")
def frames():
    return _read_all(EXTXYZ)


@pytest.fixture(scope="module")
def readme_counts() -> dict[str, dict[str, int]]:
    text = README.read_text()
    m = re.search(r"<!-- split-counts:begin -->(.*?)<!-- split-counts:end -->", text, re.S)
    assert m, "data/README.md lacks the split-counts table"
    counts = {}
    for line in m.group(1).strip().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in SPLITS + ("total",):
            counts[cells[0]] = {"frames": int(cells[1]), "families": int(cells[2]),
                                "atoms": int(cells[3])}
    assert set(counts) == set(SPLITS) | {"total"}
    return counts


def _stress(atoms) -> np.ndarray:
    return np.asarray(atoms.info["REF_stress"], dtype=np.float64).reshape(3, 3)


def test_file_small_enough():
    assert EXTXYZ.stat().st_size < 20e6


def test_counts_match_readme(frames, readme_counts):
    for split in SPLITS:
        sel = [a for a in frames if a.info["split"] == split]
        got = {"frames": len(sel), "families": len({a.info["family"] for a in sel}),
               "atoms": sum(len(a) for a in sel)}
        assert got == readme_counts[split], split
    total = {"frames": len(frames), "families": len({a.info["family"] for a in frames}),
             "atoms": sum(len(a) for a in frames)}
    assert total == readme_counts["total"]
    assert 2500 <= len(frames) <= 6000
    # ~80/10/10 by frames
    frac = {s: readme_counts[s]["frames"] / len(frames) for s in SPLITS}
    assert 0.7 <= frac["train"] <= 0.9 and 0.05 <= frac["val"] <= 0.15
    assert 0.05 <= frac["test"] <= 0.15


def test_splits_are_family_disjoint(frames):
    split_of = collections.defaultdict(set)
    for a in frames:
        assert a.info["split"] in SPLITS
        split_of[a.info["family"]].add(a.info["split"])
    assert all(len(s) == 1 for s in split_of.values()), {
        f: s for f, s in split_of.items() if len(s) > 1}
    # Fe-Cr compositions (families) reach every split
    fecr = {s for f, ss in split_of.items() if f.startswith("fecr:") for s in ss}
    assert fecr == set(SPLITS)


def test_elemental_crystals_are_train_and_val_test_elements_seen(frames):
    """Every element's elemental crystal is a training frame (the reference states of
    formation energies, as in MPtrj); every element of val/test occurs in train."""
    elemental = {a.info["split"] for a in frames if len(set(a.numbers)) == 1}
    assert elemental == {"train"}
    train_z = {z for a in frames if a.info["split"] == "train" for z in a.numbers}
    other_z = {z for a in frames if a.info["split"] != "train" for z in a.numbers}
    assert other_z <= train_z, sorted(other_z - train_z)


def test_every_element_in_train_compounds(frames):
    """Every element but the noble gases is in at least two train compound families
    (experiments/coverage_dataset.py): no val/test compound holds an element the model has
    seen only as its elemental crystal."""
    families = collections.defaultdict(set)
    for a in frames:
        if a.info["split"] == "train" and len(set(a.numbers)) > 1:
            for z in set(a.numbers):
                families[int(z)].add(a.info["family"])
    noble = {2, 10, 18, 36, 54, 86}
    present = {int(z) for a in frames for z in a.numbers} - noble
    few = {z: len(families[z]) for z in present if len(families[z]) < 2}
    assert not few, few


def _reduced(atoms) -> tuple:
    counts = collections.Counter(atoms.get_chemical_symbols())
    g = np.gcd.reduce(list(counts.values()))
    return tuple(sorted((el, n // g) for el, n in counts.items()))


def test_substituted_families_are_train_and_new_compositions(frames):
    """The element-substituted supplement (experiments/substitute_dataset.py) is train-only
    and never repeats a val/test composition, in any prototype."""
    held_out = {_reduced(a) for a in frames if a.info["split"] != "train"}
    sub = [a for a in frames if a.info["family"].startswith("substituted:")]
    assert len({a.info["family"] for a in sub}) >= 100
    for a in sub:
        assert a.info["split"] == "train", a.info["family"]
        assert _reduced(a) not in held_out, a.info["family"]


def test_metadata(frames):
    ids = [int(a.info["frame_id"]) for a in frames]
    assert ids == list(range(len(frames)))
    for a in frames:
        assert a.info["kind"] in KINDS
        assert re.fullmatch(r"[a-z0-9]+:\S+", a.info["family"]), a.info["family"]
        assert a.calc is None
        assert a.pbc.all()
        assert a.get_volume() > 1.0
        assert 2 <= len(a) <= 64
    # the flagship Fe-Cr example: hundreds of frames (10 % since the substituted families)
    fecr = sum(a.info["family"].startswith("fecr:") for a in frames)
    assert fecr >= 400 and fecr / len(frames) >= 0.08


def test_labels_present_and_finite(frames):
    for a in frames:
        n = len(a)
        tag = f"frame {a.info['frame_id']}"
        e = a.info["REF_energy"]
        assert np.isfinite(e) and isinstance(float(e), float), tag
        assert np.asarray(a.info["REF_stress"]).size == 9, tag
        assert a.arrays["REF_forces"].shape == (n, 3), tag
        assert a.arrays["REF_magmoms"].shape == (n,), tag
        for v in (_stress(a), a.arrays["REF_forces"], a.arrays["REF_magmoms"]):
            assert np.all(np.isfinite(v)), tag
        assert np.abs(a.arrays["REF_forces"]).max() <= 50.0, tag
        assert a.arrays["REF_magmoms"].min() >= -1e-6, tag  # CHGNet: magnitudes
        assert -20.0 < e / n < 2.0, tag


def test_forces_sum_to_zero(frames):
    for a in frames:
        total = a.arrays["REF_forces"].sum(axis=0)
        assert np.abs(total).max() <= 1e-3 * np.sqrt(len(a)), (a.info["frame_id"], total)


def test_stress_symmetric(frames):
    for a in frames:
        s = _stress(a)
        assert np.abs(s - s.T).max() <= 1e-6 + 1e-4 * np.abs(s).max(), a.info["frame_id"]


def test_stress_check_record(frames):
    record = json.loads(STRESS_CHECK.read_text())
    entries = record["entries"]
    ids = {e["frame_id"] for e in entries}
    assert len(ids) >= 6
    fams = {e["family"] for e in entries}
    assert len(fams) >= 6 and any(f.startswith("fecr:") for f in fams)
    for fid in ids:
        comps = {e["component"] for e in entries if e["frame_id"] == fid}
        assert {"xx", "xy"} <= comps
    index = {"xx": (0, 0), "yy": (1, 1), "zz": (2, 2), "xy": (0, 1), "xz": (0, 2), "yz": (1, 2)}
    for e in entries:
        a = frames[e["frame_id"]]
        assert a.info["family"] == e["family"]
        assert 1e-4 <= e["h"] <= 1e-3
        assert e["volume"] == pytest.approx(a.get_volume(), rel=1e-6)
        # the json records the label stored in the file
        assert e["sigma_label_eV_A3"] == pytest.approx(_stress(a)[index[e["component"]]],
                                                      abs=1e-9)
        # sigma_fd = (E+ - E-) / (2 h V) is what was stored
        fd = (e["E_plus"] - e["E_minus"]) / (2 * e["h"] * e["volume"])
        assert e["sigma_fd_eV_A3"] == pytest.approx(fd, rel=1e-9, abs=1e-12)
        lab = e["sigma_label_eV_A3"]
        assert abs(e["sigma_fd_eV_A3"] - lab) <= 1e-4 + 0.03 * abs(lab), e
        if abs(lab) > 1e-3:
            assert np.sign(e["sigma_fd_eV_A3"]) == np.sign(lab), e


def _get_reader():
    data = pytest.importorskip("matris.data")
    read_extxyz = getattr(data, "read_extxyz", None)
    if read_extxyz is None:
        pytest.skip("matris.data.read_extxyz not available yet")
    return read_extxyz


def _compare_reader(got, frames):
    assert len(got) == len(frames)
    for k in (0, len(frames) // 2, len(frames) - 1):
        fr, a = got[k], frames[k]
        if hasattr(fr, "energy"):
            assert fr.energy == pytest.approx(a.info["REF_energy"])
        if hasattr(fr, "forces"):
            np.testing.assert_allclose(np.asarray(fr.forces).reshape(-1, 3),
                                       a.arrays["REF_forces"])
        if hasattr(fr, "stress"):
            np.testing.assert_allclose(np.asarray(fr.stress).reshape(3, 3), _stress(a))
        if hasattr(fr, "magmoms"):
            np.testing.assert_allclose(np.asarray(fr.magmoms).reshape(-1),
                                       a.arrays["REF_magmoms"])


def test_project_reader(frames, tmp_path):
    """The project's reader (matris.data.read_extxyz) reads the shipped content.

    Fed a decompressed copy: through ase, a .gz path costs ~70 s (see _read_all); the
    .gz path itself is covered by the slow test below.
    """
    read_extxyz = _get_reader()
    plain = tmp_path / "mptrj_like.extxyz"
    with gzip.open(EXTXYZ, "rb") as src:
        plain.write_bytes(src.read())
    _compare_reader(read_extxyz(plain), frames)


@pytest.mark.slow
def test_project_reader_gz(frames):
    """matris.data.read_extxyz on the .gz path directly (slow while it seeks in gzip)."""
    read_extxyz = _get_reader()
    _compare_reader(read_extxyz(EXTXYZ), frames)


def test_no_pair_inside_the_core_repulsion(frames):
    """No pair of any frame is closer than the shipped model's core-repulsion radius (0.5 of
    the covalent-radius sum), so that term adds exactly nothing on the data set
    (`matris.nn.repulsion`); the closest pair is at 0.58 of it (U-U, 1500 K MD)."""
    from ase.data import covalent_radii
    from matscipy.neighbours import neighbour_list

    import matris

    fraction = matris.load().config.core_repulsion
    closest = np.inf
    for atoms in frames:
        i, j, d = neighbour_list("ijd", atoms, 3.0)
        ratio = d / (covalent_radii[atoms.numbers[i]] + covalent_radii[atoms.numbers[j]])
        closest = min(closest, ratio.min(initial=np.inf))
    assert 0 < fraction < closest < 0.7
