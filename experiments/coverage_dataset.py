#!/usr/bin/env python
"""Append element-coverage training families to ``data/mptrj_like.extxyz.gz``.

Run after ``substitute_dataset.py``, in the teacher venv::

    .venv-teacher/bin/python experiments/coverage_dataset.py --seed 20240711 --jobs 2

MPtrj holds compounds of every element it covers.  The base set and its one substitution
per template left some elements (rare earths, actinides, Tc, Re) with no train compound at
all, only their elemental crystal, so any val/test compound of theirs asked the model for
chemistry it had seen in no compound.  This pass gives every element the teacher covers at
least ``--min-compounds`` train compound families, by the substitution of
``substitute_dataset.py``: a train compound family of the base set holding an element
similar to the under-covered one (``partners``: `SIMILAR` of that script plus `EXTRA`, in
both directions) gets that element swapped in on every site.  The same skip rules hold: no
val/test composition in any prototype, no repeat of a prototype and composition already in
the file.  Elements without a partner (the noble gases) stay as they are.  The new families
join the train-only group ``substituted``.  ``--dry-run`` prints the plan without teachers.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / torch load (one thread per worker)

import collections  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ase.io  # noqa: E402
import make_dataset as md  # noqa: E402
import substitute_dataset as sd  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.data import atomic_numbers  # noqa: E402

# similarities beyond substitute_dataset.SIMILAR (same common oxidation state, neighbours
# along the lanthanide and actinide rows, Y with the heavy lanthanides, Tc/Re with Mn)
EXTRA = {
    "Th": "Ce Zr Hf", "Pa": "Th U Ta", "U": "Ce", "Np": "Ce", "Pu": "U Ce Zr", "Ac": "La",
    "Nd": "La", "Pm": "Nd Sm La", "Sm": "Nd Gd", "Gd": "Eu Tb Y", "Tb": "Gd Dy Y",
    "Dy": "Tb Ho Y", "Ho": "Dy Er Y", "Er": "Ho Tm Y", "Tm": "Er Yb Y", "Yb": "Tm Lu Y",
    "Lu": "Yb Y", "Tc": "Mn Re Ru", "Re": "Tc W", "B": "Al", "Hg": "Zn",
}


def partners() -> dict[str, set[str]]:
    """element -> the elements it may replace (SIMILAR and EXTRA, symmetrised)."""
    out = collections.defaultdict(set)
    for table in (sd.SIMILAR, EXTRA):
        for a, bs in table.items():
            for b in bs.split():
                out[a].add(b)
                out[b].add(a)
    return out


def compound_counts(comp: dict, split_of: dict) -> collections.Counter:
    """element -> number of train families of two or more elements that hold it."""
    counts = collections.Counter()
    for fam, sym in comp.items():
        if split_of[fam] == "train" and len(set(sym)) > 1:
            counts.update(set(sym))
    return counts


def plan(atoms: list[Atoms], seed: int, covered: list[str], minimum: int) -> list:
    """(template family, old element, new element) until every covered element with a
    partner is in ``minimum`` train compound families (or its options run out);
    deterministic given the seed.  Templates are base-set train compound families."""
    split_of, comp = {}, {}
    for a in atoms:
        split_of[a.info["family"]] = a.info["split"]
        comp.setdefault(a.info["family"], a.get_chemical_symbols())
    held_out = {sd.composition_key(s) for f, s in comp.items() if split_of[f] != "train"}
    proto = lambda f: f.split(":")[-2] if f.startswith(sd.GROUP + ":") else f.split(":")[0]
    taken = {(proto(f), sd.composition_key(s)) for f, s in comp.items()}
    pool = [spec.name for group in md.prototype_spec_groups() for spec in group
            if split_of.get(spec.name) == "train" and len(set(comp[spec.name])) > 1]
    counts, near, out = compound_counts(comp, split_of), partners(), []
    for new in covered:
        options = [(t, old) for t in pool for old in sorted(set(comp[t]))
                   if old in near[new] and new not in comp[t]]
        rng = md.stable_rng(seed, "coverage:" + new)
        for k in rng.permutation(len(options)):
            if counts[new] >= minimum:
                break
            t, old = options[k]
            key = sd.composition_key([new if x == old else x for x in comp[t]])
            if key in held_out or (proto(t), key) in taken:
                continue
            taken.add((proto(t), key))
            counts[new] += 1
            out.append((t, old, new))
    return out


def main() -> None:
    ap = sd.arg_parser(__doc__)
    ap.add_argument("--min-compounds", type=int, default=4)
    ap.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    args = ap.parse_args()
    t0 = time.time()
    path = args.outdir / "mptrj_like.extxyz.gz"
    atoms = ase.io.read(path, ":")
    covered = sorted({md.chemical_symbols[z] for z in md.Teacher().calc.type_map},
                     key=lambda s: atomic_numbers[s])
    plan_ = plan(atoms, args.seed, covered, args.min_compounds)
    lookup = sd.templates()
    specs = [sd.substituted_spec(lookup[t], old, new) for t, old, new in plan_]
    md.log(f"{len(specs)} coverage families: " + ", ".join(s.name for s in specs))
    if args.dry_run or not specs:
        return
    kept, rejected, failed = sd.run_and_append(atoms, plan_, specs, args.seed, args.jobs, t0)
    md.write_extxyz_gz(path, atoms)
    wall = time.time() - t0
    n_fam = len(specs) - len(failed)
    md.log(f"appended {len(kept)} frames of {n_fam} families ({len(rejected)} rejected, "
           f"{len(failed)} failed) in {wall / 60:.1f} min: {len(atoms)} frames")
    split_of = {a.info["family"]: a.info["split"] for a in atoms}
    comp = {a.info["family"]: a.get_chemical_symbols() for a in atoms}
    counts, near = compound_counts(comp, split_of), partners()
    short = ", ".join(f"{e} {counts[e]}" for e in covered
                      if near[e] and counts[e] < args.min_compounds)
    old = (args.outdir / "README.md").read_text()
    cmds = re.search(r"^OMP_NUM_THREADS=1 .*make_dataset\.py.*\n.*substitute_dataset\.py.*$",
                     old, re.M).group(0)
    paragraphs = re.search(r"^Generation of the base set: .*?(?=^File: )", old,
                           re.M | re.S).group(0)
    sd.rewrite_readme(
        args.outdir, atoms, covered, rejected, failed,
        command=cmds + "\n.venv-teacher/bin/python experiments/coverage_dataset.py "
        f"--seed {args.seed} --jobs {args.jobs} --min-compounds {args.min_compounds}",
        generation=paragraphs.rstrip("\n") + "\n\n"
        f"Coverage families (`experiments/coverage_dataset.py`, {time.strftime('%Y-%m-%d')}): "
        f"{n_fam} families, {len(kept)} frames in {wall / 60:.1f} min wall time with "
        f"{args.jobs} worker process(es). They bring every element the teacher covers towards "
        f"{args.min_compounds} train compound families (before, rare earths, actinides, Tc and "
        "Re occurred in train only as elemental crystals), by the same substitution into "
        "base-set train families and the same skip rules; they are in the train-only group "
        "`substituted`. Where the similar-element templates ran out, fewer: "
        f"{short or 'none'}; the noble gases have no compound.\n")


if __name__ == "__main__":
    main()
