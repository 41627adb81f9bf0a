"""Fixed chemical descriptors of the elements H..Pu, for an optional embedding term.

MatRIS embeds an element through a learned table row only, so an element or a chemistry the
training set rarely shows (a pure metal seen only in compounds, say) gets an untrained row.
``element_descriptors()`` gives every element a fixed vector of facts shared across the
periodic table: period, group and block (one-hot), valence s/p/d/f electron counts in the
Madelung filling order, covalent radius, log mass, the free atom's ground-state magnetic
moment, and the symmetry of the element's reference crystal (all from Z and ase.data).  The
model adds a learned projection of it to the table row (config ``element_features``), so what
is learned about one element carries over to its neighbours in the table.

``element_chemistry()`` adds what sets the sign and size of a formation energy (config
``element_chemistry``): Pauling electronegativity and first ionisation energy.  The
electronegativity difference of two elements is the first-order term of their heat of
formation (Pauling's bond energies, Miedema's model), which the descriptors above do not
carry.
"""

from __future__ import annotations

import functools

import numpy as np

NUM_ELEMENTS = 94
_PERIOD_ENDS = (2, 10, 18, 36, 54, 86, 118)
_MADELUNG = ("1s", "2s", "2p", "3s", "3p", "4s", "3d", "4p", "5s", "4d", "5p", "6s", "4f", "5d",
             "6p", "7s", "5f", "6d", "7p")
_CAPACITY = {"s": 2, "p": 6, "d": 10, "f": 14}
_SYMMETRIES = ("bcc", "fcc", "hcp", "diamond", "molecule")


# Pauling electronegativity ("-": none defined, He, Ne, Ar) and first ionisation energy (eV) of
# Z = 1..94 in order, to two decimals (the standard tabulated values).
_PAULING = """
2.20 - 0.98 1.57 2.04 2.55 3.04 3.44 3.98 - 0.93 1.31 1.61 1.90 2.19 2.58 3.16 - 0.82 1.00
1.36 1.54 1.63 1.66 1.55 1.83 1.88 1.91 1.90 1.65 1.81 2.01 2.18 2.55 2.96 3.00 0.82 0.95
1.22 1.33 1.60 2.16 1.90 2.20 2.28 2.20 1.93 1.69 1.78 1.96 2.05 2.10 2.66 2.60 0.79 0.89
1.10 1.12 1.13 1.14 1.13 1.17 1.20 1.20 1.10 1.22 1.23 1.24 1.25 1.10 1.27 1.30 1.50 2.36
1.90 2.20 2.20 2.28 2.54 2.00 1.62 2.33 2.02 2.00 2.20 2.20 0.70 0.90 1.10 1.30 1.50 1.38
1.36 1.28"""
_IONISATION = """
13.60 24.59 5.39 9.32 8.30 11.26 14.53 13.62 17.42 21.56 5.14 7.65 5.99 8.15 10.49 10.36
12.97 15.76 4.34 6.11 6.56 6.83 6.75 6.77 7.43 7.90 7.88 7.64 7.73 9.39 6.00 7.90 9.79 9.75
11.81 14.00 4.18 5.69 6.22 6.63 6.76 7.09 7.12 7.36 7.46 8.34 7.58 8.99 5.79 7.34 8.61 9.01
10.45 12.13 3.89 5.21 5.58 5.54 5.47 5.53 5.58 5.64 5.67 6.15 5.86 5.94 6.02 6.11 6.18 6.25
5.43 6.83 7.55 7.86 7.83 8.44 8.97 8.96 9.23 10.44 6.11 7.42 7.29 8.42 9.32 10.75 4.07 5.28
5.38 6.31 5.89 6.19 6.27 6.03"""


def pauling_electronegativity() -> np.ndarray:
    """[94] Pauling electronegativity of Z = 1..94 (row Z - 1); NaN for He, Ne and Ar."""
    return np.array([np.nan if v == "-" else float(v) for v in _PAULING.split()])


def ionisation_energy() -> np.ndarray:
    """[94] first ionisation energy of Z = 1..94 in eV (row Z - 1)."""
    return np.array([float(v) for v in _IONISATION.split()])


@functools.cache
def element_chemistry() -> np.ndarray:
    """[94, 3] float64: electronegativity and first ionisation energy, each standardised over
    the elements that have one, and a flag for the elements without a Pauling value (their
    electronegativity column is 0, the mean)."""
    chi, ie = pauling_electronegativity(), ionisation_energy()
    missing = np.isnan(chi)
    chi = np.where(missing, 0.0, (chi - np.nanmean(chi)) / np.nanstd(chi))
    return np.stack([chi, _zscore(ie), missing.astype(np.float64)], axis=1)


def period(z: int) -> int:
    """1..7."""
    return next(i + 1 for i, end in enumerate(_PERIOD_ENDS) if z <= end)


def group(z: int) -> tuple[int, bool]:
    """(IUPAC group 1..18, f-block flag); La..Yb and Ac..No count as group 3, f-block."""
    p = period(z)
    i = z - (0 if p == 1 else _PERIOD_ENDS[p - 2])  # 1-based position in the period
    if p == 1:
        return (1 if i == 1 else 18), False
    if p <= 3:
        return (i if i <= 2 else i + 10), False
    if p <= 5:
        return i, False
    if 3 <= i <= 16:
        return 3, True
    return (i if i <= 2 else i - 14), False


def valence(z: int) -> np.ndarray:
    """[4] electrons in the outer ns, np, (n-1)d, (n-2)f shells (Madelung filling)."""
    n, left, filled = period(z), z, {}
    for orbital in _MADELUNG:
        take = min(left, _CAPACITY[orbital[1]])
        filled[orbital] = take
        left -= take
        if not left:
            break
    return np.array([filled.get(f"{n}s", 0), filled.get(f"{n}p", 0),
                     filled.get(f"{n - 1}d", 0), filled.get(f"{n - 2}f", 0)], np.float64)


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


@functools.cache
def element_descriptors() -> np.ndarray:
    """[94, 42] float64 descriptors of Z = 1..94 (row Z - 1); one-hots are 0/1, continuous
    columns standardised over the 94 elements."""
    from ase.data import atomic_masses, covalent_radii, ground_state_magnetic_moments, reference_states

    rows = []
    for z in range(1, NUM_ELEMENTS + 1):
        g, fblock = group(z)
        block = 3 if fblock else (0 if g <= 2 else (2 if g <= 12 else 1))
        state = (reference_states[z] or {}).get("symmetry")
        state = "molecule" if state in ("diatom", "atom") else state
        onehot = lambda k, n: np.eye(n)[k]  # noqa: E731
        rows.append(np.concatenate([
            onehot(period(z) - 1, 7), onehot(g - 1, 18), onehot(block, 4),
            valence(z) / np.array([2.0, 6.0, 10.0, 14.0]),
            [covalent_radii[z], np.log(atomic_masses[z]), ground_state_magnetic_moments[z] / 5.0],
            [float(state == s) for s in _SYMMETRIES], [float(state not in _SYMMETRIES)],
        ]))
    out = np.array(rows)
    out[:, 33] = _zscore(out[:, 33])
    out[:, 34] = _zscore(out[:, 34])
    return out
