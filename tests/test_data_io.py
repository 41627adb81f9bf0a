"""Extended-XYZ and MPtrj readers, Frames, Dataset splits and statistics."""

import gzip
import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from matris.data import (
    KBAR_TO_EV_A3,
    Dataset,
    Frame,
    iter_json_object,
    make_frame,
    read_extxyz,
    read_frames,
    read_mptrj,
    stress_3x3,
    write_extxyz,
)

HEADER = 'Lattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3{props} {info} pbc="T T T"'


def xyz_frame(rows, props="", info=""):
    return "\n".join([str(len(rows)), HEADER.format(props=props, info=info)] + rows) + "\n"


FE2 = ["Fe 0 0 0", "Fe 1.5 1.5 1.5"]


def test_stress_formats():
    full = np.array([[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]])
    assert np.array_equal(stress_3x3([1, 2, 3, 4, 5, 6]), full)  # xx yy zz yz xz xy
    assert np.array_equal(stress_3x3(full.reshape(-1)), full)
    assert np.array_equal(stress_3x3(full), full)
    with pytest.raises(ValueError, match="stress has 4 numbers"):
        stress_3x3([1, 2, 3, 4])


def test_extxyz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    frames = []
    for k in range(3):
        atoms = bulk("FeCo", "cesiumchloride", a=2.9) * (1, 1, 2)
        atoms.rattle(0.05, seed=k)
        n = len(atoms)
        frames.append(make_frame(
            atoms, energy=-8.0 - k, forces=rng.normal(size=(n, 3)) if k != 1 else None,
            stress=rng.normal(size=(3, 3)) * 0.01, magmoms=rng.normal(size=n) if k == 2 else None,
            source=f"gen:{k}", info={"family": f"fam{k % 2}", "temperature": 300.0 + k}))
    path = tmp_path / "frames.extxyz.gz"
    write_extxyz(path, frames)
    back = read_extxyz(path)
    assert [f.source for f in back] == [f"{path}:{k}" for k in range(3)]
    for a, b in zip(frames, back, strict=False):
        assert np.array_equal(a.atoms.numbers, b.atoms.numbers)
        np.testing.assert_allclose(a.atoms.positions, b.atoms.positions, atol=1e-7)
        np.testing.assert_allclose(a.atoms.cell.array, b.atoms.cell.array, atol=1e-7)
        assert a.energy == pytest.approx(b.energy, abs=1e-12)
        np.testing.assert_allclose(a.stress, b.stress, atol=1e-12)
        for name in ("forces", "magmoms"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_allclose(x, y, atol=1e-7)
        assert b.info["family"] == a.info["family"] and b.info["temperature"] == pytest.approx(
            a.info["temperature"])
        assert not any(k.startswith("REF_") for k in b.info) and "REF_forces" not in b.atoms.arrays
    assert read_extxyz(path, index="1:3")[1].source == f"{path}:2"


def test_extxyz_label_formats(tmp_path):
    text = (
        # 1. calculator results: energy, forces, 9-number stress
        xyz_frame(["Fe 0 0 0 0.1 0.2 0.3", "Fe 1.5 1.5 1.5 -0.1 -0.2 -0.3"], ":forces:R:3",
                  'energy=-1.5 stress="1 6 5 6 2 4 5 4 3"')
        # 2. REF_ keys win over calculator keys; Voigt-6 stress; magmoms
        + xyz_frame(["Fe 0 0 0 2.0", "Fe 1.5 1.5 1.5 2.5"], ":REF_magmoms:R:1",
                    'REF_energy=-2.5 energy=99.0 REF_stress="1 2 3 4 5 6"')
        # 3. no labels at all
        + xyz_frame(FE2)
        # 4. custom keys
        + xyz_frame(["Fe 0 0 0 1 1 1", "Fe 1.5 1.5 1.5 -1 -1 -1"], ":dft_f:R:3",
                    'dft_e=-7.0 dft_s="1 2 3 4 5 6 7 8 9"'))
    path = tmp_path / "labels.xyz"
    path.write_text(text)
    f = read_extxyz(path)
    full = np.array([[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]])
    assert f[0].energy == -1.5 and np.allclose(f[0].stress, full)
    assert np.allclose(f[0].forces, [[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]])
    assert f[1].energy == -2.5 and np.allclose(f[1].stress, full)
    assert np.allclose(f[1].magmoms, [2.0, 2.5]) and f[1].forces is None
    assert f[2].energy is None and f[2].forces is None and f[2].stress is None
    assert f[3].energy is None
    g = read_extxyz(path, index="3", energy_key="dft_e", forces_key="dft_f", stress_key="dft_s")
    assert g[0].energy == -7.0 and np.allclose(g[0].forces, [[1, 1, 1], [-1, -1, -1]])
    assert np.allclose(g[0].stress, np.arange(1, 10).reshape(3, 3)) and g[0].source.endswith(":3")
    assert "dft_e" not in g[0].info and "dft_f" not in g[0].atoms.arrays


BAD_XYZ = {
    "malformed": (["Fe 0 0 0", "Fe 1.5 abc 1.5"], "", "malformed extxyz"),
    "nan position": (["Fe 0 0 0", "Fe 1.5 nan 1.5"], "", "non-finite position of atom 1"),
    "too close": (["Fe 0 0 0", "Fe 0.05 0 0"], "", "closer than 0.1"),
    "close via image": (["Fe 0.01 0 0", "Fe 2.96 0 0"], "", "closer than 0.1"),
    "Z=0": (["X 0 0 0", "Fe 1.5 1.5 1.5"], "", "atomic number 0"),
    "bad forces": (["Fe 0 0 0 1 1 nan", "Fe 1.5 1.5 1.5 1 1 1"], ":forces:R:3", "non-finite"),
    "bad stress": (FE2, "", 'REF_stress="1 2 3 4"', "stress has 4 numbers"),
}


@pytest.mark.parametrize("case", BAD_XYZ)
def test_extxyz_bad_input_names_file_and_index(tmp_path, case):
    rows, props, *info, message = BAD_XYZ[case]
    path = tmp_path / "bad.extxyz"
    path.write_text(xyz_frame(FE2) + xyz_frame(rows, props, *info))
    with pytest.raises(ValueError, match=f"bad.extxyz:1: .*{message}"):
        read_extxyz(path)


def test_extxyz_singular_cell(tmp_path):
    path = tmp_path / "cell.extxyz"
    path.write_text(xyz_frame(FE2).replace('Lattice="3 0 0 0 3 0 0 0 3"',
                                           'Lattice="3 0 0 6 0 0 0 0 3"'))
    with pytest.raises(ValueError, match="cell.extxyz:0: singular"):
        read_extxyz(path)


def site(el, abc, matrix):
    return {"species": [{"element": el, "occu": 1}], "abc": list(abc),
            "xyz": list(np.asarray(abc) @ matrix), "label": el, "properties": {}}


def mptrj_entry(a, stress_kbar, forces, magmom=None, use_xyz=True):
    matrix = np.eye(3) * a
    sites = [site("Li", [0, 0, 0], matrix), site("F", [0.5, 0.5, 0.5], matrix)]
    if not use_xyz:
        for s in sites:
            del s["xyz"]
    return {"structure": {"@module": "pymatgen.core.structure", "@class": "Structure",
                          "lattice": {"matrix": matrix.tolist(), "pbc": [True, True, True]},
                          "sites": sites, "properties": {}},
            "uncorrected_total_energy": -10.0 * a, "corrected_total_energy": -11.0 * a,
            "energy_per_atom": -5.0 * a, "force": forces, "stress": stress_kbar,
            "magmom": magmom, "mp_id": "mp-1"}


def write_mptrj(path):
    data = {
        "mp-1": {"mp-1-0-0": mptrj_entry(3.0, [[10.0, 1.0, 0], [1.0, 20.0, 0], [0, 0, -30.0]],
                                         [[0.1, 0, 0], [-0.1, 0, 0]], [0.5, -0.5]),
                 "mp-1-1-0": mptrj_entry(3.1, np.zeros((3, 3)).tolist(), [[0, 0, 0]] * 2,
                                         use_xyz=False)},
        "mp-2": {"mp-2-0-0": mptrj_entry(3.2, np.eye(3).tolist(), [[0, 0.2, 0], [0, -0.2, 0]])},
    }
    text = json.dumps(data, indent=1)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return data


@pytest.mark.parametrize("name", ["mptrj.json", "mptrj.json.gz"])
def test_mptrj_stream(tmp_path, name):
    path = tmp_path / name
    data = write_mptrj(path)
    frames = read_frames(path)
    assert [f.info["frame_id"] for f in frames] == ["mp-1-0-0", "mp-1-1-0", "mp-2-0-0"]
    assert [f.info["family"] for f in frames] == ["mp-1", "mp-1", "mp-2"]
    assert frames[0].source == f"{path}:mp-1/mp-1-0-0"
    f = frames[0]
    assert list(f.atoms.get_chemical_symbols()) == ["Li", "F"]
    assert np.allclose(f.atoms.positions[1], [1.5, 1.5, 1.5]) and np.all(f.atoms.pbc)
    assert f.energy == -30.0 and np.allclose(f.magmoms, [0.5, -0.5])
    # 10 kBar compressive (VASP +) = 1 GPa = -1/160.2 eV/A^3 in ASE's (tensile +) sign
    assert f.stress[0, 0] == pytest.approx(-1.0 / 160.21766208)
    assert f.stress[2, 2] == pytest.approx(3.0 / 160.21766208)
    assert np.allclose(f.stress, np.asarray(data["mp-1"]["mp-1-0-0"]["stress"]) * KBAR_TO_EV_A3)
    assert np.allclose(frames[1].atoms.positions[1], [1.55, 1.55, 1.55])  # from abc
    assert frames[1].magmoms is None
    corrected = read_mptrj(path, energy="corrected", limit=2)
    assert len(corrected) == 2 and corrected[1].energy == pytest.approx(-11.0 * 3.1)


def test_json_stream_matches_json_load(tmp_path):
    path = tmp_path / "m.json"
    data = write_mptrj(path)
    data["x"] = 12345  # a bare number at the very end of the file
    path.write_text(json.dumps(data))
    for chunk in (1, 7, 1 << 20):
        assert dict(iter_json_object(path, chunk_size=chunk)) == data


def test_mptrj_bad_input(tmp_path):
    path = tmp_path / "broken.json"
    write_mptrj(path)
    path.write_text(path.read_text()[:-40])
    with pytest.raises(ValueError, match="broken.json: member 1: malformed JSON"):
        read_mptrj(path)
    data = {"mp-9": {"f0": mptrj_entry(3.0, np.zeros((3, 3)).tolist(), [[0, 0, 0]] * 2)}}
    data["mp-9"]["f0"]["structure"]["sites"][1]["xyz"] = [0.02, 0, 0]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="broken.json:mp-9/f0: .*closer than 0.1"):
        read_mptrj(path)
    data["mp-9"]["f0"]["structure"]["sites"][1]["species"][0]["element"] = "Xx"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="broken.json:mp-9/f0"):
        read_mptrj(path)


def family_dataset():
    rng = np.random.default_rng(1)
    frames = []
    for k in range(40):
        atoms = bulk("Cu", "fcc", a=3.6) if k % 3 else bulk("NaCl", "rocksalt", a=5.6)
        per_atom = {11: -1.3, 17: -1.9, 29: -3.7}
        energy = sum(per_atom[z] for z in atoms.numbers)
        info = {"family": f"f{k // 4}"} if k < 32 else {}
        frames.append(Frame(atoms=atoms, energy=energy, forces=rng.normal(size=(len(atoms), 3)),
                            source=f"mem:{k}", info=info))
    return Dataset(frames, cutoff=6.0, three_body_cutoff=4.0)


def test_split_keeps_families_together_and_is_seeded():
    ds = family_dataset()
    parts = ds.split_indices((0.5, 0.25, 0.25), seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(ds)))
    fam = [ds[i].info.get("family", i) for i in range(len(ds))]
    owner = {}
    for p, idx in enumerate(parts):
        for i in idx:
            assert owner.setdefault(fam[i], p) == p
    assert all(len(p) > 0 for p in parts) and abs(len(parts[0]) - 20) <= 4
    again = ds.split_indices((0.5, 0.25, 0.25), seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=False))
    other = ds.split_indices((0.5, 0.25, 0.25), seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=False))


def test_statistics_and_reference_energies():
    ds = family_dataset()
    train = ds.split(seed=0)[0]
    stats = ds.statistics()
    sizes = np.array([ds.graph(i).sizes for i in range(len(ds))])
    assert stats.atoms_max == 2 and stats.edges_max == sizes[:, 1].max()
    assert stats.angles_mean == pytest.approx(sizes[:, 3].mean())
    forces = np.concatenate([f.forces for f in ds.frames])
    assert stats.force_rms == pytest.approx(np.sqrt(np.mean(forces**2)))
    w = stats.reference_energies
    assert w.shape == (94,)
    assert w[28] == pytest.approx(-3.7) and w[10] + w[16] == pytest.approx(-3.2)
    assert np.count_nonzero(w) <= 3 and w[0] == 0.0
    assert train.graph(0) is ds.graph(int(ds.split_indices(seed=0)[0][0]))  # shared cache


def test_graph_cache_per_cutoff():
    ds = family_dataset()
    assert ds.graph(0) is ds.graph(0)
    assert ds.graph(0, 5.0, 3.0).n_edges < ds.graph(0).n_edges
    assert ds.graph(0).label == "mem:0"


def test_frame_labels_checked():
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])
    with pytest.raises(ValueError, match="src:3: forces has shape"):
        make_frame(atoms, forces=np.zeros((3, 3)), source="src:3")
    with pytest.raises(ValueError, match="src:3: non-finite energy"):
        make_frame(atoms, energy=np.nan, source="src:3")


@pytest.mark.parametrize("suffix", ["", ".gz", ".xz"])
def test_read_structures_plain_and_compressed(tmp_path, suffix):
    """`read_structures` (predict / relax / md input) reads compressed files of any format
    ase knows, frame selection included, with the same result as the plain file."""
    import lzma

    import ase.io

    from matris.data.extxyz import read_structures

    frames = [bulk("Cu", "fcc", a=3.6 + 0.01 * k) * (1, 1, k + 1) for k in range(4)]
    plain = tmp_path / "in.extxyz"
    ase.io.write(plain, frames)
    poscar = tmp_path / "POSCAR"
    ase.io.write(poscar, frames[2], format="vasp")
    paths = []
    for src in (plain, poscar):
        path = tmp_path / (src.name + suffix)
        if suffix:
            opener = {".gz": gzip.open, ".xz": lzma.open}[suffix]
            with opener(path, "wb") as out:
                out.write(src.read_bytes())
        paths.append(path)
    got = read_structures(paths[0], "1:3")
    assert [len(a) for a in got] == [2, 3]
    assert np.allclose(got[1].cell, frames[2].cell)
    (single,) = read_structures(paths[1])
    assert np.allclose(single.positions, frames[2].positions, atol=1e-6)
    assert len(read_structures(paths[0])) == 4
