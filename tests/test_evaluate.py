"""`matris eval` / matris.evaluate: errors against labels that differ from the model's own
predictions by known offsets."""

import json

import numpy as np
import pytest
from calc_helpers import small_model
from helpers import structures

import matris
from matris.cli import main
from matris.data.extxyz import write_extxyz
from matris.data.frames import EV_PER_A3_IN_GPA, make_frame
from matris.evaluate import evaluate_file, markdown

# per-structure offsets of the labels: energy meV/atom, forces meV/A, stress eV/A^3, magmoms muB
E_OFF = (10.0, 20.0, 30.0)
F_OFF = (-20.0, 40.0, 10.0)
S_OFF = 1e-3
M_OFF = 0.05


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """model path, extxyz path: fecr (split a), triclinic (a), molecule (b, no stress)."""
    tmp = tmp_path_factory.mktemp("eval")
    model_path = str(matris.save(small_model(smooth=True), tmp / "m.npz"))
    s = structures()
    atoms_list = [s["fecr"], s["triclinic"], s["molecule"]]
    preds = matris.predict(atoms_list, model_path, progress=False)
    frames = []
    for k, (atoms, p) in enumerate(zip(atoms_list, preds, strict=True)):
        n = len(atoms)
        frames.append(make_frame(
            atoms, energy=p["energy"] - E_OFF[k] * 1e-3 * n, forces=p["forces"] - F_OFF[k] * 1e-3,
            stress=p["stress"] - S_OFF if "stress" in p else None,
            magmoms=p["magmoms"] - M_OFF, info={"split": "a" if k < 2 else "b"}))
    path = tmp / "labelled.extxyz"
    write_extxyz(path, frames)
    return model_path, str(path), [len(a) for a in atoms_list]


def test_errors_are_the_label_offsets(labelled):
    model_path, path, sizes = labelled
    table = evaluate_file(path, model_path, by="split")
    assert list(table) == ["all", "a", "b"]
    e = table["all"]["energy"]
    assert (e["structures"], e["values"]) == (3, 3)
    assert e["mae"] == pytest.approx(np.mean(E_OFF), abs=1e-3)
    assert e["rmse"] == pytest.approx(np.sqrt(np.mean(np.square(E_OFF))), abs=1e-3)
    assert e["me"] == pytest.approx(np.mean(E_OFF), abs=1e-3)  # predictions above the labels
    f = table["all"]["forces"]
    weights = np.repeat(np.abs(F_OFF), [3 * n for n in sizes])
    assert f["values"] == 3 * sum(sizes)
    assert f["mae"] == pytest.approx(weights.mean(), abs=1e-3)
    assert f["rmse"] == pytest.approx(np.sqrt(np.mean(weights ** 2)), abs=1e-3)
    signed = np.repeat(F_OFF, [3 * n for n in sizes])
    assert f["me"] == pytest.approx(signed.mean(), abs=1e-3)
    s = table["all"]["stress"]  # the molecule has no cell: two structures, 9 components each
    assert (s["structures"], s["values"]) == (2, 18)
    assert s["mae"] == pytest.approx(S_OFF * EV_PER_A3_IN_GPA, rel=1e-4)
    assert table["all"]["magmoms"]["rmse"] == pytest.approx(M_OFF, abs=1e-5)
    assert s["me"] == pytest.approx(S_OFF * EV_PER_A3_IN_GPA, rel=1e-4)
    assert table["a"]["energy"]["mae"] == pytest.approx(15.0, abs=1e-3)
    assert table["b"]["energy"]["mae"] == pytest.approx(30.0, abs=1e-3)
    assert "stress" not in table["b"]
    text = markdown(table)
    assert "| b | energy | meV/atom | 1 | 1 |" in text


def test_cli_eval_writes_the_same_table(labelled, tmp_path, capsys):
    model_path, path, _ = labelled
    out = tmp_path / "errors.json"
    main(["eval", path, "--model", model_path, "--by", "split", "--json", str(out)])
    assert "| all | forces | meV/A |" in capsys.readouterr().out
    expected = evaluate_file(path, model_path, by="split")
    got = json.loads(out.read_text())
    assert list(got) == list(expected)
    for group, rows in expected.items():
        for name, row in rows.items():
            assert got[group][name]["mae"] == pytest.approx(row["mae"], rel=1e-6)


def test_eval_without_labels_names_the_problem(labelled, tmp_path):
    import ase.io

    model_path, _, _ = labelled
    path = tmp_path / "bare.extxyz"
    ase.io.write(path, [structures()["fecr"]], format="extxyz")
    with pytest.raises(SystemExit, match="no structure carries a label"):
        main(["eval", str(path), "--model", model_path])
