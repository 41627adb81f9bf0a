#!/usr/bin/env python
"""Append element-substituted training families to ``data/mptrj_like.extxyz.gz``.

Run after ``make_dataset.py``, in the teacher venv::

    .venv-teacher/bin/python experiments/substitute_dataset.py --seed 20240711 --jobs 2

Every *train* compound family of the base set (never a val/test one) is the template of
one new family: one of its elements is swapped, on every site, for a chemically similar
element (`SIMILAR`: a neighbour in its group or period with a common oxidation state),
the cell is rescaled by the covalent radii, and the new family runs through the same
pipeline as the base set (E-V scan, short relaxation, strain, rattles, MD with p = 0.35),
labelled by the same teachers.  This is how WBM, Matbench-Discovery's test set, was made
from Materials Project, and it adds chemistry the base set lacks at the same prototypes.

The new families form the group ``substituted`` (family ``substituted:<prototype>:<formula>``),
which is always in the train split.  A substitution is skipped when its composition equals
that of any val/test family (any prototype) or of an existing family of the same prototype,
so val and test stay exactly what they were.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / torch load (one thread per worker)

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing as mp  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from functools import reduce  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ase.io  # noqa: E402
import make_dataset as md  # noqa: E402
import numpy as np  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.data import atomic_numbers, chemical_symbols  # noqa: E402

GROUP = "substituted"

# element -> similar elements (same group or neighbour, shared common oxidation state)
SIMILAR = {
    "Li": "Na", "Na": "Li K", "K": "Na Rb", "Rb": "K Cs", "Cs": "Rb",
    "Be": "Mg", "Mg": "Ca Zn", "Ca": "Mg Sr", "Sr": "Ca Ba", "Ba": "Sr",
    "Sc": "Y Lu", "Y": "Sc La", "La": "Y Ce", "Ce": "La Pr", "Pr": "Ce Nd", "Nd": "Pr Sm",
    "Ti": "Zr V", "Zr": "Ti Hf", "Hf": "Zr", "V": "Nb Cr", "Nb": "V Ta", "Ta": "Nb",
    "Cr": "Mo Mn", "Mo": "Cr W", "W": "Mo", "Mn": "Fe Cr", "Fe": "Co Mn Ru", "Co": "Ni Fe Rh",
    "Ni": "Co Pd Cu", "Cu": "Ag Ni", "Ag": "Cu Au", "Au": "Ag Pt", "Pd": "Pt Ni", "Pt": "Pd Ir",
    "Ru": "Os Fe", "Rh": "Ir Co", "Ir": "Rh Pt", "Os": "Ru",
    "Zn": "Cd Mg", "Cd": "Zn Hg", "Hg": "Cd",
    "Al": "Ga Sc", "Ga": "Al In", "In": "Ga Tl", "Tl": "In",
    "Si": "Ge", "Ge": "Si Sn", "Sn": "Ge Pb", "Pb": "Sn",
    "N": "P", "P": "As N", "As": "P Sb", "Sb": "As Bi", "Bi": "Sb",
    "O": "S", "S": "Se O", "Se": "S Te", "Te": "Se",
    "F": "Cl", "Cl": "Br F", "Br": "Cl I", "I": "Br",
    "U": "Th Np", "Th": "U", "Np": "U Pu", "Pu": "Np", "Eu": "Sm", "Sm": "Eu",
}


def composition_key(symbols) -> tuple:
    """Reduced composition: ((element, count / gcd), ...) sorted by element."""
    counts = collections.Counter(symbols)
    g = reduce(math.gcd, counts.values())
    return tuple(sorted((el, n // g) for el, n in counts.items()))


def swap(formula: str, old: str, new: str) -> str:
    return re.sub(rf"{old}(?![a-z])", new, formula)


def substituted_spec(template: md.FamilySpec, old: str, new: str) -> md.FamilySpec:
    """The template's structure with ``old`` -> ``new`` on every site, cell scaled by the
    ratio of mean covalent radii (the E-V scan and relaxation then find the volume)."""
    proto, formula = template.name.split(":", 1)
    name = f"{GROUP}:{proto}:{swap(formula, old, new)}"

    def build(template=template, old=old, new=new) -> Atoms:
        a = template.build()
        sym = [new if s == old else s for s in a.get_chemical_symbols()]
        r0 = np.mean([md.r_cov(s) for s in a.get_chemical_symbols()])
        r1 = np.mean([md.r_cov(s) for s in sym])
        return Atoms(sym, scaled_positions=a.get_scaled_positions(),
                     cell=a.cell[:] * (r1 / r0), pbc=True)

    return md.FamilySpec(GROUP, name, build)


def plan(atoms: list[Atoms], seed: int, covered: set[str]) -> list[tuple[str, str, str]]:
    """(template family, old element, new element): one substitution per train template
    family (deterministic given the seed).
    Compositions come from the frames themselves (family names are labels, not formulas)."""
    split_of, comp = {}, {}
    for a in atoms:
        split_of[a.info["family"]] = a.info["split"]
        comp.setdefault(a.info["family"], a.get_chemical_symbols())
    held_out = {composition_key(sym) for f, sym in comp.items() if split_of[f] != "train"}
    proto = lambda f: f.split(":")[-2] if f.startswith(GROUP + ":") else f.split(":")[0]
    taken = {(proto(f), composition_key(sym)) for f, sym in comp.items()}
    out = []
    for group in md.prototype_spec_groups():
        for spec in group:
            if split_of.get(spec.name) != "train":
                continue
            rng = md.stable_rng(seed, "substitute:" + spec.name)
            sym = comp[spec.name]
            options = [(o, n) for o in sorted(set(sym)) for n in SIMILAR.get(o, "").split()
                       if n in covered and n not in sym]
            for k in rng.permutation(len(options)):
                old, new = options[k]
                key = composition_key([new if x == old else x for x in sym])
                if key in held_out or (proto(spec.name), key) in taken:
                    continue
                taken.add((proto(spec.name), key))
                out.append((spec.name, old, new))
                break
    return out


def templates() -> dict[str, md.FamilySpec]:
    return {spec.name: spec for group in md.prototype_spec_groups() for spec in group}


_WORKER: dict = {}


def _run(args) -> tuple[str, list, str]:
    """Worker: (template, old, new), seed -> (new family, frames with magmoms, error)."""
    (template, old, new), seed = args
    if not _WORKER:
        _WORKER.update(teacher=md.Teacher(), templates=templates())
    spec = substituted_spec(_WORKER["templates"][template], old, new)
    teacher = _WORKER["teacher"]
    try:
        frames = md.run_family(teacher, spec, seed)
    except Exception as exc:  # recorded, like the base set's failed families
        return spec.name, [], f"{type(exc).__name__}: {exc}"[:200]
    for f, m in zip(frames, teacher.magmoms([f.atoms for f in frames]), strict=True):
        f.magmoms = m
    return spec.name, frames, ""


def run_and_append(atoms: list[Atoms], plan_: list, specs: list, seed: int, jobs: int,
                   t0: float) -> tuple[list, list, dict]:
    """Label the planned families with the teachers (``jobs`` worker processes) and append
    their kept frames to ``atoms`` as train frames, in plan order.
    Returns (kept frames, rejected (family, kind, why), failed {family: error})."""
    ctx = mp.get_context("spawn")
    results = {}
    with ctx.Pool(jobs) as pool:
        for k, (name, frames, err) in enumerate(
                pool.imap_unordered(_run, [(t, seed) for t in plan_])):
            results[name] = (frames, err)
            if err:
                md.log(f"FAILED {name}: {err}")
            if k % 20 == 0:
                md.log(f"  {k + 1}/{len(specs)} {name}: {len(frames)} frames, "
                       f"{time.time() - t0:.0f} s")
    kept, rejected, failed = [], [], {}
    for spec in specs:  # file order = plan order, whatever the workers' order
        frames, err = results[spec.name]
        if err:
            failed[spec.name] = err
        for fr in frames:
            why = md.reject_reason(fr)
            (rejected.append((fr.family, fr.kind, why)) if why else kept.append(fr))
    n0 = len(atoms)
    for i, fr in enumerate(kept):
        a = fr.atoms.copy()
        a.info = {"REF_energy": float(fr.energy),
                  "REF_stress": np.asarray(fr.stress, dtype=np.float64).reshape(9),
                  "family": fr.family, "split": "train", "kind": fr.kind, "frame_id": n0 + i}
        a.arrays["REF_forces"] = np.asarray(fr.forces, dtype=np.float64)
        a.arrays["REF_magmoms"] = np.asarray(fr.magmoms, dtype=np.float64)
        atoms.append(a)
    return kept, rejected, failed


def arg_parser(doc: str) -> argparse.ArgumentParser:
    """The options every supplement script takes: --seed, --outdir, --jobs."""
    ap = argparse.ArgumentParser(description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=20240711)
    ap.add_argument("--outdir", type=Path, default=md.REPO / "data")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (one teacher each)")
    return ap


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--limit", type=int, default=0, help="only the first N new families")
    args = ap.parse_args()
    t0 = time.time()
    path = args.outdir / "mptrj_like.extxyz.gz"
    atoms = ase.io.read(path, ":")
    if any(a.info["family"].startswith(GROUP + ":") for a in atoms):
        raise SystemExit(f"{path} already holds {GROUP} families")
    covered = sorted({chemical_symbols[z] for z in md.Teacher().calc.type_map},
                     key=lambda s: atomic_numbers[s])
    plan_ = plan(atoms, args.seed, set(covered))[: args.limit or None]
    lookup = templates()
    specs = [substituted_spec(lookup[t], old, new) for t, old, new in plan_]
    md.log(f"{len(specs)} substituted families from {path}")
    kept, rejected, failed = run_and_append(atoms, plan_, specs, args.seed, args.jobs, t0)
    md.write_extxyz_gz(path, atoms)
    wall = time.time() - t0
    md.log(f"appended {len(kept)} frames of {len(specs) - len(failed)} families "
           f"({len(rejected)} rejected, {len(failed)} failed) in {wall / 60:.1f} min: "
           f"{len(atoms)} frames")
    update_readme(args.outdir, atoms, covered, len(specs) - len(failed), len(kept), rejected,
                  failed, wall, args)


def update_readme(outdir: Path, atoms, covered, n_fam, n_frames, rejected, failed, wall,
                  args) -> None:
    """Rewrite data/README.md for the merged file: the base set's generation facts are
    kept from the old README, the supplement's are added."""
    old = (outdir / "README.md").read_text()
    base_line = re.search(r"^Generation: .*$", old, re.M).group(0)
    base_cmd = re.search(r"^OMP_NUM_THREADS=1 .*make_dataset\.py.*$", old, re.M).group(0)
    extra = " ".join(f"--{k} {v}" for k, v in (("seed", args.seed), ("jobs", args.jobs)))
    rewrite_readme(
        outdir, atoms, covered, rejected, failed,
        command=base_cmd + "\n.venv-teacher/bin/python experiments/substitute_dataset.py " + extra,
        generation=(base_line.replace("Generation:", "Generation of the base set:", 1) + "\n\n"
                    f"Substituted families (`experiments/substitute_dataset.py`, "
                    f"{time.strftime('%Y-%m-%d')}): {n_fam} families, {n_frames} frames in "
                    f"{wall / 60:.1f} min wall time with {args.jobs} worker process(es), one "
                    "thread each. Each is a train compound family of the base set with one "
                    "element swapped for a similar one on every site (never a val/test family "
                    "as template, never a val/test composition); they are all in the train "
                    "split.\n"))


def rewrite_readme(outdir: Path, atoms, covered, rejected, failed, command: str,
                   generation: str) -> None:
    """data/README.md and the overview plot for ``atoms`` (the whole file as written), with
    the given generation command lines and generation paragraphs."""
    sc = json.loads((outdir / "stress_check.json").read_text())["entries"]
    _, skipped, guessed = md.element_specs(covered)
    path = outdir / "mptrj_like.extxyz.gz"
    ctx = dict(
        out_atoms=atoms, versions=md.versions(), checkpoints=md.checkpoints(),
        skipped_elements=skipped, guessed_elements=guessed, rejected=rejected,
        failed_families=failed, stress_entries=sc, setup_cmds=md.teacher_setup_commands(),
        command=command, generation=generation,
        file_bytes=path.stat().st_size, file_sha=md.sha256(path),
    )
    md.write_readme(outdir / "README.md", ctx)
    md.make_plot(outdir / "dataset_overview.png", atoms)

if __name__ == "__main__":
    main()
