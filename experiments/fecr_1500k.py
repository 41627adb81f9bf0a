#!/usr/bin/env python
"""Flagship example: a bcc Fe-Cr random alloy (Fe80Cr20) in NVT at 1500 K.

    .venv/bin/python experiments/fecr_1500k.py                  # shipped model, 1,024 atoms
    .venv/bin/python experiments/fecr_1500k.py --size 6         # 432 atoms
    .venv/bin/python experiments/fecr_1500k.py --model m.npz --long

Cost on this machine (two CPU cores, 23 GB; AMD EPYC dev VM, 2026-11-27) with the shipped
model (tiny preset, r_c 4.5 A, r_3 3 A, unordered angle rows, 262k parameters, float32,
rematerialised blocks): 1,024 atoms (~90 unordered angles per atom at 1500 K) take 1.40 s per
MD step (0.12 ns/day at 2 fs); the defaults (100 equilibration + 300 production steps, capped
by --max-minutes 12) finish in about 10 minutes.  A model with the paper's cutoffs (r_3 = 4 A:
~300 angles per atom) costs several times more.  --long (2,000 + 20,000 steps) is for a real
machine.

Steps: build a size^3 bcc supercell (lattice constant 2.90 A, about the thermally expanded
value), put Cr on a random 20 % of the sites, draw velocities at 1500 K, equilibrate with a
Langevin thermostat, then run NVT production (Nose-Hoover chain by default).  Writes, in --out:
trajectory.traj (production frames), rdf.png / rdf.csv (total and partial g(r), averaged over
the production frames), msd.png / msd.csv (mean-squared displacement per species),
temperature.png / temperature.csv (equilibration + production), md.log, and summary.json
(atoms, steps, wall time per MD step, ns/day, compilations, model).
The defaults are meant to finish in under 15 minutes on two CPU cores: ``--max-minutes`` (12 by
default) caps the wall time of the MD, so equilibration and production stop early (at a log
boundary) on a slower machine or with a larger model; summary.json records the steps done.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="bundle path / shipped name (default: shipped)")
    p.add_argument("--dtype", default=None, choices=("float32", "float64"))
    p.add_argument("--size", type=int, default=8,
                   help="bcc cubic cells per side, 2 atoms each (6: 432 atoms, 8: 1,024)")
    p.add_argument("--lattice", type=float, default=2.90, help="A")
    p.add_argument("--cr", type=float, default=0.20, help="Cr fraction")
    p.add_argument("--temperature", type=float, default=1500.0, help="K")
    p.add_argument("--timestep", type=float, default=2.0, help="fs")
    p.add_argument("--equil-steps", type=int, default=100)
    p.add_argument("--steps", type=int, default=300, help="production steps")
    p.add_argument("--long", action="store_true", help="2,000 equilibration + 20,000 steps")
    p.add_argument("--thermostat", default="nose-hoover")
    p.add_argument("--no-remat", action="store_true",
                   help="keep every block's activations for the force pass (more memory; "
                        "measured with the 'small' preset at 1,024 atoms: ~25 GB)")
    p.add_argument("--loginterval", type=int, default=5)
    p.add_argument("--max-minutes", type=float, default=12.0,
                   help="wall-clock budget of the MD (equilibration at most a third of it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="experiments/results/fecr_1500k")
    args = p.parse_args(argv)
    if args.long:
        args.equil_steps, args.steps, args.max_minutes = 2000, 20000, float("inf")
    return args


def random_alloy(size: int, lattice: float, cr_fraction: float, seed: int):
    """bcc Fe supercell with round(cr_fraction * N) random sites turned into Cr."""
    from ase.build import bulk

    atoms = bulk("Fe", "bcc", a=lattice, cubic=True) * (size, size, size)
    rng = np.random.default_rng(seed)
    n_cr = int(round(cr_fraction * len(atoms)))
    atoms.numbers[rng.choice(len(atoms), n_cr, replace=False)] = 24
    return atoms


def hot_budgets(calc, atoms, seed: int):
    """Budgets sized on a copy rattled by 0.2 A (about the thermal displacement at 1500 K) with
    10 % headroom: starting from the perfect lattice, the neighbour (and above all the angle)
    counts grow as the crystal heats up, and budgets sized on it would be outgrown at once."""
    from matris.calculator import grow_budgets

    hot = atoms.copy()
    hot.rattle(0.2, seed=seed)
    return grow_budgets([calc.graph(hot)], None, headroom=0.1)


def rdf(frames, rmax: float, nbins: int = 200, pair=None):
    """(r [nbins], g(r) [nbins]) averaged over frames; pair = (Z1, Z2) for a partial g(r)."""
    from matscipy.neighbours import neighbour_list

    edges = np.linspace(0.0, rmax, nbins + 1)
    hist = np.zeros(nbins)
    norm = 0.0
    for atoms in frames:
        i, j, d = neighbour_list("ijd", atoms, rmax)
        z = atoms.numbers
        n_i, n_j = len(atoms), len(atoms)
        if pair is not None:
            keep = (z[i] == pair[0]) & (z[j] == pair[1])
            d = d[keep]
            n_i, n_j = np.sum(z == pair[0]), np.sum(z == pair[1])
        hist += np.histogram(d, edges)[0]
        norm += n_i * n_j / atoms.get_volume()
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    return 0.5 * (edges[1:] + edges[:-1]), hist / (shell * max(norm, 1e-300))


def msd(frames, numbers, species):
    """[frames] mean-squared displacement (A^2) of atoms of `species` from the first frame
    (ASE MD keeps positions unwrapped, so no image correction is needed)."""
    ref = frames[0].positions[numbers == species]
    return np.array([np.mean(np.sum((f.positions[numbers == species] - ref) ** 2, axis=1))
                     for f in frames])


def save_plot(path: Path, xlabel: str, ylabel: str, curves: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (x, y) in curves.items():
        ax.plot(x, y, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_csv(path: Path, header: list[str], columns: list) -> None:
    np.savetxt(path, np.column_stack(columns), delimiter=",", header=",".join(header),
               comments="")


def analyse(out: Path, traj_path: Path, timestep_fs: float, loginterval: int) -> dict:
    """RDF and MSD plots/CSVs from the production trajectory."""
    from ase.io import read

    frames = read(traj_path, ":")
    numbers = frames[0].numbers
    rmax = min(6.0, 0.49 * min(frames[0].cell.lengths()))
    r, g = rdf(frames, rmax)
    partial = {f"{a}-{b}": rdf(frames, rmax, pair=(za, zb))[1]
               for (a, za), (b, zb) in [(("Fe", 26), ("Fe", 26)), (("Fe", 26), ("Cr", 24)),
                                        (("Cr", 24), ("Cr", 24))]}
    save_plot(out / "rdf.png", "r (A)", "g(r)", {"total": (r, g)} | {k: (r, v) for k, v in
                                                                     partial.items()},
              f"Fe-Cr at 1500 K: g(r) over {len(frames)} frames")
    save_csv(out / "rdf.csv", ["r", "g_total", *partial], [r, g, *partial.values()])
    t_ps = np.arange(len(frames)) * loginterval * timestep_fs / 1000.0
    msds = {s: msd(frames, numbers, z) for s, z in (("Fe", 26), ("Cr", 24))}
    save_plot(out / "msd.png", "t (ps)", "MSD (A^2)", {k: (t_ps, v) for k, v in msds.items()},
              "Fe-Cr at 1500 K: mean-squared displacement")
    save_csv(out / "msd.csv", ["t_ps", "msd_fe", "msd_cr"], [t_ps, msds["Fe"], msds["Cr"]])
    first_peak = float(r[np.argmax(g)])
    return {"frames": len(frames), "rdf_first_peak_A": first_peak,
            "msd_final_A2": {k: float(v[-1]) for k, v in msds.items()}}


def temperature_outputs(out: Path, equil, prod) -> None:
    t_eq, t_prod = np.asarray(equil.time_ps), np.asarray(prod.time_ps) + equil.time_ps[-1]
    save_plot(out / "temperature.png", "t (ps)", "T (K)",
              {"equilibration (Langevin)": (t_eq, equil.temperature),
               "production (NVT)": (t_prod, prod.temperature)}, "Fe-Cr: temperature")
    save_csv(out / "temperature.csv", ["t_ps", "T_K", "epot_eV", "production"],
             [np.concatenate([t_eq, t_prod]), np.concatenate([equil.temperature, prod.temperature]),
              np.concatenate([equil.epot, prod.epot]),
              np.concatenate([np.zeros(len(t_eq)), np.ones(len(t_prod))])])


def main(argv=None) -> dict:
    args = parse_args(argv)
    if argv is None:  # run as a program: malloc tunables for XLA's buffers (matris.runtime)
        from matris.runtime import reexec_with_tunables

        reexec_with_tunables("inference")
    import jax

    import matris
    from matris.md import run_md

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atoms = random_alloy(args.size, args.lattice, args.cr, args.seed)
    model = matris.load(args.model, dtype=args.dtype)
    if not args.no_remat:  # rematerialise blocks in the force pass: same numbers, less memory
        model = matris.Model(model.config.replace(remat=True), model.params, model.metadata)
    calc = matris.MatRISCalculator(model, task="ef")
    calc.budgets = hot_budgets(calc, atoms, args.seed)
    t0 = time.perf_counter()
    budget_s = args.max_minutes * 60.0
    equil = run_md(atoms, calc, "nvt", "langevin", args.temperature, args.timestep,
                   args.equil_steps, friction=0.02, loginterval=args.loginterval,
                   seed=args.seed, max_wall_s=budget_s / 3.0)
    before = calc.compilations
    prod = run_md(atoms, None, "nvt", args.thermostat, args.temperature, args.timestep,
                  args.steps, taut=100.0 * args.timestep, trajectory=out / "trajectory.traj",
                  logfile=str(out / "md.log"), loginterval=args.loginterval, seed=args.seed,
                  max_wall_s=budget_s - (time.perf_counter() - t0))
    compilations_in_production = calc.compilations - before
    temperature_outputs(out, equil, prod)
    summary = {
        "atoms": len(atoms), "composition": atoms.get_chemical_formula(),
        "model": str(args.model or "shipped default"), "dtype": calc.dtype,
        "num_params": calc.model.num_params, "device": str(jax.devices()[0]),
        "equilibration_steps": equil.steps, "production_steps": prod.steps,
        "timestep_fs": args.timestep, "thermostat": args.thermostat,
        "equilibration_wall_s_incl_compile": equil.setup_s + equil.wall_s,
        "wall_s_per_step": prod.s_per_step, "ns_per_day": prod.ns_per_day,
        "compilations": calc.compilations, "budgets": calc.budgets._asdict(),
        "compilations_during_production": compilations_in_production,
        "mean_T_production_K": float(np.mean(prod.temperature)),
        "total_wall_s": None,
    }
    summary |= analyse(out, out / "trajectory.traj", args.timestep, args.loginterval)
    summary["total_wall_s"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
