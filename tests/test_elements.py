"""Element descriptors (matris.nn.elements) and the model option that uses them."""

import numpy as np
from helpers import predict, setup, structures
from scipy.spatial.transform import Rotation

from matris.nn.elements import (
    element_chemistry,
    element_descriptors,
    group,
    ionisation_energy,
    pauling_electronegativity,
    period,
    valence,
)


def test_periodic_table_facts():
    assert [period(z) for z in (1, 2, 3, 11, 19, 26, 38, 55, 86, 87, 94)] == [1, 1, 2, 3, 4, 4, 5, 6, 6, 7, 7]
    assert group(1) == (1, False) and group(2) == (18, False) and group(8) == (16, False)
    assert group(26) == (8, False) and group(38) == (2, False) and group(40) == (4, False)
    assert group(57) == (3, True) and group(63) == (3, True) and group(71) == (3, False)
    assert group(79) == (11, False) and group(86) == (18, False) and group(92) == (3, True)
    np.testing.assert_array_equal(valence(26), [2, 0, 6, 0])   # Fe 4s2 3d6
    np.testing.assert_array_equal(valence(31), [2, 1, 10, 0])  # Ga 4s2 4p1 3d10
    np.testing.assert_array_equal(valence(63), [2, 0, 0, 7])   # Eu 6s2 4f7


def test_descriptors_distinguish_and_relate_elements():
    d = element_descriptors()
    assert d.shape == (94, 42) and np.all(np.isfinite(d))
    assert len({tuple(r) for r in d.round(9)}) == 94  # every element its own vector
    dist = lambda a, b: np.linalg.norm(d[a - 1] - d[b - 1])  # noqa: E731
    assert dist(20, 38) < dist(20, 8)   # Ca is nearer Sr than O
    assert dist(26, 27) < dist(26, 55)  # Fe nearer Co than Cs


def test_element_features_model_is_invariant_and_conservative():
    cfg, params, fn = setup("tiny", "float64", element_features=True)
    plain_cfg, plain, _ = setup("tiny", "float64")
    assert "descriptors" in params["atom_embedding"]
    assert "descriptors" not in plain["atom_embedding"]
    atoms = structures()["fecr"]
    perm = np.random.default_rng(0).permutation(len(atoms))
    a, _ = predict(cfg, params, fn, [atoms])
    b, _ = predict(cfg, params, fn, [atoms[perm]])
    n = len(atoms)
    assert abs(a["energy"][0] - b["energy"][0]) < 1e-9
    np.testing.assert_allclose(b["forces"][:n], a["forces"][perm], atol=1e-9)
    rot = Rotation.from_euler("xyz", [0.4, -0.9, 1.7]).as_matrix()
    turned = atoms.copy()
    turned.positions = atoms.positions @ rot.T
    turned.cell = atoms.cell.array @ rot.T
    c, _ = predict(cfg, params, fn, [turned])
    assert abs(a["energy"][0] - c["energy"][0]) < 1e-9
    np.testing.assert_allclose(c["forces"][:n], a["forces"][:n] @ rot.T, atol=1e-9)
    # forces are -dE/dx with the new embedding too (central differences, one coordinate)
    h, moved = 1e-4, [atoms.copy(), atoms.copy()]
    moved[0].positions[3, 1] += h
    moved[1].positions[3, 1] -= h
    ep, _ = predict(cfg, params, fn, [moved[0]])
    em, _ = predict(cfg, params, fn, [moved[1]])
    fd = -(ep["energy"][0] - em["energy"][0]) / (2 * h)
    assert abs(fd - a["forces"][3, 1]) < 1e-6 * max(1.0, abs(fd))


def test_chemistry_table_facts():
    chi, ie, c = pauling_electronegativity(), ionisation_energy(), element_chemistry()
    assert c.shape == (94, 3) and np.all(np.isfinite(c))
    assert np.nanargmax(chi) + 1 == 9 and np.argmax(ie) + 1 == 2  # F, He
    assert np.nanargmin(chi) + 1 == 87 and np.argmin(ie) + 1 == 55  # Fr, Cs
    assert list(np.flatnonzero(c[:, 2]) + 1) == [2, 10, 18]  # no Pauling value: He, Ne, Ar
    assert chi[7] == 3.44 and chi[25] == 1.83 and abs(ie[25] - 7.90) < 0.01  # O; Fe
    # standardised: oxygen far above iron, iron above the alkali metals
    assert c[7, 0] > c[25, 0] > c[10, 0] and c[7, 1] > c[25, 1] > c[10, 1]


def test_element_chemistry_term_is_exactly_additive():
    """With element_chemistry the embedding gains one learned projection, and nothing else
    changes: its kernel set to zero gives the model without the option, parameter for
    parameter; a non-zero kernel changes the energies."""
    cfg, params, fn = setup("tiny", "float64", element_features=True, element_chemistry=True)
    plain_cfg, _, plain_fn = setup("tiny", "float64", element_features=True)
    emb = params["atom_embedding"]
    assert set(emb["chemistry"]) == {"kernel"} and emb["chemistry"]["kernel"].shape[0] == 3
    zeroed = {**params, "atom_embedding": {**emb, "chemistry": {"kernel": 0 * emb["chemistry"]["kernel"]}}}
    without = {**params, "atom_embedding": {k: v for k, v in emb.items() if k != "chemistry"}}
    atoms = [structures()["mgo"], structures()["fecr"]]
    a, _ = predict(cfg, zeroed, fn, atoms)
    b, _ = predict(plain_cfg, without, plain_fn, atoms)
    c, _ = predict(cfg, params, fn, atoms)
    np.testing.assert_allclose(a["energy"], b["energy"], rtol=1e-12)
    np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-12)
    assert np.all(np.abs(c["energy"][:2] - a["energy"][:2]) > 1e-6)  # the two real graphs
