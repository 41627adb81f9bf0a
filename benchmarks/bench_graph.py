"""Time host-side graph construction for bcc Fe supercells (r_c = 6, r_3 = 4 A).

Atom graph = validation, model cell, matscipy neighbour list, float64 filter and sort, and the
0.1 A distance check.  Line graph = reverse pairing (bonds, d2u/u2d) and angle enumeration.
Each is timed separately (best of a few runs).  Prints a Markdown table and writes it to
benchmarks/results/graph-<hostname>-<date>.md.

    .venv/bin/python benchmarks/bench_graph.py [--sizes 128 1024 8192 16000]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import time
from functools import partial
from pathlib import Path

import numpy as np
from ase.build import bulk

from matris.graph.linegraph import angle_rows, pair_reverse_edges
from matris.graph.neighbors import (
    atom_graph,
    check_image_count,
    check_min_distance,
    model_cell,
    validate_atoms,
)

RC, R3 = 6.0, 4.0


def fe_supercell(n_atoms: int):
    """bcc Fe (a = 2.87 A) cubic supercell with n_atoms = 2 k^3 atoms."""
    k = round((n_atoms / 2) ** (1 / 3))
    if 2 * k**3 != n_atoms:
        raise ValueError(f"{n_atoms} is not 2 k^3")
    atoms = bulk("Fe", "bcc", a=2.87, cubic=True) * (k, k, k)
    atoms.rattle(0.01, seed=0)  # break exact ties at r_3 (4.06 A shell stays outside anyway)
    return atoms


def build_atom_graph(atoms):
    validate_atoms(atoms, check_distances=False)
    pos, pbc = atoms.positions, atoms.pbc
    cell = model_cell(atoms.cell.array, pbc, pos, RC)
    check_image_count(cell, pbc, RC)
    centers, neighbors, shifts, vec = atom_graph(pos, cell, pbc, RC)
    check_min_distance(vec, centers, neighbors, shifts)
    return centers, neighbors, shifts, np.linalg.norm(vec, axis=1)


def build_line_graph(n_atoms, centers, neighbors, shifts, lengths):
    edge_bond, bond_edge = pair_reverse_edges(centers, neighbors, shifts)
    rows = angle_rows(centers, lengths, edge_bond, n_atoms, R3)
    return bond_edge, rows


def best_time(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def run(sizes, repeats):
    rows = []
    for n in sizes:
        atoms = fe_supercell(n)
        reps = repeats if n <= 1024 else max(1, repeats - 1)
        t_atom, (c, j, s, d) = best_time(partial(build_atom_graph, atoms), reps)
        t_line, (bond_edge, ang) = best_time(partial(build_line_graph, n, c, j, s, d), reps)
        rows.append({"atoms": n, "edges": len(c), "bonds": len(bond_edge),
                     "angles": len(ang["angle_center"]), "t_atom": t_atom, "t_line": t_line})
        print(f"{n} atoms: atom graph {t_atom:.3f} s, line graph {t_line:.3f} s", flush=True)
    return rows


def table(rows) -> str:
    head = ("| atoms | edges/atom | bonds/atom | angles/atom | atom graph (s) | line graph (s) "
            "| total (s) | us/atom |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = [f"| {r['atoms']} | {r['edges'] / r['atoms']:.1f} | {r['bonds'] / r['atoms']:.1f} "
             f"| {r['angles'] / r['atoms']:.1f} | {r['t_atom']:.4f} | {r['t_line']:.4f} "
             f"| {r['t_atom'] + r['t_line']:.4f} "
             f"| {1e6 * (r['t_atom'] + r['t_line']) / r['atoms']:.1f} |" for r in rows]
    return head + "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 1024, 8192, 16000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = run(args.sizes, args.repeats)
    host, today = socket.gethostname(), datetime.date.today().isoformat()
    import matscipy

    text = (f"# Graph construction, bcc Fe (a = 2.87 A, rattled 0.01 A), r_c = {RC}, r_3 = {R3}\n\n"
            f"host {host}, {today}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} logical CPUs (shared), numpy {np.__version__}, "
            f"matscipy {matscipy.__version__}; best of {args.repeats} runs "
            f"({max(1, args.repeats - 1)} above 1024 atoms), single process.\n\n" + table(rows))
    print("\n" + text)
    out = Path(__file__).resolve().parent / "results" / f"graph-{host}-{today}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written {out}")


if __name__ == "__main__":
    main()
