"""Benchmark structures: bcc Fe-Cr random alloy and rock-salt MgO supercells, 16 atoms doubling.

Both are periodic crystals with slightly rattled positions (0.01 A), so the counts of edges,
bonds and angles per atom are those of the perfect lattice (no shell sits within 0.04 A of
r_c = 6 A or r_3 = 4 / 4.5 A) and grow exactly linearly with the atom count:

=========  ===========  ==========  ===============  ===============
system     a (A)        edges/atom  angles/atom r_3=4  angles/atom r_3=4.5
=========  ===========  ==========  ===============  ===============
Fe-Cr bcc  2.87 (75/25)  64          182              650
MgO        4.21          92          650              992
=========  ===========  ==========  ===============  ===============

Standard library + numpy + ase only: the reference and teacher environments import it too.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk

SYSTEMS = ("fecr", "mgo")
CR_FRACTION = 0.25
SEED = 20240711


def _reps(cell_atoms: int, n_atoms: int) -> tuple[int, int, int]:
    """Repetitions (i, j, k) of a cubic cell with ``cell_atoms`` atoms giving ``n_atoms``;
    doubling alternates over the axes so the supercell stays as close to cubic as possible."""
    if n_atoms % cell_atoms:
        raise ValueError(f"{n_atoms} atoms is not a multiple of the {cell_atoms}-atom cell")
    cells = n_atoms // cell_atoms
    if cells & (cells - 1):
        raise ValueError(f"{n_atoms} atoms: need a power-of-two number of cubic cells")
    reps = [1, 1, 1]
    for step in range(cells.bit_length() - 1):
        reps[2 - step % 3] *= 2
    return tuple(sorted(reps))


def fecr(n_atoms: int) -> Atoms:
    """bcc Fe(1-x)Cr(x), x = 0.25, random occupation, a = 2.87 A."""
    atoms = bulk("Fe", "bcc", a=2.87, cubic=True) * _reps(2, n_atoms)
    rng = np.random.default_rng(SEED + n_atoms)
    numbers = atoms.get_atomic_numbers()
    numbers[rng.permutation(n_atoms)[: round(CR_FRACTION * n_atoms)]] = 24
    atoms.set_atomic_numbers(numbers)
    atoms.rattle(0.01, seed=SEED)
    return atoms


def mgo(n_atoms: int) -> Atoms:
    """Rock-salt MgO, a = 4.21 A (the 8-atom cubic cell repeated)."""
    atoms = bulk("MgO", "rocksalt", a=4.21, cubic=True) * _reps(8, n_atoms)
    atoms.rattle(0.01, seed=SEED)
    return atoms


def make(system: str, n_atoms: int) -> Atoms:
    if system == "fecr":
        return fecr(n_atoms)
    if system == "mgo":
        return mgo(n_atoms)
    raise ValueError(f"unknown system {system!r}; known: {SYSTEMS}")


def doubling(start: int = 16, stop: int = 1 << 20) -> list[int]:
    """16, 32, 64, ... up to ``stop``."""
    out, n = [], start
    while n <= stop:
        out.append(n)
        n *= 2
    return out


def structure_path(folder: str, system: str, n_atoms: int) -> str:
    return f"{folder}/{system}-{n_atoms}.extxyz"


def write_structures(folder: str, systems, sizes) -> None:
    """Write every (system, size) once as extxyz, so all environments read identical atoms."""
    import os

    import ase.io

    os.makedirs(folder, exist_ok=True)
    for system in systems:
        for n in sizes:
            path = structure_path(folder, system, n)
            if not os.path.exists(path):
                ase.io.write(path, make(system, n), format="extxyz")


def read_structure(folder: str, system: str, n_atoms: int) -> Atoms:
    import ase.io

    return ase.io.read(structure_path(folder, system, n_atoms), format="extxyz")
