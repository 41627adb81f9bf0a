#!/usr/bin/env python
"""Run the OFFICIAL PyTorch MatRIS (PyPI ``matris==0.1.0``) on structures and dump JSON.

Run it with the reference environment's interpreter, never with the project's .venv::

    .venv-ref/bin/python tests/reference/official_driver.py \
        --config '{}' --seed 0 --structures in.extxyz --dtype float32 --out out.json \
        [--save-ckpt model.pth.tar] [--load-ckpt model.pth.tar] [--perturb 0.1] \
        [--batch] [--threads 1] [--task efsm] [--time-repeats N]

Standalone: imports torch, numpy, ase and the official ``matris`` (plus pymatgen, which the
official graph converter requires as its input type). It does not import this project.

What it does
  1. Builds ``matris.model.MatRIS(**config)`` after ``torch.manual_seed(seed)`` (or loads an
     official-format checkpoint with ``--load-ckpt``; then ``--config`` is ignored).
  2. ``--perturb S`` (S > 0): for every parameter AND buffer that is a floating tensor
     (sorted by state_dict name, drawn from ``torch.Generator().manual_seed(seed + 7919)``)
     applies  p <- p * (1 + S * n)  with n ~ N(0, 1) elementwise; a tensor that is entirely
     zero (the LayerNorm biases at init) gets  p <- S * n  instead. This covers norm weights
     and biases, residual scales, Bessel/Fourier frequencies, the SH ``factor`` buffer and the
     reference energies. (The SH radial constants ``SphericalExpansion.coef`` are a plain
     attribute, not a buffer: they are neither perturbed nor saved, by the official design.)
  3. ``--save-ckpt``: saves ``{"config": model.config, "state_dict": model.state_dict()}``
     with ``torch.save`` -- the format ``MatRIS.from_dict`` / ``MatRIS.load`` read -- always in
     float32 (before any dtype cast), reloads it with ``torch.load(weights_only=False)`` +
     ``MatRIS.from_dict`` exactly as ``MatRIS.load`` does and checks the state is bitwise equal.
  4. Evaluates every structure, one model call per structure, or all in one batched call with
     ``--batch``; writes JSON.

float64: ``model.double()`` plus float64 graph tensors (fractional coordinates and lattice
taken from pymatgen's float64 arrays, not up-cast from the converter's float32 copies). The
official ``AtomRef`` casts its composition vector to float32 (``.float()``), so after
``.double()`` its float64 weight makes the call crash; the driver therefore keeps
``model.reference_energy`` in float32 (its output is then added to the float64 energy).
Not float64 end to end: the reference-energy term, the SH radial constants (``coef``), the SH
``factor`` value and the Fourier constant 1/sqrt(2) are float32 numbers (see OFFICIAL_NOTES.md).

Stress is reported as the model returns it: GPa, ASE sign (positive = tensile), computed as
(1/V) dE/d(strain) * 160.21766208 with the SIGNED triple-product volume.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import time

import ase
import ase.io
import numpy as np
import torch

STRESS_SIGN_NOTE = (
    "GPa exactly as returned by matris 0.1.0: (1/V_signed) * dE/d(strain) * 160.21766208; "
    "ASE sign convention (positive = tensile, negative = compressive); multiply by "
    "ase.units.GPa for eV/A^3"
)


def _quiet():
    """The official code prints on construction; keep stdout clean (send it to stderr)."""
    return contextlib.redirect_stdout(sys.stderr)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="{}",
                   help="model kwargs as a JSON string or a path to a JSON file; '{}' = defaults")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--structures", required=True, help="extxyz (or any ase-readable) file")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--out", required=True, help="output JSON path")
    p.add_argument("--save-ckpt", default=None)
    p.add_argument("--load-ckpt", default=None)
    p.add_argument("--perturb", type=float, default=0.0)
    p.add_argument("--batch", action="store_true", help="evaluate all structures in one call")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--task", default="efsm", choices=["e", "em", "ef", "efs", "efsm"])
    p.add_argument("--time-repeats", type=int, default=0,
                   help="if > 0: per structure, time N steady-state 'efs' calls after 1 warm-up")
    return p.parse_args(argv)


def load_config(text: str) -> dict:
    if os.path.isfile(text):
        with open(text) as fh:
            return json.load(fh)
    return json.loads(text)


def jsonable(x):
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return x


def build_model(config: dict, seed: int):
    from matris.model import MatRIS

    torch.manual_seed(seed)
    with _quiet():
        model = MatRIS(**config)
    return model


def perturb_model(model, scale: float, seed: int) -> list[str]:
    """Seeded relative Gaussian noise on every floating parameter and buffer."""
    gen = torch.Generator().manual_seed(seed + 7919)
    named = dict(model.named_parameters())
    named.update(dict(model.named_buffers()))
    touched = []
    with torch.no_grad():
        for name in sorted(named):
            t = named[name]
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=gen, dtype=torch.float64)
            base = t.detach().to(torch.float64)
            if bool((base == 0).all()):
                new = scale * noise
            else:
                new = base * (1.0 + scale * noise)
            t.copy_(new.to(t.dtype))
            touched.append(name)
    return touched


def save_checkpoint(model, path: str) -> dict:
    """Save in the official format and verify that the official loader reads it back."""
    from matris.model import MatRIS

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"config": model.config, "state_dict": state}, path)
    ckpt = torch.load(path, map_location=torch.device("cpu"), weights_only=False)
    with _quiet():
        reloaded = MatRIS.from_dict(ckpt)  # what MatRIS.load() does after downloading
    sd2 = reloaded.state_dict()
    same = set(sd2) == set(state) and all(
        sd2[k].dtype == state[k].dtype and torch.equal(sd2[k], state[k]) for k in state
    )
    return {"path": os.path.abspath(path), "reload_state_dict_bitwise_equal": bool(same),
            "n_tensors": len(state)}


def load_checkpoint(path: str):
    from matris.model import MatRIS

    ckpt = torch.load(path, map_location=torch.device("cpu"), weights_only=False)
    if "model" in ckpt and "state_dict" not in ckpt:
        ckpt = ckpt["model"]
    with _quiet():
        return MatRIS.from_dict(ckpt)


def prepare_atoms(atoms: ase.Atoms, model) -> ase.Atoms:
    """Same handling of non-periodic directions as matris.applications.base.MatRISCalculator."""
    atoms = atoms.copy()
    pbc = atoms.get_pbc()
    if not all(pbc):
        pos = atoms.get_positions()
        cell = np.array(atoms.get_cell())
        max_positions = np.max(np.absolute(pos)) + 1
        cutoff = model.config["pairwise_cutoff"]
        expand = max(5, model.config["num_layers"])
        for k in range(3):
            if not pbc[k]:
                cell[k, :] = max_positions * expand * cutoff * np.identity(3)[k, :]
        atoms.set_cell(cell, scale_atoms=False)
    return atoms


def make_graph(model, atoms: ase.Atoms, dtype: torch.dtype):
    from pymatgen.io.ase import AseAtomsAdaptor

    structure = AseAtomsAdaptor.get_structure(prepare_atoms(atoms, model))
    graph = model.graph_converter(structure)
    if dtype == torch.float64:
        # Full-precision geometry straight from pymatgen (the converter stores float32 copies).
        graph.atom_frac_coord = torch.tensor(np.asarray(structure.frac_coords), dtype=dtype)
        graph.lattice = torch.tensor(np.asarray(structure.lattice.matrix), dtype=dtype)
        graph.neighbor_image = graph.neighbor_image.to(dtype)
    return graph


def graph_counts(graph) -> dict:
    return {
        "n_atoms": int(graph.atomic_number.shape[0]),
        "n_edges": int(graph.atom_graph.shape[0]),  # directed
        "n_bonds": int(graph.undirected2directed.shape[0]),
        "n_angles": int(graph.line_graph.shape[0]) if graph.line_graph.dim() == 2 else 0,
    }


def to_list(t):
    return t.detach().to(torch.float64).cpu().numpy().tolist() if t is not None else None


def run_model(model, graphs, task):
    out = model(graphs, task=task, is_training=False)
    n = len(graphs)
    res = []
    e = out["e"].detach()
    apg = out["atoms_per_graph"].tolist()
    ref = out["ref_energy"]
    for i in range(n):
        e_i = float(e[i].item())
        n_i = int(apg[i])
        r = {
            "energy_per_atom_eV": e_i if model.is_intensive else e_i / n_i,
            "energy_total_eV": e_i * n_i if model.is_intensive else e_i,
            "ref_energy_eV_per_atom": float(ref[i].item()) if torch.is_tensor(ref) else float(ref),
            "forces_eV_per_A": to_list(out["f"][i]) if "f" in out else None,
            "stress_GPa": to_list(out["s"][i]) if "s" in out else None,
            "magmoms": to_list(out["m"][i]) if "m" in out else None,
        }
        if r["forces_eV_per_A"] is not None:
            r["force_sum_eV_per_A"] = np.asarray(r["forces_eV_per_A"]).sum(axis=0).tolist()
        res.append(r)
    return res


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def time_calls(model, graphs, repeats: int) -> dict:
    model(graphs, task="efs")  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model(graphs, task="efs")
        _ = [f.sum().item() for f in out["f"]] + [s.sum().item() for s in out["s"]]
        ts.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "all_s": ts,
            "peak_rss_mb_after": peak_rss_mb()}


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]

    if args.load_ckpt:
        model = load_checkpoint(args.load_ckpt)
        source = {"loaded_from": os.path.abspath(args.load_ckpt)}
    else:
        model = build_model(load_config(args.config), args.seed)
        source = {"built_with_seed": args.seed}
    perturbed = perturb_model(model, args.perturb, args.seed) if args.perturb > 0 else []
    model.eval()

    ckpt_info = save_checkpoint(model, args.save_ckpt) if args.save_ckpt else None

    n_params = sum(p.numel() for p in model.parameters())
    if dtype == torch.float64:
        model.double()
        if model.reference_energy is not None:
            # AtomRef feeds a float32 composition vector; its weight must stay float32.
            model.reference_energy.float()

    frames = ase.io.read(args.structures, index=":")
    if isinstance(frames, ase.Atoms):
        frames = [frames]

    t_graph = []
    graphs = []
    for atoms in frames:
        t0 = time.perf_counter()
        with _quiet():
            graphs.append(make_graph(model, atoms, dtype))
        t_graph.append(time.perf_counter() - t0)

    if args.batch:
        results = run_model(model, graphs, args.task)
    else:
        results = [run_model(model, [g], args.task)[0] for g in graphs]

    structures = []
    for i, (atoms, g, r) in enumerate(zip(frames, graphs, results, strict=True)):
        entry = {"index": i, "formula": atoms.get_chemical_formula(), **graph_counts(g), **r,
                 "graph_build_s": t_graph[i]}
        structures.append(entry)

    timing = None
    if args.time_repeats > 0:
        timing = {"task": "efs", "repeats": args.time_repeats, "per_structure": []}
        for i, g in enumerate(graphs):
            timing["per_structure"].append({"index": i, "n_atoms": int(g.atomic_number.shape[0]),
                                            **time_calls(model, [g], args.time_repeats)})
        if args.batch and len(graphs) > 1:
            timing["batched_call"] = time_calls(model, graphs, args.time_repeats)

    report = {
        "driver": "tests/reference/official_driver.py",
        "matris_version": _matris_version(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "ase_version": ase.__version__,
        "python": platform.python_version(),
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "task": args.task,
        "batch": bool(args.batch),
        "seed": args.seed,
        "perturb": args.perturb,
        "n_perturbed_tensors": len(perturbed),
        "param_count": int(n_params),
        "config": jsonable(model.config),
        "is_intensive": bool(model.is_intensive),
        "graph_converter": model.graph_converter.as_dict(),
        "stress_convention": STRESS_SIGN_NOTE,
        "float64_notes": None if dtype == torch.float32 else (
            "model.double() + float64 geometry; reference-energy term, SH coef/factor and the "
            "Fourier 1/sqrt(2) constant remain float32 values"),
        "model_source": source,
        "checkpoint": ckpt_info,
        "structures_file": os.path.abspath(args.structures),
        "structures": structures,
        "timing": timing,
    }
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=1)
    print(f"official_driver: {len(structures)} structures, {n_params} parameters, "
          f"dtype {args.dtype}, batch={args.batch} -> {args.out}")
    if ckpt_info is not None and not ckpt_info["reload_state_dict_bitwise_equal"]:
        print("official_driver: ERROR: checkpoint did not reload bitwise", file=sys.stderr)
        return 2
    return 0


def _matris_version() -> str:
    from importlib.metadata import version

    return version("matris")


if __name__ == "__main__":
    sys.exit(main())
