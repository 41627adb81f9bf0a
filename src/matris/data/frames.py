"""Labelled structures (`Frame`) and label normalisation shared by the readers.

Units inside the project: energy eV (total), forces eV/A, stress eV/A^3 with ASE's sign
(positive = tensile), magnetic moments muB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ase
import numpy as np

from ..graph.neighbors import validate_atoms

EV_PER_A3_IN_GPA = 160.21766208  # 1 eV/A^3 = 160.2 GPa


@dataclass(frozen=True, eq=False)
class Frame:
    """One structure with optional labels.

    atoms: ase.Atoms (no calculator attached); energy: total eV or None; forces: [n,3] eV/A or
    None; stress: [3,3] eV/A^3 (ASE sign) or None; magmoms: [n] muB or None;
    source: "path:index" naming the frame in messages; info: remaining metadata (e.g. "family").
    """

    atoms: ase.Atoms
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    magmoms: np.ndarray | None = None
    source: str = ""
    info: dict = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return len(self.atoms)


def stress_3x3(value, label: str = "") -> np.ndarray:
    """[3,3] float64 stress from Voigt-6 (ASE order xx yy zz yz xz xy), 3x3 or 9 numbers."""
    arr = np.asarray(value, np.float64).reshape(-1)
    if arr.size == 9:
        return arr.reshape(3, 3)
    if arr.size == 6:
        xx, yy, zz, yz, xz, xy = arr
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise ValueError(f"{label or 'frame'}: stress has {arr.size} numbers, "
                     "expected 6 (Voigt), 9 or 3x3")


def _checked(value, shape, name: str, label: str):
    """float64 array of `shape` (None passes through); raises on wrong size or non-finite."""
    if value is None:
        return None
    arr = np.asarray(value, np.float64)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{label or 'frame'}: {name} has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{label or 'frame'}: non-finite {name}")
    return arr.reshape(shape)


def make_frame(atoms: ase.Atoms, energy=None, forces=None, stress=None, magmoms=None,
               source: str = "", info: dict | None = None, validate: bool = True) -> Frame:
    """Frame with labels checked and normalised (stress to 3x3); atoms copied, calculator dropped.

    validate: run `validate_atoms` (NaN/inf, Z range, singular periodic cell, atoms < 0.1 A).
    Raises ValueError '<source>: <problem>'.
    """
    atoms = atoms.copy()
    atoms.calc = None
    if validate:
        validate_atoms(atoms, source)
    n = len(atoms)
    energy = _checked(energy, (), "energy", source)
    return Frame(
        atoms=atoms,
        energy=None if energy is None else float(energy),
        forces=_checked(forces, (n, 3), "forces", source),
        stress=None if stress is None else _checked(stress_3x3(stress, source), (3, 3),
                                                    "stress", source),
        magmoms=_checked(magmoms, (n,), "magmoms", source),
        source=source,
        info=dict(info or {}),
    )
