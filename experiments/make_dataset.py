#!/usr/bin/env python
"""Generate the embedded MPtrj-like training set ``data/mptrj_like.extxyz.gz``.

This is NOT DFT.  Labels come from two universal potentials whose weights ship
inside their pip wheels (no download at run time):

* SevenNet-0 (``sevenn``, checkpoint SevenNet_0__11Jul2024, trained on MPtrj):
  total energy (eV), forces (eV/A), stress (eV/A^3, ASE sign: positive = tensile);
* CHGNet 0.3.0 (``chgnet``, trained on MPtrj): magnetic moments (muB, magnitudes).

Both were trained on MPtrj (PBE/PBE+U relaxation trajectories of Materials
Project), so their labels are a smooth, self-consistent stand-in for MPtrj that
can be shipped in the repo and regenerated offline.

Run it in the teacher venv (never in the main venv), with ONE thread::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv-teacher/bin/python \
        experiments/make_dataset.py --seed 20240711

``--pilot K`` generates only the first K families of every prototype group (and
K Fe-Cr compositions) into ``--outdir`` to measure the per-frame cost.  ``--resplit``
reapplies the split rule to an existing file.  The shipped file also holds the
element-substituted train families that ``experiments/substitute_dataset.py`` appends.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import collections  # noqa: E402
import gzip  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
import zlib  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

warnings.filterwarnings("ignore")

import ase  # noqa: E402
import ase.io  # noqa: E402
from ase import Atoms, units  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.data import atomic_masses, atomic_numbers, chemical_symbols, covalent_radii  # noqa: E402
from ase.filters import FrechetCellFilter  # noqa: E402
from ase.md.langevin import Langevin  # noqa: E402
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary  # noqa: E402
from ase.neighborlist import neighbor_list  # noqa: E402
from ase.optimize import FIRE  # noqa: E402
from ase.spacegroup import crystal  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------
# generation settings (the defaults ARE the shipped data set)
# ----------------------------------------------------------------------------
RELAX_STEPS = 12  # FIRE + FrechetCellFilter steps after the E-V scan
RELAX_FMAX = 0.02
EOS_SCALES = (0.90, 0.95, 1.00, 1.05, 1.10)  # linear scale factors of the guess
N_STRAIN = 1
N_RATTLE = 2
RATTLE_TARGET_ATOMS = 8
MD_TARGET_ATOMS = 12
MD_PROB = 0.35  # fraction of (non Fe-Cr) families that get a short MD trajectory
MD_T_CHOICES = (300, 1000, 1500)
MD_T_PROBS = (0.4, 0.35, 0.25)
MD_INTERVAL = 3  # MD steps between labelled snapshots
MD_SNAPSHOTS = 2
FRICTION = 0.02  # 1/fs, Langevin
STRAIN_MAX = 0.05  # |diagonal strain| <= 5 %, |shear| <= 2.5 %
RATTLE_MIN, RATTLE_MAX = 0.02, 0.15  # A, log-uniform gaussian sigma
FECR_X = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50, 0.60, 0.70, 0.80, 0.90)

# rejection thresholds
MAX_FORCE = 50.0  # eV/A
MAX_STRESS = 1.0  # eV/A^3 (160 GPa)
MIN_DIST = 0.6  # A

STRESS_CHECK_H = 1e-3
ALWAYS_TRAIN_GROUPS = ("element",)  # never val/test (see assign_splits)
# groups appended after generation (experiments/substitute_dataset.py): train, and no random
# draw, so the base groups keep their splits
SUPPLEMENT_GROUPS = ("substituted",)

# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stable_rng(seed: int, name: str) -> np.random.Generator:
    """A generator depending only on the global seed and a name (order independent)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def single_thread_torch():
    """torch limited to one thread (imported here: ``--resplit`` runs without torch)."""
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    return torch


class Teacher:
    """SevenNet-0 (E, F, stress) + CHGNet 0.3.0 (magmoms), with call accounting."""

    def __init__(self) -> None:
        single_thread_torch()
        from chgnet.model import CHGNet
        from sevenn.calculator import SevenNetCalculator

        self.calc = SevenNetCalculator("7net-0", device="cpu")
        self.chgnet = CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)
        self.n_calls = 0
        self.n_atoms_evaluated = 0
        self.t_7net = 0.0
        self.t_chgnet = 0.0
        orig = self.calc.calculate

        def counted(atoms=None, properties=None, system_changes=None):
            t0 = time.perf_counter()
            if system_changes is None:
                orig(atoms, properties)
            else:
                orig(atoms, properties, system_changes)
            self.t_7net += time.perf_counter() - t0
            self.n_calls += 1
            self.n_atoms_evaluated += len(atoms) if atoms is not None else 0

        self.calc.calculate = counted

    def evaluate(self, atoms: Atoms):
        atoms.calc = self.calc
        e = float(atoms.get_potential_energy())
        f = np.array(atoms.get_forces(), dtype=np.float64)
        s = np.array(atoms.get_stress(voigt=False), dtype=np.float64)
        return e, f, s

    def energy(self, atoms: Atoms) -> float:
        a = atoms.copy()
        a.calc = self.calc
        return float(a.get_potential_energy())

    def magmoms(self, atoms_list: list[Atoms]) -> list[np.ndarray | None]:
        from pymatgen.io.ase import AseAtomsAdaptor

        t0 = time.perf_counter()
        out: list[np.ndarray | None] = []
        structs = [AseAtomsAdaptor.get_structure(a) for a in atoms_list]
        try:
            preds = self.chgnet.predict_structure(structs, task="em", batch_size=16)
            if isinstance(preds, dict):
                preds = [preds]
            out = [np.asarray(p["m"], dtype=np.float64).reshape(-1) for p in preds]
        except Exception:  # fall back one by one, failures become None
            out = []
            for s in structs:
                try:
                    p = self.chgnet.predict_structure(s, task="em")
                    out.append(np.asarray(p["m"], dtype=np.float64).reshape(-1))
                except Exception:
                    out.append(None)
        self.t_chgnet += time.perf_counter() - t0
        return out


@dataclass
class Frame:
    atoms: Atoms
    energy: float
    forces: np.ndarray
    stress: np.ndarray
    kind: str
    family: str
    group: str
    magmoms: np.ndarray | None = None


def clean(atoms: Atoms) -> Atoms:
    a = Atoms(
        numbers=atoms.get_atomic_numbers(),
        positions=atoms.get_positions(),
        cell=np.array(atoms.cell[:]),
        pbc=True,
    )
    a.wrap()
    return a


def label(teacher: Teacher, atoms: Atoms, kind: str, family: str, group: str) -> Frame:
    e, f, s = teacher.evaluate(atoms)
    return Frame(clean(atoms), e, f, s, kind, family, group)


def supercell(atoms: Atoms, target: int, cap: int = 64) -> Atoms:
    """Repeat along the shortest cell height until len >= target (<= cap)."""
    n0 = len(atoms)
    reps = [1, 1, 1]
    cell = np.array(atoms.cell[:])
    vol = abs(np.linalg.det(cell))
    heights = [vol / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3]))
               for i in range(3)]
    while n0 * np.prod(reps) < target:
        j = int(np.argmin([reps[i] * heights[i] for i in range(3)]))
        reps[j] += 1
        if n0 * np.prod(reps) > cap:
            reps[j] -= 1
            break
    return atoms.repeat(reps)


def ensure_two_atoms(atoms: Atoms) -> Atoms:
    return supercell(atoms, 2) if len(atoms) < 2 else atoms


def random_strain(rng: np.random.Generator) -> np.ndarray:
    eps = np.zeros((3, 3))
    eps[np.diag_indices(3)] = rng.uniform(-STRAIN_MAX, STRAIN_MAX, 3)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        eps[i, j] = eps[j, i] = rng.uniform(-STRAIN_MAX / 2, STRAIN_MAX / 2)
    return eps


def strained(atoms: Atoms, eps: np.ndarray) -> Atoms:
    a = atoms.copy()
    a.set_cell(np.array(atoms.cell[:]) @ (np.eye(3) + eps), scale_atoms=True)
    return a


def rattle_sigma(rng: np.random.Generator) -> float:
    return float(np.exp(rng.uniform(np.log(RATTLE_MIN), np.log(RATTLE_MAX))))


def eos_scan(teacher: Teacher, atoms: Atoms, family: str, group: str):
    """Uniform-scaling E(V) scan of the initial guess; returns best-scaled atoms and
    the scan frames (as Frame objects, with their linear scale relative to best)."""
    cell0 = np.array(atoms.cell[:])
    recs: dict[float, tuple[Atoms, tuple]] = {}

    def ev(s: float) -> float:
        s = round(s, 4)
        if s not in recs:
            a = atoms.copy()
            a.set_cell(cell0 * s, scale_atoms=True)
            recs[s] = (a, teacher.evaluate(a))
        return recs[s][1][0]

    for s in EOS_SCALES:
        ev(s)
    for _ in range(3):
        ss = sorted(recs)
        i = int(np.argmin([recs[s][1][0] for s in ss]))
        if i == 0:
            ev(ss[0] - 0.05)
        elif i == len(ss) - 1:
            ev(ss[-1] + 0.05)
        else:
            break
    ss = sorted(recs)
    es = np.array([recs[s][1][0] for s in ss])
    if not np.all(np.isfinite(es)):
        raise RuntimeError("non-finite energy in E-V scan")
    i = int(np.argmin(es))
    best = ss[i]
    if 0 < i < len(ss) - 1:
        x = np.array(ss[i - 1 : i + 2]) ** 3  # volume ratio
        c = np.polyfit(x, es[i - 1 : i + 2], 2)
        if c[0] > 0:
            v = -c[1] / (2 * c[0])
            best = float(np.clip(v ** (1 / 3), ss[i - 1], ss[i + 1]))
    out = atoms.copy()
    out.set_cell(cell0 * best, scale_atoms=True)
    frames = []
    for s in ss:
        r = s / best - 1.0
        if 0.02 <= abs(r) <= 0.065:
            a, (e, f, st) = recs[s]
            frames.append((abs(r), Frame(clean(a), e, f, st, "eos", family, group)))
    frames.sort(key=lambda t: t[0])
    return out, [fr for _, fr in frames[:1]]


def relax(teacher: Teacher, atoms: Atoms, steps: int, family: str, group: str, cell: bool = True):
    """Short FIRE relaxation (with FrechetCellFilter if cell); returns the relaxed
    atoms and an early trajectory frame (step 1) when it differs noticeably."""
    a = atoms.copy()
    a.calc = teacher.calc
    traj: list[Frame] = []

    def observe():
        if len(traj) < 2:
            traj.append(label(teacher, a, "relax_traj", family, group))

    opt = FIRE(FrechetCellFilter(a) if cell else a, logfile=None, maxstep=0.1)
    opt.attach(observe, interval=1)
    opt.run(fmax=RELAX_FMAX, steps=steps)
    early = None
    if traj:
        fr = traj[0]
        if np.abs(fr.forces).max() > 0.05 or np.abs(fr.stress).max() > 2e-3:
            early = fr
    a.calc = None
    return a, early


def md_snapshots(
    teacher: Teacher,
    atoms: Atoms,
    temperature: float,
    rng: np.random.Generator,
    family: str,
    group: str,
    n_snap: int = MD_SNAPSHOTS,
    interval: int = MD_INTERVAL,
) -> list[Frame]:
    """Short Langevin MD with the teacher from a thermal initial state: gaussian
    displacements (sigma = 0.066 A * sqrt(T/300 K), the Debye-Waller amplitude of
    Fe) + Maxwell-Boltzmann velocities at T.  Snapshot every `interval` steps."""
    a = atoms.copy()
    sigma = 0.066 * math.sqrt(temperature / 300.0)
    a.positions += rng.normal(0.0, sigma, a.positions.shape)
    MaxwellBoltzmannDistribution(a, temperature_K=temperature, rng=rng)
    Stationary(a)
    dt = 1.0 if min(atomic_masses[a.numbers]) < 10.0 else 2.0
    a.calc = teacher.calc
    dyn = Langevin(
        a,
        dt * units.fs,
        temperature_K=temperature,
        friction=FRICTION / units.fs,
        rng=rng,
    )
    kind = f"md{int(temperature)}"
    out = []
    for _ in range(n_snap):
        dyn.run(interval)
        out.append(label(teacher, a, kind, family, group))
    a.calc = None
    return out


def rattled(atoms: Atoms, sigma: float, rng: np.random.Generator) -> Atoms:
    a = atoms.copy()
    a.positions += rng.normal(0.0, sigma, a.positions.shape)
    return a


# ----------------------------------------------------------------------------
# radii and prototype builders
# ----------------------------------------------------------------------------
ANION_OX = {"O": -2, "S": -2, "Se": -2, "Te": -2, "F": -1, "Cl": -1, "Br": -1, "I": -1,
            "N": -3, "C": -4, "H": -1, "P": -3, "As": -3, "Sb": -3, "Si": -4}
RADIUS_OVERRIDE = {("H", -1): 1.30}


def r_ion(el: str, ox: int) -> float:
    from pymatgen.core.periodic_table import Element, Species

    if (el, ox) in RADIUS_OVERRIDE:
        return RADIUS_OVERRIDE[(el, ox)]
    r = None
    try:
        r = Species(el, ox).ionic_radius
    except Exception:
        r = None
    if r is None:
        r = Element(el).atomic_radius
    return float(r)


def r_met(el: str) -> float:
    from pymatgen.core.periodic_table import Element

    r = Element(el).metallic_radius
    if r is None or r != r:
        r = covalent_radii[atomic_numbers[el]]
    return float(r)


def r_cov(el: str) -> float:
    return float(covalent_radii[atomic_numbers[el]])


def split_formula(formula: str) -> list[tuple[str, int]]:
    import re

    return [(s, int(n) if n else 1) for s, n in re.findall(r"([A-Z][a-z]?)(\d*)", formula)]


@dataclass
class FamilySpec:
    group: str
    name: str
    build: Callable[[], Atoms]
    skip_eos: bool = False
    relax_steps: int = RELAX_STEPS
    notes: str = ""
    elements: tuple = field(default_factory=tuple)


def _fam(group: str, formula: str, build: Callable[[], Atoms], **kw) -> FamilySpec:
    els = tuple(sorted({s for s, _ in split_formula(formula)}))
    return FamilySpec(group, f"{group}:{formula}", build, elements=els, **kw)


def rocksalt_specs() -> list[FamilySpec]:
    ionic = ["MgO", "CaO", "SrO", "BaO", "NiO", "MnO", "FeO", "CoO", "CdO", "EuO",
             "LiF", "NaF", "KF", "RbF", "CsF", "LiCl", "NaCl", "KCl", "RbCl", "LiBr", "NaBr",
             "KBr", "RbBr", "LiI", "NaI", "KI", "AgF", "AgCl", "AgBr", "LiH", "NaH", "KH",
             "MgS", "CaS", "SrS", "BaS", "MnS", "PbS", "PbSe", "PbTe", "SnTe", "CaSe", "MgSe",
             "EuS"]
    interstitial = ["TiN", "ZrN", "HfN", "VN", "NbN", "ScN", "CrN", "TiC", "ZrC", "HfC",
                    "VC", "NbC", "TaC"]
    out = []
    for f in ionic:
        (a, _), (x, _) = split_formula(f)
        ox = ANION_OX[x]

        def b(a=a, x=x, ox=ox):
            d = r_ion(a, -ox) + r_ion(x, ox)
            return bulk(a + x, "rocksalt", a=2 * d)

        out.append(_fam("rocksalt", f, b))
    for f in interstitial:
        (a, _), (x, _) = split_formula(f)

        def b(a=a, x=x):
            return bulk(a + x, "rocksalt", a=2 * (r_met(a) + r_cov(x)))

        out.append(_fam("rocksalt", f, b))
    return out


def cscl_specs() -> list[FamilySpec]:
    ionic = ["CsCl", "CsBr", "CsI", "TlCl", "TlBr"]
    inter = ["NiAl", "CoAl", "FeAl", "CuZn", "AgMg", "FeTi", "CoTi", "NiTi", "RuAl", "CuPd",
             "FeCo", "YCu", "ZrCo", "RhAl", "AuZn"]
    out = []
    for f in ionic:
        (a, _), (x, _) = split_formula(f)

        def b(a=a, x=x):
            d = r_ion(a, 1) + r_ion(x, -1)
            return bulk(a + x, "cesiumchloride", a=2 * d / math.sqrt(3))

        out.append(_fam("cscl", f, b))
    for f in inter:
        (a, _), (x, _) = split_formula(f)

        def b(a=a, x=x):
            d = 0.97 * (r_met(a) + r_met(x))
            return bulk(a + x, "cesiumchloride", a=2 * d / math.sqrt(3))

        out.append(_fam("cscl", f, b))
    return out


def zincblende_specs() -> list[FamilySpec]:
    fs = ["GaAs", "GaP", "GaSb", "InP", "InAs", "InSb", "AlP", "AlAs", "AlSb", "ZnS", "ZnSe",
          "ZnTe", "CdTe", "HgTe", "CuCl", "CuBr", "CuI", "BN", "BP", "SiC", "BeS", "BeSe"]
    out = []
    for f in fs:
        (a, _), (x, _) = split_formula(f)

        def b(a=a, x=x):
            return bulk(a + x, "zincblende", a=4 * (r_cov(a) + r_cov(x)) / math.sqrt(3))

        out.append(_fam("zincblende", f, b))
    return out


def wurtzite_specs() -> list[FamilySpec]:
    fs = ["GaN", "AlN", "InN", "ZnO", "BeO", "CdS", "CdSe", "ZnS", "AgI"]
    out = []
    for f in fs:
        (a, _), (x, _) = split_formula(f)

        def b(a=a, x=x):
            d = r_cov(a) + r_cov(x)
            aa = d * math.sqrt(8 / 3)
            return bulk(a + x, "wurtzite", a=aa, c=aa * 1.633)

        out.append(_fam("wurtzite", f, b))
    return out


def fluorite_specs() -> list[FamilySpec]:
    # (formula, cation, anion, cation ox, mode); antifluorites list the anion first in ASE
    ionic = [("CaF2", 2), ("SrF2", 2), ("BaF2", 2), ("CdF2", 2), ("PbF2", 2), ("UO2", 4),
             ("ThO2", 4), ("CeO2", 4), ("ZrO2", 4), ("HfO2", 4), ("PuO2", 4), ("NpO2", 4),
             ("PrO2", 4)]
    anti = [("Li2O", 1), ("Na2O", 1), ("K2O", 1), ("Li2S", 1), ("Na2S", 1), ("K2S", 1),
            ("Li2Se", 1)]
    covalent_anti = ["Mg2Si", "Mg2Ge", "Mg2Sn", "Be2C"]
    covalent = ["PtAl2", "AuAl2", "CoSi2", "NiSi2"]
    out = []
    for f, ox in ionic:
        (a, _), (x, _) = split_formula(f)

        def b(a=a, x=x, ox=ox):
            d = r_ion(a, ox) + r_ion(x, ANION_OX[x])
            return bulk(f"{a}{x}2", "fluorite", a=4 * d / math.sqrt(3))

        out.append(_fam("fluorite", f, b))
    for f, ox in anti:
        (a, _), (x, _) = split_formula(f)

        def b(a=a, x=x, ox=ox):
            d = r_ion(a, ox) + r_ion(x, ANION_OX[x])
            return bulk(f"{x}{a}2", "fluorite", a=4 * d / math.sqrt(3))

        out.append(_fam("fluorite", f, b))
    for f in covalent_anti:
        (a, _), (x, _) = split_formula(f)

        def b(a=a, x=x):
            d = r_cov(a) + r_cov(x)
            return bulk(f"{x}{a}2", "fluorite", a=4 * d / math.sqrt(3))

        out.append(_fam("fluorite", f, b))
    for f in covalent:
        (a, _), (x, _) = split_formula(f)

        def b(a=a, x=x):
            d = r_cov(a) + r_cov(x)
            return bulk(f"{a}{x}2", "fluorite", a=4 * d / math.sqrt(3))

        out.append(_fam("fluorite", f, b))
    return out


def l12_specs() -> list[FamilySpec]:
    fs = ["Ni3Al", "Ni3Ga", "Ni3Si", "Ni3Ge", "Ni3Mn", "Ni3Fe", "Cu3Au", "Cu3Pd", "Pt3Al",
          "Pt3Ti", "Pt3Fe", "Pd3Fe", "Fe3Pt", "Co3Ti", "Al3Sc", "Al3Li", "Al3Zr", "Al3Er",
          "Ir3Nb", "Au3Cu", "Ni3Sn"]
    out = []
    for f in fs:
        (a, _), (b_, _) = split_formula(f)

        def b(a=a, b_=b_):
            d = (3 * r_met(a) + r_met(b_)) / 2  # mean nearest-neighbour distance
            lat = math.sqrt(2) * d
            return Atoms(
                [b_, a, a, a],
                scaled_positions=[(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)],
                cell=np.eye(3) * lat,
                pbc=True,
            )

        out.append(_fam("l12", f, b))
    return out


def l10_specs() -> list[FamilySpec]:
    fs = ["CuAu", "FePt", "CoPt", "FePd", "NiPt", "MnAl", "TiAl", "MnPt", "MnNi"]
    out = []
    for f in fs:
        (a, _), (b_, _) = split_formula(f)

        def b(a=a, b_=b_):
            d = r_met(a) + r_met(b_)
            return Atoms([a, b_], scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5)],
                         cell=[d, d, d * math.sqrt(2) * 0.97], pbc=True)

        out.append(_fam("l10", f, b))
    return out


def perovskite_specs() -> list[FamilySpec]:
    # (A, B, X, oxB)
    items = [("Sr", "Ti", 4), ("Ba", "Ti", 4), ("Ca", "Ti", 4), ("Pb", "Ti", 4), ("Sr", "Zr", 4),
             ("Ba", "Zr", 4), ("Ba", "Sn", 4), ("Sr", "Sn", 4), ("Ba", "Hf", 4), ("Sr", "Hf", 4),
             ("Sr", "Ru", 4), ("Sr", "V", 4), ("Sr", "Mn", 4), ("Ca", "Mn", 4), ("Sr", "Fe", 4),
             ("Ba", "Ce", 4), ("K", "Nb", 5), ("Na", "Nb", 5), ("K", "Ta", 5), ("Na", "Ta", 5),
             ("La", "Al", 3), ("La", "Ga", 3), ("La", "Mn", 3), ("La", "Fe", 3), ("La", "Co", 3),
             ("La", "Ni", 3), ("La", "Cr", 3), ("La", "Ti", 3), ("La", "V", 3), ("Y", "Al", 3),
             ("Nd", "Al", 3), ("Pr", "Al", 3)]
    fluor = [("K", "Mg"), ("K", "Zn"), ("K", "Ni"), ("K", "Co"), ("K", "Mn"), ("K", "Fe"),
             ("Rb", "Ca"), ("Na", "Mg"), ("Cs", "Ca")]
    halide = [("Cs", "Pb", "Br"), ("Cs", "Pb", "I"), ("Cs", "Sn", "I"), ("Cs", "Pb", "Cl")]
    full = [(a, b, "O", ox) for a, b, ox in items]
    full += [(a, b, "F", 2) for a, b in fluor]
    full += [(a, b, x, 2) for a, b, x in halide]
    out = []
    for a, b_, x, ox in full:
        def bld(a=a, b_=b_, x=x, ox=ox):
            lat = 2 * (r_ion(b_, ox) + r_ion(x, ANION_OX[x]))
            return Atoms([b_, a, x, x, x],
                         scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0, 0), (0, 0.5, 0),
                                           (0, 0, 0.5)],
                         cell=np.eye(3) * lat, pbc=True)

        out.append(_fam("perovskite", f"{a}{b_}{x}3", bld))
    return out


def spinel_specs() -> list[FamilySpec]:
    # (A tetrahedral, B octahedral, X, oxB)
    items = [("Mg", "Al", 3), ("Zn", "Al", 3), ("Fe", "Al", 3), ("Co", "Al", 3), ("Mn", "Al", 3),
             ("Mg", "Cr", 3), ("Zn", "Cr", 3), ("Mn", "Cr", 3), ("Fe", "Cr", 3), ("Co", "Cr", 3),
             ("Fe", "Fe", 3), ("Co", "Co", 3), ("Mn", "Mn", 3), ("Zn", "Fe", 3), ("Mg", "Fe", 3),
             ("Ni", "Fe", 3), ("Co", "Fe", 3), ("Cu", "Fe", 3), ("Li", "Mn", 4), ("Li", "Ti", 3),
             ("Li", "V", 3), ("Mg", "V", 3), ("Zn", "Ga", 3), ("Mg", "Ga", 3), ("Zn", "Co", 3)]
    sulf = [("Cd", "Cr", 3), ("Zn", "Cr", 3)]
    full = [(a, b, "O", ox) for a, b, ox in items] + [(a, b, "S", ox) for a, b, ox in sulf]
    out = []
    for a, b_, x, ox in full:
        def bld(a=a, b_=b_, x=x, ox=ox):
            d = r_ion(b_, ox) + r_ion(x, -2)
            lat = d / 0.2416
            return crystal([a, b_, x], [(0, 0, 0), (5 / 8, 5 / 8, 5 / 8), (0.387, 0.387, 0.387)],
                           spacegroup=227, setting=1, cellpar=[lat] * 3 + [90] * 3,
                           primitive_cell=True)

        formula = f"{a}3{x}4" if a == b_ else f"{a}{b_}2{x}4"
        out.append(_fam("spinel", formula, bld))
    return out


def layered_specs() -> list[FamilySpec]:
    items = [("Li", "Co"), ("Li", "Ni"), ("Li", "Mn"), ("Li", "Fe"), ("Li", "Cr"), ("Li", "V"),
             ("Na", "Co"), ("Na", "Ni"), ("Na", "Mn"), ("Na", "Fe"), ("Na", "Cr")]
    out = []
    for a, m in items:
        def bld(a=a, m=m):
            d = r_ion(m, 3) + r_ion("O", -2)
            lat = 1.465 * d
            c = lat * (4.99 if a == "Li" else 5.55)
            return crystal([m, a, "O"], [(0, 0, 0), (0, 0, 0.5), (0, 0, 0.26)], spacegroup=166,
                           cellpar=[lat, lat, c, 90, 90, 120], primitive_cell=True)

        out.append(_fam("layered", f"{a}{m}O2", bld))
    return out


def olivine_specs() -> list[FamilySpec]:
    out = []
    for a, m in [("Li", "Fe"), ("Li", "Mn"), ("Li", "Co"), ("Li", "Ni"), ("Na", "Fe")]:
        def bld(a=a, m=m):
            s = (r_ion(m, 2) + r_ion("O", -2)) / (r_ion("Fe", 2) + r_ion("O", -2))
            if a == "Na":
                s *= 1.04
            return crystal([a, m, "P", "O", "O", "O"],
                           [(0, 0, 0), (0.282, 0.25, 0.975), (0.095, 0.25, 0.418),
                            (0.097, 0.25, 0.743), (0.457, 0.25, 0.206), (0.166, 0.046, 0.285)],
                           spacegroup=62, cellpar=[10.33 * s, 6.01 * s, 4.69 * s, 90, 90, 90])

        out.append(_fam("olivine", f"{a}{m}PO4", bld, relax_steps=15))
    return out


def rutile_specs() -> list[FamilySpec]:
    items = [("Ti", "O", 4), ("Sn", "O", 4), ("Ru", "O", 4), ("Ir", "O", 4), ("Mn", "O", 4),
             ("V", "O", 4), ("Cr", "O", 4), ("Ge", "O", 4), ("Pb", "O", 4), ("Nb", "O", 4),
             ("Mg", "F", 2), ("Zn", "F", 2), ("Ni", "F", 2), ("Fe", "F", 2), ("Co", "F", 2),
             ("Mn", "F", 2)]
    out = []
    for m, x, ox in items:
        def bld(m=m, x=x, ox=ox):
            d = r_ion(m, ox) + r_ion(x, ANION_OX[x])
            return crystal([m, x], [(0, 0, 0), (0.305, 0.305, 0)], spacegroup=136,
                           cellpar=[2.34 * d, 2.34 * d, 1.51 * d, 90, 90, 90])

        out.append(_fam("rutile", f"{m}{x}2", bld))
    return out


def corundum_specs() -> list[FamilySpec]:
    out = []
    for m in ["Al", "Cr", "Fe", "V", "Ti", "Ga"]:
        def bld(m=m):
            d = r_ion(m, 3) + r_ion("O", -2)
            a = 2.49 * d
            return crystal([m, "O"], [(0, 0, 0.352), (0.306, 0, 0.25)], spacegroup=167,
                           cellpar=[a, a, 2.73 * a, 90, 90, 120], primitive_cell=True)

        out.append(_fam("corundum", f"{m}2O3", bld))
    return out


def heusler_specs() -> list[FamilySpec]:
    items = [("Cu", "Mn", "Al"), ("Ni", "Mn", "Ga"), ("Ni", "Mn", "In"), ("Ni", "Mn", "Sn"),
             ("Co", "Mn", "Si"), ("Co", "Mn", "Ge"), ("Co", "Fe", "Si"), ("Co", "Fe", "Al"),
             ("Fe", "V", "Al"), ("Co", "Ti", "Al"), ("Co", "Cr", "Al"), ("Ru", "V", "Al")]
    out = []
    for x, y, z in items:
        def bld(x=x, y=y, z=z):
            d = 0.97 * (r_met(x) + (r_met(y) + r_met(z)) / 2)
            lat = 4 * d / math.sqrt(3)
            return crystal([y, z, x], [(0, 0, 0), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)],
                           spacegroup=225, cellpar=[lat] * 3 + [90] * 3, primitive_cell=True)

        out.append(_fam("heusler", f"{x}2{y}{z}", bld))
    return out


def pyrite_specs() -> list[FamilySpec]:
    out = []
    for m in ["Fe", "Co", "Ni", "Mn", "Ru", "Os"]:
        def bld(m=m):
            d = r_cov(m) + r_cov("S")
            return crystal([m, "S"], [(0, 0, 0), (0.385, 0.385, 0.385)], spacegroup=205,
                           cellpar=[2.40 * d] * 3 + [90] * 3)

        out.append(_fam("pyrite", f"{m}S2", bld))
    return out


def tmd_specs() -> list[FamilySpec]:
    out = []
    for m, x in [("Mo", "S"), ("W", "S"), ("Mo", "Se"), ("W", "Se"), ("Mo", "Te")]:
        def bld(m=m, x=x):
            s = (r_cov(m) + r_cov(x)) / (r_cov("Mo") + r_cov("S"))
            return crystal([m, x], [(1 / 3, 2 / 3, 0.25), (1 / 3, 2 / 3, 0.621)], spacegroup=194,
                           cellpar=[3.16 * s, 3.16 * s, 12.29 * s, 90, 90, 120])

        out.append(_fam("tmd", f"{m}{x}2-2H", bld))
    for m, x in [("Ti", "S"), ("Zr", "S"), ("Hf", "S"), ("Sn", "S"), ("Ti", "Se"), ("Pt", "S")]:
        def bld(m=m, x=x):
            s = (r_cov(m) + r_cov(x)) / (r_cov("Ti") + r_cov("S"))
            return crystal([m, x], [(0, 0, 0), (1 / 3, 2 / 3, 0.25)], spacegroup=164,
                           cellpar=[3.41 * s, 3.41 * s, 5.70 * s, 90, 90, 120])

        out.append(_fam("tmd", f"{m}{x}2-1T", bld))
    return out


def misc_specs() -> list[FamilySpec]:
    def li3n():
        return crystal(["N", "Li", "Li"], [(0, 0, 0), (0, 0, 0.5), (1 / 3, 2 / 3, 0)],
                       spacegroup=191, cellpar=[3.65, 3.65, 3.87, 90, 90, 120])

    return [_fam("misc", "Li3N", li3n)]


def alloy_specs() -> list[FamilySpec]:
    """Random (non Fe-Cr) binary solid solutions in 16-atom cells."""
    items = [("fcc", "Cu", "Ni"), ("fcc", "Ni", "Co"), ("fcc", "Pd", "Ag"), ("fcc", "Pt", "Ni"),
             ("fcc", "Au", "Ag"), ("fcc", "Fe", "Ni"), ("fcc", "Ni", "Cr"), ("bcc", "Mo", "W"),
             ("bcc", "Nb", "Mo"), ("bcc", "Ta", "W"), ("bcc", "V", "Cr"), ("bcc", "Fe", "Co"),
             ("bcc", "Ti", "V")]
    out = []
    for lat, a, b_ in items:
        x = 0.2 if (a, b_) == ("Ni", "Cr") else 0.5
        name = f"{a}{1 - x:.2f}{b_}{x:.2f}"

        def bld(lat=lat, a=a, b_=b_, x=x, name=name):
            r = (1 - x) * r_met(a) + x * r_met(b_)
            if lat == "fcc":
                atoms = bulk(a, "fcc", a=2 * math.sqrt(2) * r, cubic=True).repeat((2, 2, 1))
            else:
                atoms = bulk(a, "bcc", a=4 * r / math.sqrt(3), cubic=True).repeat((2, 2, 2))
            rng = stable_rng(0, "alloy:" + name)  # occupation fixed by name only
            n_b = int(round(x * len(atoms)))
            idx = rng.permutation(len(atoms))[:n_b]
            sym = atoms.get_chemical_symbols()
            for i in idx:
                sym[i] = b_
            atoms.set_chemical_symbols(sym)
            return atoms

        out.append(FamilySpec("alloy", f"alloy:{name}", bld, elements=tuple(sorted({a, b_}))))
    return out


# Elements: which ones are skipped and which get a hand-made structure (guess).
ELEMENT_SKIP = {
    "H": "molecular (H2) in its reference state; no simple bulk prototype",
    "N": "molecular (N2) in its reference state; no simple bulk prototype",
    "O": "molecular (O2) in its reference state; no simple bulk prototype",
    "F": "molecular (F2) in its reference state; no simple bulk prototype",
    "Cl": "molecular (Cl2) crystal; ase.build.bulk needs an atomic basis",
    "Br": "molecular (Br2) crystal; ase.build.bulk needs an atomic basis",
    "I": "molecular (I2) crystal; ase.build.bulk needs an atomic basis",
    "He": "no ase.build.bulk reference structure (quantum solid)",
    "B": "alpha-B (12-atom icosahedral cell); ase.build.bulk needs an atomic basis",
    "P": "black/white P need an atomic basis in ase.build.bulk",
    "S": "alpha-S8 (128 atoms); ase.build.bulk needs an atomic basis",
}
ELEMENT_GUESS = {
    # symbol: (builder, note)
    "Mn": (lambda: bulk("Mn", "fcc", a=3.62, cubic=True), "fcc guess (gamma-Mn like), a=3.62"),
    "Ga": (lambda: bulk("Ga", "fcc", a=4.28, cubic=True), "fcc guess, a=4.28 (V=19.6 A^3/atom)"),
    "U": (lambda: bulk("U", "bcc", a=3.47, cubic=True),
          "bcc gamma-U, a=3.47 (ase ref is 1-atom orthorhombic)"),
    "Np": (lambda: bulk("Np", "bcc", a=3.52, cubic=True),
           "bcc gamma-Np, a=3.52 (ase ref is 1-atom orthorhombic)"),
    "Pu": (lambda: bulk("Pu", "fcc", a=4.64, cubic=True), "fcc delta-Pu, a=4.64"),
    "Pa": (lambda: bulk("Pa", "bct", a=3.92, c=3.24).repeat((2, 1, 1)), "bct, a=3.92, c=3.24"),
    "Pm": (lambda: bulk("Pm", "hcp", a=3.65, c=5.83), "hcp guess, a=3.65, c=5.83"),
    "Se": (lambda: crystal(["Se"], [(0.217, 0, 1 / 3)], spacegroup=152,
                           cellpar=[4.36, 4.36, 4.95, 90, 90, 120]), "trigonal chains P3_121"),
    "Te": (lambda: crystal(["Te"], [(0.264, 0, 1 / 3)], spacegroup=152,
                           cellpar=[4.45, 4.45, 5.93, 90, 90, 120]), "trigonal chains P3_121"),
}


def prototype_spec_groups() -> list[list[FamilySpec]]:
    """The compound families, one list per prototype group (elements and Fe-Cr apart)."""
    return [rocksalt_specs(), cscl_specs(), zincblende_specs(), wurtzite_specs(),
            fluorite_specs(), l12_specs(), l10_specs(), perovskite_specs(), spinel_specs(),
            layered_specs(), olivine_specs(), rutile_specs(), corundum_specs(),
            heusler_specs(), pyrite_specs(), tmd_specs(), misc_specs(), alloy_specs()]


def element_specs(covered: list[str]) -> tuple[list[FamilySpec], dict, dict]:
    from ase.data import reference_states

    out, skipped, guessed = [], {}, {}
    for sym in covered:
        if sym in ELEMENT_SKIP:
            skipped[sym] = ELEMENT_SKIP[sym]
            continue
        if sym in ELEMENT_GUESS:
            bld, note = ELEMENT_GUESS[sym]
            guessed[sym] = note
        else:
            ref = reference_states[atomic_numbers[sym]]
            cubic = ref is not None and ref.get("symmetry") in ("fcc", "bcc", "diamond", "sc")

            def bld(sym=sym, cubic=cubic):
                return bulk(sym, cubic=cubic)

        out.append(FamilySpec("element", f"element:{sym}", bld, elements=(sym,)))
    return out, skipped, guessed


# ----------------------------------------------------------------------------
# family pipelines
# ----------------------------------------------------------------------------


def run_family(teacher: Teacher, spec: FamilySpec, seed: int) -> list[Frame]:
    rng = stable_rng(seed, spec.name)
    fam, grp = spec.name, spec.group
    atoms0 = spec.build()
    atoms0 = Atoms(atoms0.numbers, atoms0.positions, cell=np.array(atoms0.cell[:]), pbc=True)
    frames: list[Frame] = []
    best, eos_frames = eos_scan(teacher, atoms0, fam, grp)
    relaxed, early = relax(teacher, best, spec.relax_steps, fam, grp)
    relaxed = ensure_two_atoms(relaxed)
    frames.append(label(teacher, relaxed, "relaxed", fam, grp))
    if early is not None and len(early.atoms) >= 2:
        frames.append(early)
    frames += [f for f in eos_frames if len(f.atoms) >= 2]
    for _ in range(N_STRAIN):
        a = rattled(strained(relaxed, random_strain(rng)), 0.01, rng)
        frames.append(label(teacher, a, "strain", fam, grp))
    rsc = supercell(relaxed, RATTLE_TARGET_ATOMS)
    for _ in range(N_RATTLE):
        frames.append(label(teacher, rattled(rsc, rattle_sigma(rng), rng), "rattle", fam, grp))
    if rng.uniform() < MD_PROB:
        temp = float(rng.choice(MD_T_CHOICES, p=MD_T_PROBS))
        msc = supercell(relaxed, MD_TARGET_ATOMS)
        frames += md_snapshots(teacher, msc, temp, rng, fam, grp)
    return frames


def fecr_name(x: float) -> str:
    return f"fecr:Fe{1 - x:.2f}Cr{x:.2f}"


def fecr_cell(x: float, reps: int, a: float, rng: np.random.Generator) -> Atoms:
    atoms = bulk("Fe", "bcc", a=a, cubic=True).repeat((reps, reps, reps))
    n_cr = max(1, int(round(x * len(atoms))))
    sym = np.array(["Fe"] * len(atoms), dtype=object)
    sym[rng.permutation(len(atoms))[:n_cr]] = "Cr"
    atoms.set_chemical_symbols(list(sym))
    return atoms


def run_fecr(teacher: Teacher, x: float, seed: int) -> list[Frame]:
    """Random bcc Fe(1-x)Cr(x): two relaxed 16-atom configurations with strain,
    rattle and MD at 300/1000/1500 K; a 54-atom cell (rattle, MD at 1500 K);
    a 53-atom (MD 1000 K) and a 15-atom (MD 1500 K) cell with a vacancy."""
    fam, grp = fecr_name(x), "fecr"
    rng = stable_rng(seed, fam)
    a_guess = (1 - x) * 2.83 + x * 2.85
    frames: list[Frame] = []
    vol_per_atom = []
    relaxed16 = []
    for _ in range(2):
        at = fecr_cell(x, 2, a_guess, rng)
        rel, early = relax(teacher, at, 8, fam, grp)
        relaxed16.append(rel)
        vol_per_atom.append(rel.get_volume() / len(rel))
        frames.append(label(teacher, rel, "relaxed", fam, grp))
        if early is not None:
            frames.append(early)
        for _ in range(2):
            a = rattled(strained(rel, random_strain(rng)), 0.01, rng)
            frames.append(label(teacher, a, "strain", fam, grp))
        for _ in range(2):
            frames.append(label(teacher, rattled(rel, rattle_sigma(rng), rng), "rattle", fam, grp))
        for temp in (300.0, 1000.0, 1500.0):
            frames += md_snapshots(teacher, rel, temp, rng, fam, grp)
    a_eq = (2 * float(np.mean(vol_per_atom))) ** (1 / 3)
    # 54-atom cell
    big = fecr_cell(x, 3, a_eq, rng)
    frames.append(label(teacher, rattled(big, rattle_sigma(rng), rng), "rattle", fam, grp))
    frames += md_snapshots(teacher, big, 1500.0, rng, fam, grp)
    # 53-atom cell with a vacancy
    vac = fecr_cell(x, 3, a_eq, rng)
    del vac[int(rng.integers(len(vac)))]
    rel, _ = relax(teacher, vac, 3, fam, grp, cell=False)
    frames.append(label(teacher, rel, "vacancy_relaxed", fam, grp))
    frames += md_snapshots(teacher, rel, 1000.0, rng, fam, grp)
    # 15-atom cell with a vacancy
    vac = relaxed16[1].copy()
    del vac[int(rng.integers(len(vac)))]
    rel, _ = relax(teacher, vac, 5, fam, grp, cell=False)
    frames.append(label(teacher, rel, "vacancy_relaxed", fam, grp))
    frames += md_snapshots(teacher, rel, 1500.0, rng, fam, grp)
    return frames


# ----------------------------------------------------------------------------
# filtering, splits, output
# ----------------------------------------------------------------------------


def reject_reason(fr: Frame) -> str | None:
    if fr.magmoms is None:
        return "CHGNet magmom prediction failed"
    vals = [np.asarray(fr.energy), fr.forces, fr.stress, fr.magmoms]
    if not all(np.all(np.isfinite(v)) for v in vals):
        return "non-finite label (NaN/inf)"
    if np.linalg.norm(fr.forces, axis=1).max() > MAX_FORCE:
        return f"max force > {MAX_FORCE:g} eV/A"
    if np.abs(fr.stress).max() > MAX_STRESS:
        return f"max abs stress component > {MAX_STRESS:g} eV/A^3"
    if len(fr.atoms) < 2 or len(fr.atoms) > 64:
        return "atom count outside 2..64"
    d = neighbor_list("d", fr.atoms, MIN_DIST)
    if len(d):
        return f"interatomic distance < {MIN_DIST:g} A"
    return None


def assign_splits(frames: list[Frame], seed: int) -> dict[str, str]:
    """Family -> split.  Per prototype group ~10 % of families to val and ~10 % to
    test; Fe-Cr: one Fe-rich and one Cr-rich composition each to val and test.
    Elemental crystals (group "element") always go to train: they are the reference
    states of formation energies, MPtrj holds every element's, and Matbench-Discovery
    tests compounds only (the group's permutation is still drawn, so every other group's
    split is what it was before this rule).  A val/test family with an element that no
    train family contains goes to train."""
    rng = np.random.default_rng([seed, 7])
    fam_group: dict[str, str] = {}
    fam_elems: dict[str, set] = collections.defaultdict(set)
    for fr in frames:
        fam_group[fr.family] = fr.group
        fam_elems[fr.family] |= set(fr.atoms.get_chemical_symbols())
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for fam, g in fam_group.items():
        groups[g].append(fam)
    split: dict[str, str] = {}
    for g in sorted(groups):
        fams = sorted(groups[g])
        if g == "fecr":
            xs = {f: float(f.split("Cr")[-1]) for f in fams}
            fe_rich = [f for f in fams if 0.1 <= xs[f] <= 0.4]
            cr_rich = [f for f in fams if 0.5 <= xs[f] <= 0.8]
            for f in fams:
                split[f] = "train"
            for pool in (fe_rich, cr_rich):
                if len(pool) >= 3:
                    pick = rng.choice(len(pool), size=2, replace=False)
                    split[pool[pick[0]]] = "val"
                    split[pool[pick[1]]] = "test"
            continue
        if g in SUPPLEMENT_GROUPS:
            split.update({f: "train" for f in fams})
            continue
        perm = [fams[i] for i in rng.permutation(len(fams))]
        n = len(fams)
        n_eval = int(round(0.1 * n)) if n >= 5 else 0
        n_eval = max(n_eval, 1) if n >= 5 else 0
        if g in ALWAYS_TRAIN_GROUPS:
            n_eval = 0
        for i, f in enumerate(perm):
            split[f] = "test" if i < n_eval else ("val" if i < 2 * n_eval else "train")
    # element coverage of train
    for _ in range(3):
        train_elems = set().union(*[fam_elems[f] for f, s in split.items() if s == "train"])
        for f in sorted(split):
            if split[f] != "train" and not fam_elems[f] <= train_elems and fam_group[f] != "fecr":
                split[f] = "train"
    return split


def write_extxyz_gz(path: Path, atoms_list: list[Atoms]) -> None:
    buf = io.StringIO()
    ase.io.write(buf, atoms_list, format="extxyz")
    data = buf.getvalue().encode()
    with open(path, "wb") as fh:
        with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=9) as gz:
            gz.write(data)


def stress_check(teacher: Teacher, out_atoms: list[Atoms], frames: list[Frame], h: float):
    prefer = ["fecr", "rocksalt", "perovskite", "spinel", "element", "wurtzite", "layered",
              "heusler", "rutile", "l12"]
    chosen = []
    for g in prefer:
        for i, fr in enumerate(frames):
            if fr.group == g and fr.kind == "strain":
                s = fr.stress
                if abs(s[0, 0]) > 2e-3 and abs(s[0, 1]) > 5e-4 and len(fr.atoms) <= 54:
                    chosen.append(i)
                    break
        if len(chosen) == 6:
            break
    comps = {"xx": (0, 0), "yy": (1, 1), "xy": (0, 1), "yz": (1, 2)}
    entries = []
    for i in chosen:
        at = out_atoms[i]
        vol = at.get_volume()
        for name, (p, q) in comps.items():
            es = []
            for sgn in (1.0, -1.0):
                eps = np.zeros((3, 3))
                if p == q:
                    eps[p, p] = sgn * h
                else:
                    eps[p, q] = eps[q, p] = sgn * h / 2
                a = Atoms(at.numbers, at.positions, cell=np.array(at.cell[:]), pbc=True)
                a.set_cell(np.array(at.cell[:]) @ (np.eye(3) + eps), scale_atoms=True)
                es.append(teacher.energy(a))
            sig_fd = (es[0] - es[1]) / (2 * h * vol)
            sig_lab = float(np.asarray(at.info["REF_stress"]).reshape(3, 3)[p, q])
            entries.append({
                "frame_id": int(at.info["frame_id"]),
                "family": at.info["family"],
                "kind": at.info["kind"],
                "natoms": len(at),
                "component": name,
                "h": h,
                "E_plus": es[0],
                "E_minus": es[1],
                "volume": vol,
                "sigma_fd_eV_A3": sig_fd,
                "sigma_label_eV_A3": sig_lab,
                "abs_err_eV_A3": abs(sig_fd - sig_lab),
                "rel_err": abs(sig_fd - sig_lab) / max(abs(sig_lab), 1e-12),
            })
    return entries


# ----------------------------------------------------------------------------
# plots and README
# ----------------------------------------------------------------------------


def make_plot(path: Path, out_atoms: list[Atoms]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = collections.Counter()
    for a in out_atoms:
        counts.update(a.get_atomic_numbers().tolist())
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    ax = axes[0, 0]
    grid = np.full((10, 18), np.nan)
    labels = {}
    for z in range(1, 95):
        r, c = _table_rc(z)
        grid[r, c] = np.log10(counts[z]) if counts[z] else -1
        labels[(r, c)] = chemical_symbols[z]
    masked = np.ma.masked_invalid(grid)
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_under("lightgrey")
    im = ax.imshow(masked, cmap=cmap, vmin=0, vmax=max(1, np.nanmax(grid)))
    for (r, c), s in labels.items():
        ax.text(c, r, s, ha="center", va="center", fontsize=6,
                color="black" if grid[r, c] < 0 else "white")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("element coverage: log10(atoms) (grey = absent)")
    fig.colorbar(im, ax=ax, fraction=0.025)
    ax = axes[0, 1]
    nat = [len(a) for a in out_atoms]
    ax.hist(nat, bins=np.arange(1.5, 65.5, 1))
    ax.set_xlabel("atoms per frame")
    ax.set_ylabel("frames")
    ax.set_title(f"{len(out_atoms)} frames, {sum(nat)} atoms")
    ax = axes[1, 0]
    for sp in ("train", "val", "test"):
        epa = [a.info["REF_energy"] / len(a) for a in out_atoms if a.info["split"] == sp]
        ax.hist(epa, bins=60, histtype="step", label=f"{sp} ({len(epa)})")
    ax.set_xlabel("energy per atom (eV/atom, SevenNet-0)")
    ax.set_ylabel("frames")
    ax.legend()
    ax = axes[1, 1]
    fm = np.concatenate([np.linalg.norm(a.arrays["REF_forces"], axis=1) for a in out_atoms])
    kinds = sorted({a.info["kind"] for a in out_atoms})
    bins = np.logspace(-4, np.log10(max(fm.max(), 1.0)), 60)
    for k in kinds:
        v = np.concatenate([np.linalg.norm(a.arrays["REF_forces"], axis=1)
                            for a in out_atoms if a.info["kind"] == k])
        ax.hist(np.maximum(v, 1e-4), bins=bins, histtype="step", label=k)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("|F| per atom (eV/A)")
    ax.set_ylabel("atoms")
    ax.legend(fontsize=7)
    fig.suptitle("MPtrj-like data set (SevenNet-0 E/F/stress, CHGNet 0.3.0 magmoms) - not DFT")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table_rc(z: int) -> tuple[int, int]:
    if z == 1:
        return 0, 0
    if z == 2:
        return 0, 17
    if 3 <= z <= 10:
        k = z - 3
        return 1, k if k < 2 else k + 10
    if 11 <= z <= 18:
        k = z - 11
        return 2, k if k < 2 else k + 10
    if 19 <= z <= 36:
        return 3, z - 19
    if 37 <= z <= 54:
        return 4, z - 37
    for start, row, frow in ((55, 5, 8), (87, 6, 9)):
        if start <= z < start + 32:
            k = z - start
            if k < 2:
                return row, k
            if 2 <= k <= 15:  # La..Yb (Ac..No)
                return frow, k + 1
            return row, k - 14
    raise ValueError(z)


def md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(x) for x in r) + " |")
    return "\n".join(out)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for p in ("torch", "sevenn", "chgnet", "ase", "pymatgen", "pymatgen-core", "numpy", "e3nn",
              "torch-geometric", "matplotlib", "scipy"):
        try:
            out[p] = md.version(p)
        except Exception:
            out[p] = "n/a"
    return out


def teacher_setup_commands() -> list[str]:
    """Shell lines that build the teacher venv (the README's "How it was made")."""
    v = versions()
    return [
        "python3 -m venv .venv-teacher",
        ".venv-teacher/bin/pip install torch==2.13.0   # CPU wheel",
        "echo 'torch==2.13.0' > /tmp/teacher-constraints.txt",
        ".venv-teacher/bin/pip install -c /tmp/teacher-constraints.txt "
        f"sevenn=={v['sevenn']} chgnet=={v['chgnet']}",
    ]


def checkpoints() -> dict:
    import chgnet
    import sevenn

    s = Path(sevenn.__file__).parent / "pretrained_potentials" / "SevenNet_0__11Jul2024"
    c = Path(chgnet.__file__).parent / "pretrained" / "0.3.0"
    out = {}
    for p in sorted(list(s.glob("*.pth")) + list(c.glob("*.pth.tar"))):
        out[str(p.relative_to(p.parents[2]))] = sha256(p)
    return out


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def splits_section(out_atoms: list[Atoms]) -> list[str]:
    """README lines from "## Splits" up to "## Atoms per frame" (everything that depends
    on the split assignment)."""
    splits = ("train", "val", "test")
    by_split = {s: [a for a in out_atoms if a.info["split"] == s] for s in splits}
    L: list[str] = []
    L.append("## Splits\n")
    L.append(
        "Splits are by **family** (prototype + composition), never by frame, so val/test "
        "measure generalisation to unseen structures/compositions rather than to rattled "
        "copies of training frames. Within each prototype group ~10 % of the families go to "
        "val and ~10 % to test; elemental crystals (group `element`, the reference states of "
        "formation energies, all present in MPtrj) are always in train; families whose "
        "elements would not occur in train are moved to train. Fe-Cr: one Fe-rich and one "
        "Cr-rich composition each in val and test, all other compositions in train. (The "
        "rule for elemental crystals dates from 2026-11-27; before, 11 of them were in val or "
        "test. `make_dataset.py --resplit` reapplies the rule to the file without the "
        "teachers.)\n")
    rows = []
    for s in splits:
        fr = by_split[s]
        rows.append([s, len(fr), len({a.info["family"] for a in fr}), sum(len(a) for a in fr)])
    rows.append(["total", len(out_atoms), len({a.info["family"] for a in out_atoms}),
                 sum(len(a) for a in out_atoms)])
    L.append("<!-- split-counts:begin -->")
    L.append(md_table(["split", "frames", "families", "atoms"], rows))
    L.append("<!-- split-counts:end -->\n")
    fecr_rows = []
    for s in splits:
        fams = sorted({a.info["family"] for a in by_split[s]
                       if a.info["family"].startswith("fecr")})
        nfr = sum(1 for a in by_split[s] if a.info["family"].startswith("fecr"))
        fecr_rows.append([s, nfr, ", ".join(f"`{f}`" for f in fams)])
    L.append("Fe-Cr compositions per split:\n")
    L.append(md_table(["split", "Fe-Cr frames", "families"], fecr_rows))
    L.append("")
    L.append("### Frames per kind and split\n")
    kinds = sorted({a.info["kind"] for a in out_atoms})
    rows = []
    for k in kinds:
        rows.append([f"`{k}`"]
                    + [sum(1 for a in by_split[s] if a.info["kind"] == k) for s in splits]
                    + [sum(1 for a in out_atoms if a.info["kind"] == k)])
    L.append(md_table(["kind", "train", "val", "test", "total"], rows))
    L.append("")
    L.append(
        "- `relaxed`: end of a short teacher relaxation (E-V scan of a radii-based guess, then "
        f"<= {RELAX_STEPS} FIRE steps with FrechetCellFilter, fmax {RELAX_FMAX} eV/A); "
        "`vacancy_relaxed`: Fe-Cr cell with one vacancy, positions relaxed at fixed cell.\n"
        "- `relax_traj`: first frame of that relaxation (after the E-V scan) when it was not "
        "already near equilibrium (max |F| > 0.05 eV/A or max |stress| > 2e-3 eV/A^3).\n"
        "- `eos`: the point of the uniform-scaling E-V scan closest to (but 2-6.5 % linear "
        "away from) the minimum.\n"
        f"- `strain`: random symmetric strain (|diagonal| <= {STRAIN_MAX:.0%}, "
        f"|shear| <= {STRAIN_MAX / 2:.1%}) of the relaxed cell plus a 0.01 A rattle.\n"
        f"- `rattle`: gaussian displacements, sigma log-uniform in [{RATTLE_MIN}, {RATTLE_MAX}] A, "
        f"in a supercell of >= {RATTLE_TARGET_ATOMS} atoms.\n"
        "- `md300` / `md1000` / `md1500`: snapshots of short Langevin MD with the teacher "
        f"(friction {FRICTION}/fs, dt 2 fs, 1 fs with H/Li/Be) started from a thermal state "
        "(gaussian displacements 0.066 A * sqrt(T/300 K) + Maxwell-Boltzmann velocities), "
        f"a snapshot every {MD_INTERVAL} steps; supercells of >= {MD_TARGET_ATOMS} atoms "
        f"(Fe-Cr: 15-54 atoms). {MD_PROB:.0%} of the non-Fe-Cr families get one trajectory at "
        "300/1000/1500 K (p = 0.40/0.35/0.25).\n")
    L.append("### Families per prototype group\n")
    groups = sorted({a.info["family"].split(":")[0] for a in out_atoms})
    rows = []
    for g in groups:
        fr = [a for a in out_atoms if a.info["family"].split(":")[0] == g]
        rows.append([g, len({a.info["family"] for a in fr})] +
                    [sum(1 for a in fr if a.info["split"] == s) for s in splits] + [len(fr)])
    L.append(md_table(["group", "families", "train frames", "val frames", "test frames",
                       "frames"], rows))
    L.append("")
    fecr_frac = sum(1 for a in out_atoms if a.info["family"].startswith("fecr")) / len(out_atoms)
    L.append(f"Fe-Cr random bcc alloys (Cr fraction {FECR_X[0]}..{FECR_X[-1]}, 15-54 atoms, with "
             f"and without a vacancy) are {fecr_frac:.1%} of the frames.\n")
    return L


def write_readme(path: Path, ctx: dict) -> None:
    out_atoms = ctx["out_atoms"]
    L = []
    L.append("# `mptrj_like.extxyz.gz` - embedded MPtrj-like training set\n")
    L.append(
        "**This is NOT DFT.** Every label was predicted by universal machine-learning "
        "potentials that were themselves trained on MPtrj (Materials Project PBE/PBE+U "
        "relaxation trajectories). MPtrj itself (~1.6 M frames, several GB, download-only) "
        "cannot be fetched on the project's machines and is far too large to ship; the "
        "teachers' weights ship inside their pip wheels, so this file can be regenerated "
        "offline. It stands in for MPtrj as a small, diverse, self-consistent (energy-conserving "
        "forces, stress = strain derivative of the energy) data set with the same label set "
        "(energy, forces, stress, magnetic moments) and the same kind of frames (relaxed "
        "structures, relaxation-trajectory frames, strained/rattled/MD frames). Numbers "
        "trained against it are *teacher-matching* numbers, not DFT accuracies.\n")
    L.append("## Teachers and versions\n")
    v = ctx["versions"]
    L.append(md_table(["role", "model", "package"], [
        ["energy (total, eV), forces (eV/A), stress (eV/A^3)",
         "SevenNet-0 (`SevenNetCalculator(\"7net-0\")`, checkpoint SevenNet_0__11Jul2024)",
         f"sevenn {v['sevenn']}"],
        ["magnetic moments (muB, magnitudes)", "CHGNet 0.3.0 (`CHGNet.load()`, task `em`)",
         f"chgnet {v['chgnet']}"],
    ]))
    L.append("")
    L.append("Environment (own venv `.venv-teacher`, CPU only): " + ", ".join(
        f"{k} {val}" for k, val in v.items()) + ".\n")
    L.append("Checkpoint SHA-256:\n")
    for k, h in ctx["checkpoints"].items():
        L.append(f"- `{k}`: `{h}`")
    L.append("")
    L.append("## Format and units\n")
    L.append(
        "Extended XYZ (ASE `ase.io.write(format=\"extxyz\")`), gzip. No calculator is attached; "
        "labels are stored under `REF_` keys so that readers do not mistake them for "
        "calculator results:\n")
    L.append(md_table(["key", "where", "meaning", "unit"], [
        ["`REF_energy`", "info", "total energy as predicted by SevenNet-0 (the teacher's "
         "MPtrj energy reference, not a formation energy)", "eV"],
        ["`REF_forces`", "arrays [n,3]", "forces", "eV/A"],
        ["`REF_stress`", "info, 9 floats", "stress, row-major 3x3, ASE sign "
         "(positive = tensile; sigma = (1/V) dE/d(eps))", "eV/A^3"],
        ["`REF_magmoms`", "arrays [n]", "magnetic moment magnitudes (CHGNet 0.3.0)", "muB"],
        ["`family`", "info", "prototype:formula, e.g. `rocksalt:MgO`, `fecr:Fe0.80Cr0.20`", ""],
        ["`split`", "info", "`train` / `val` / `test` (by family)", ""],
        ["`kind`", "info", "how the frame was made (see below)", ""],
        ["`frame_id`", "info", "index of the frame in the file (0-based)", ""],
    ]))
    L.append("\nAll frames are periodic (pbc = True) with a full cell. 1 eV/A^3 = 160.2177 GPa.\n")
    L += splits_section(out_atoms)
    L.append("## Atoms per frame\n")
    nat = np.array([len(a) for a in out_atoms])
    L.append(f"min {nat.min()}, max {nat.max()}, mean {nat.mean():.1f}, median "
             f"{int(np.median(nat))}.\n")
    edges = [2, 5, 9, 17, 33, 65]
    rows = [[f"{lo}-{hi - 1}", int(((nat >= lo) & (nat < hi)).sum())]
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    L.append(md_table(["atoms", "frames"], rows))
    L.append("")
    L.append("## Label ranges\n")
    epa = np.array([a.info["REF_energy"] / len(a) for a in out_atoms])
    fmag = np.concatenate([np.linalg.norm(a.arrays["REF_forces"], axis=1) for a in out_atoms])
    sig = np.array([np.asarray(a.info["REF_stress"]).reshape(-1) for a in out_atoms])
    mag = np.concatenate([a.arrays["REF_magmoms"] for a in out_atoms])
    rows = [
        ["energy per atom (eV/atom)", f"{epa.min():.3f}", f"{epa.max():.3f}", f"{epa.mean():.3f}"],
        ["force magnitude per atom (eV/A)", f"{fmag.min():.2e}", f"{fmag.max():.3f}",
         f"{fmag.mean():.3f}"],
        ["stress component (eV/A^3)", f"{sig.min():.4f}", f"{sig.max():.4f}",
         f"{np.abs(sig).mean():.4f} (mean abs)"],
        ["stress component (GPa)", f"{sig.min() * 160.2177:.1f}", f"{sig.max() * 160.2177:.1f}",
         f"{np.abs(sig).mean() * 160.2177:.2f} (mean abs)"],
        ["magmom (muB)", f"{mag.min():.3f}", f"{mag.max():.3f}", f"{mag.mean():.3f}"],
    ]
    L.append(md_table(["label", "min", "max", "mean"], rows))
    L.append("")
    L.append("## Element histogram\n")
    fr_count = collections.Counter()
    at_count = collections.Counter()
    for a in out_atoms:
        syms = a.get_chemical_symbols()
        at_count.update(syms)
        fr_count.update(set(syms))
    rows = [[s, atomic_numbers[s], fr_count[s], at_count[s]]
            for s in sorted(at_count, key=lambda s: atomic_numbers[s])]
    L.append(f"{len(at_count)} elements.\n")
    L.append(md_table(["element", "Z", "frames containing", "atoms"], rows))
    L.append("")
    L.append("Elemental crystals: skipped (no simple bulk structure) - " + "; ".join(
        f"{k}: {v}" for k, v in ctx["skipped_elements"].items()) + ".\n")
    L.append("Elemental crystals built from a hand-made guess instead of ase.build.bulk: "
             + "; ".join(f"{k}: {v}" for k, v in ctx["guessed_elements"].items()) + ".\n")
    L.append("## Rejected frames\n")
    L.append("Thresholds: non-finite label, max |F| > 50 eV/A, |stress| > 1 eV/A^3, "
             "interatomic distance < 0.6 A, CHGNet failure.\n")
    rej = ctx["rejected"]
    if rej:
        rows = [[r, n] for r, n in sorted(collections.Counter(x[2] for x in rej).items())]
        L.append(md_table(["reason", "frames"], rows))
        L.append("")
        L.append("Rejected: " + ", ".join(f"{fam} ({kind}: {r})" for fam, kind, r in rej) + ".\n")
    else:
        L.append("None: 0 frames rejected.\n")
    if ctx["failed_families"]:
        L.append("Families that failed completely (exception, not in the file): " + "; ".join(
            f"{k}: {v}" for k, v in ctx["failed_families"].items()) + ".\n")
    L.append("## Stress self-consistency check\n")
    sc = ctx["stress_entries"]
    if sc:
        rel = [e["rel_err"] for e in sc if abs(e["sigma_label_eV_A3"]) > 1e-4]
        abs_e = max(e["abs_err_eV_A3"] for e in sc)
        L.append(
            f"`stress_check.json`: for {len({e['frame_id'] for e in sc})} frames "
            f"({', '.join(sorted({e['family'] for e in sc}))}) the cell was strained by "
            f"+-h (h = {STRESS_CHECK_H:g}; eps_ii = +-h, or eps_ij = eps_ji = +-h/2 for shear; "
            "positions scaled with the cell) and sigma_fd = (E+ - E-) / (2 h V) compared with "
            f"the stored label for xx, yy, xy, yz: max abs deviation {abs_e:.2e} eV/A^3, max "
            f"relative deviation {max(rel):.2%} (components with |sigma| > 1e-4 eV/A^3); all "
            "signs agree. The residual is float32 round-off of the teacher energy.\n")
    L.append("## How it was made\n")
    L.append("Regenerate (about the same wall time, single thread):\n")
    L.append("```bash\n" + "\n".join(ctx["setup_cmds"]) + "\n" + ctx["command"] + "\n```\n")
    L.append(ctx.get("generation") or generation_line(ctx))
    L.append(f"File: `mptrj_like.extxyz.gz`, {ctx['file_bytes'] / 1e6:.2f} MB, SHA-256 "
             f"`{ctx['file_sha']}`. Overview plot: `dataset_overview.png`.\n")
    path.write_text("\n".join(L))


def generation_line(ctx: dict) -> str:
    return (
        f"Generation: {ctx['wall_s'] / 60:.1f} min wall time for the whole script "
        f"({ctx['n_calls']} SevenNet-0 evaluations on {ctx['n_atoms_eval']} atoms in "
        f"{ctx['t_7net']:.0f} s, CHGNet {ctx['t_chgnet']:.0f} s), one thread "
        f"(OMP_NUM_THREADS=1, torch.set_num_threads(1)) on {ctx['machine']}, "
        f"{ctx['date']}. Seed {ctx['seed']} (numpy Generator per family: output is "
        "deterministic given the seed).\n")


# ----------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------


def resplit(outdir: Path, seed: int) -> None:
    """Reassign ``split`` in OUTDIR/mptrj_like.extxyz.gz with `assign_splits` (labels and
    frame order unchanged) and rewrite the split section and file line of its README."""
    path = outdir / "mptrj_like.extxyz.gz"
    atoms = ase.io.read(path, ":")
    frames = [Frame(a, 0.0, None, None, a.info["kind"], a.info["family"],
                    a.info["family"].split(":")[0]) for a in atoms]
    split = assign_splits(frames, seed)
    moved = collections.Counter()
    for a in atoms:
        new = split[a.info["family"]]
        if new != a.info["split"]:
            moved[(a.info["family"], a.info["split"], new)] += 1
        a.info["split"] = new
    for (fam, old, new), n in sorted(moved.items()):
        log(f"  {fam}: {old} -> {new} ({n} frames)")
    write_extxyz_gz(path, atoms)
    readme = outdir / "README.md"
    text = readme.read_text()
    head, rest = text.split("## Splits\n", 1)
    _, tail = rest.split("## Atoms per frame\n", 1)
    text = head + "\n".join(splits_section(atoms)) + "\n## Atoms per frame\n" + tail
    size, digest = path.stat().st_size / 1e6, sha256(path)
    text = re.sub(r"File: `mptrj_like.extxyz.gz`, [0-9.]+ MB, SHA-256 `[0-9a-f]+`",
                  f"File: `mptrj_like.extxyz.gz`, {size:.2f} MB, SHA-256 `{digest}`", text)
    readme.write_text(text)
    log(f"rewrote {path} and {readme}: {sum(moved.values())} frames changed split")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=20240711)
    ap.add_argument("--outdir", type=Path, default=REPO / "data")
    ap.add_argument("--pilot", type=int, default=0,
                    help="only the first K families per group and K Fe-Cr compositions")
    ap.add_argument("--resplit", action="store_true",
                    help="only reapply the split rule to OUTDIR's existing file (no teacher, "
                         "labels untouched) and update the split tables of its README")
    args = ap.parse_args()
    if args.resplit:
        resplit(args.outdir, args.seed)
        return
    t_start = time.time()
    args.outdir.mkdir(parents=True, exist_ok=True)
    log(f"torch threads {single_thread_torch().get_num_threads()}; loading teachers")
    teacher = Teacher()
    covered = sorted({chemical_symbols[z] for z in teacher.calc.type_map},
                     key=lambda s: atomic_numbers[s])
    el_specs, skipped, guessed = element_specs(covered)
    spec_groups = [el_specs] + prototype_spec_groups()
    fecr_x = list(FECR_X)
    full_counts = {g[0].group: len(g) for g in spec_groups if g}
    full_counts["fecr"] = len(fecr_x)
    if args.pilot:
        spec_groups = [g[:: max(1, len(g) // args.pilot)][: args.pilot] for g in spec_groups]
        fecr_x = fecr_x[:: max(1, len(fecr_x) // args.pilot)][: args.pilot]
    specs = [s for g in spec_groups for s in g]
    log(f"{len(specs)} prototype/element families + {len(fecr_x)} Fe-Cr compositions")
    frames: list[Frame] = []
    failed: dict[str, str] = {}
    timing = collections.defaultdict(float)
    nframes_group = collections.Counter()
    for k, spec in enumerate(specs):
        t0 = time.time()
        try:
            fr = run_family(teacher, spec, args.seed)
        except Exception as exc:  # record and go on
            failed[spec.name] = f"{type(exc).__name__}: {exc}"[:200]
            log(f"FAILED {spec.name}: {failed[spec.name]}")
            continue
        mm = teacher.magmoms([f.atoms for f in fr])
        for f, m in zip(fr, mm, strict=True):
            f.magmoms = m
        frames += fr
        timing[spec.group] += time.time() - t0
        nframes_group[spec.group] += len(fr)
        if k % 20 == 0:
            log(f"  {k + 1}/{len(specs)} {spec.name}: {len(fr)} frames, {time.time() - t0:.1f} s; "
                f"total {len(frames)} frames, {time.time() - t_start:.0f} s")
    for x in fecr_x:
        t0 = time.time()
        fr = run_fecr(teacher, x, args.seed)
        mm = teacher.magmoms([f.atoms for f in fr])
        for f, m in zip(fr, mm, strict=True):
            f.magmoms = m
        frames += fr
        timing["fecr"] += time.time() - t0
        nframes_group["fecr"] += len(fr)
        log(f"  {fecr_name(x)}: {len(fr)} frames, {time.time() - t0:.1f} s; total "
            f"{len(frames)} frames, {time.time() - t_start:.0f} s")
    for g in timing:
        log(f"group {g:12s}: {nframes_group[g]:5d} frames {timing[g]:7.1f} s "
            f"({timing[g] / max(1, nframes_group[g]):.3f} s/frame)")
    # filter
    kept, rejected = [], []
    for fr in frames:
        r = reject_reason(fr)
        if r is None:
            kept.append(fr)
        else:
            rejected.append((fr.family, fr.kind, r))
    log(f"kept {len(kept)}, rejected {len(rejected)}")
    split = assign_splits(kept, args.seed)
    out_atoms = []
    for i, fr in enumerate(kept):
        a = fr.atoms.copy()
        a.info = {
            "REF_energy": float(fr.energy),
            "REF_stress": np.asarray(fr.stress, dtype=np.float64).reshape(9),
            "family": fr.family,
            "split": split[fr.family],
            "kind": fr.kind,
            "frame_id": i,
        }
        a.arrays["REF_forces"] = np.asarray(fr.forces, dtype=np.float64)
        a.arrays["REF_magmoms"] = np.asarray(fr.magmoms, dtype=np.float64)
        out_atoms.append(a)
    out_file = args.outdir / "mptrj_like.extxyz.gz"
    write_extxyz_gz(out_file, out_atoms)
    log(f"wrote {out_file} ({out_file.stat().st_size / 1e6:.2f} MB)")
    # stress check on the frames as written
    back = ase.io.read(out_file, ":")
    entries = stress_check(teacher, back, kept, STRESS_CHECK_H)
    for e in entries:
        log(f"  stress check frame {e['frame_id']} {e['family']} {e['component']}: fd "
            f"{e['sigma_fd_eV_A3']:+.6f} label {e['sigma_label_eV_A3']:+.6f}")
    rel = [e["rel_err"] for e in entries if abs(e["sigma_label_eV_A3"]) > 1e-4]
    (args.outdir / "stress_check.json").write_text(json.dumps({
        "description": "Finite-strain check of the stored stress labels: sigma_fd = "
                       "(E(+h) - E(-h)) / (2 h V) with the teacher (SevenNet-0); "
                       "eps_ii = +-h for normal components, eps_ij = eps_ji = +-h/2 for shear; "
                       "new_cell = cell @ (I + eps), positions scaled with the cell. "
                       "ASE sign convention (positive = tensile), eV/A^3.",
        "teacher": "SevenNet-0 (7net-0, SevenNet_0__11Jul2024)",
        "max_abs_err_eV_A3": max(e["abs_err_eV_A3"] for e in entries) if entries else None,
        "max_rel_err": max(rel) if rel else None,
        "entries": entries,
    }, indent=1))
    make_plot(args.outdir / "dataset_overview.png", out_atoms)
    wall = time.time() - t_start
    script_rel = Path(__file__).resolve().relative_to(REPO)
    cmd_args = [f"--seed {args.seed}"]
    if args.pilot:
        cmd_args.append(f"--pilot {args.pilot}")
    if args.outdir.resolve() != (REPO / "data").resolve():
        cmd_args.append(f"--outdir {shlex.quote(str(args.outdir))}")
    ctx = dict(
        out_atoms=out_atoms, versions=versions(), checkpoints=checkpoints(),
        skipped_elements=skipped, guessed_elements=guessed, rejected=rejected,
        failed_families=failed, stress_entries=entries,
        setup_cmds=teacher_setup_commands(),
        command="OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv-teacher/bin/python "
                f"{script_rel} " + " ".join(cmd_args),
        wall_s=wall, n_calls=teacher.n_calls, n_atoms_eval=teacher.n_atoms_evaluated,
        t_7net=teacher.t_7net, t_chgnet=teacher.t_chgnet,
        machine=f"{cpu_name()} ({os.cpu_count()} cores visible, 1 used), {platform.system()} "
                f"{platform.release()}",
        date=time.strftime("%Y-%m-%d"), seed=args.seed,
        file_bytes=out_file.stat().st_size, file_sha=sha256(out_file),
    )
    write_readme(args.outdir / "README.md", ctx)
    per_split = ", ".join(
        f"{s} {sum(1 for a in out_atoms if a.info['split'] == s)}"
        for s in ("train", "val", "test"))
    log(f"done in {wall / 60:.1f} min; {len(out_atoms)} frames ({per_split})")
    if "--pilot" in sys.argv:
        log("pilot timing per group (s/frame): " + ", ".join(
            f"{g} {timing[g] / max(1, nframes_group[g]):.2f}" for g in timing))
        n_done = collections.Counter(s.group for s in specs)
        n_done["fecr"] = len(fecr_x)
        est_t = sum(timing[g] / n_done[g] * full_counts[g] for g in timing)
        est_n = sum(nframes_group[g] / n_done[g] * full_counts[g] for g in timing)
        est_fecr = nframes_group["fecr"] / n_done["fecr"] * full_counts["fecr"]
        log(f"full-run estimate: {est_n:.0f} frames ({est_fecr:.0f} Fe-Cr = "
            f"{est_fecr / est_n:.1%}), {est_t / 60:.1f} min of family generation")


if __name__ == "__main__":
    main()
