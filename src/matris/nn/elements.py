"""Fixed chemical descriptors of the elements H..Pu, for an optional embedding term.

MatRIS embeds an element through a learned table row only, so an element or a chemistry the
training set rarely shows (a pure metal seen only in compounds, say) gets an untrained row.
``element_descriptors()`` gives every element a fixed vector of facts shared across the
periodic table: period, group and block (one-hot), valence s/p/d/f electron counts in the
Madelung filling order, covalent radius, log mass, the free atom's ground-state magnetic
moment, and the symmetry of the element's reference crystal (all from Z and ase.data).  The
model adds a learned projection of it to the table row (config ``element_features``), so what
is learned about one element carries over to its neighbours in the table.
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
