"""GPU correctness check, about a minute: the same calls on the GPU and on the host CPU.

    python3 benchmarks/gpu_smoke.py OUT.json      (benchmarks/gpu_bench.sh runs it first)

1. The shipped model through `matris.MatRISCalculator` (energy, forces, stress) on Fe-Cr and
   MgO supercells, float32 and float64, on the GPU and on JAX's CPU backend in the same process:
   the largest differences.
2. When MATRIS_REF_PYTHON / MATRIS_REF_PYTHONPATH name the official package, the official
   PyTorch model on the GPU and on the CPU (same seeded weights and graph), run in that
   interpreter: the largest differences.
Exits non-zero when a difference passes its tolerance (float32: 1e-3 eV/atom, 1e-2 eV/A;
float64: 1e-8 / 1e-7); benchmarks/gpu_bench.sh logs that status and goes on to the timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import systems  # noqa: E402

TOL = {"float32": (1e-3, 1e-2), "float64": (1e-8, 1e-7)}

OFFICIAL = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from ase.io import read
from official_driver import build_model, make_graph
model = build_model({}, 0).eval()
out = {}
for path in sys.argv[2:]:
    atoms = read(path)
    res = {}
    for dev in ("cpu", "cuda" if torch.cuda.is_available() else "cpu"):
        m = model.to(dev)
        g = make_graph(m, atoms, torch.float32).to(dev)
        r = m([g], task="efs")
        res["gpu" if dev == "cuda" else "cpu"] = {"e": float(r["e"][0]), "f": r["f"][0].detach().cpu().numpy().tolist()}
    res.setdefault("gpu", res["cpu"])
    out[path] = {"de": abs(res["cpu"]["e"] - res["gpu"]["e"]),
                 "df": max(abs(a - b) for fa, fb in zip(res["cpu"]["f"], res["gpu"]["f"])
                           for a, b in zip(fa, fb))}
print(json.dumps(out))
"""


def jax_checks(structures: dict) -> list[dict]:
    import jax

    import matris

    jax.config.update("jax_enable_x64", True)
    gpu, cpu = jax.devices()[0], jax.devices("cpu")[0]
    rows = []
    for dtype in ("float32", "float64"):
        for name, atoms in structures.items():
            res = {}
            for dev in (gpu, cpu):
                with jax.default_device(dev):
                    a = atoms.copy()
                    a.calc = matris.MatRISCalculator(dtype=dtype, task="efs")
                    res[dev.platform] = (a.get_potential_energy() / len(a), a.get_forces(),
                                         a.get_stress())
            (e1, f1, s1), (e2, f2, s2) = res[gpu.platform], res["cpu"]
            de, df, ds = abs(e1 - e2), float(np.abs(f1 - f2).max()), float(np.abs(s1 - s2).max())
            tol_e, tol_f = TOL[dtype]
            rows.append({"model": "matris-jax shipped", "structure": name, "dtype": dtype,
                         "device": gpu.device_kind, "d_energy_per_atom": de, "d_force": df,
                         "d_stress": ds, "force_sum": float(np.abs(f1.sum(0)).max()),
                         "ok": bool(de < tol_e and df < tol_f)})
            print(rows[-1], flush=True)
    return rows


def official_checks(paths: list[str]) -> list[dict]:
    py, pypath = os.environ.get("MATRIS_REF_PYTHON"), os.environ.get("MATRIS_REF_PYTHONPATH")
    if not py:
        return []
    env = dict(os.environ, PYTHONPATH=pypath or "")
    ref_dir = str(HERE.parent / "tests" / "reference")
    out = subprocess.run([py, "-c", OFFICIAL, ref_dir, *paths], env=env, capture_output=True,
                         text=True, timeout=240)
    if out.returncode:
        print(out.stderr[-2000:], flush=True)
        return [{"model": "official", "ok": False, "error": out.stderr[-400:]}]
    rows = [{"model": "official matris 0.1.0 (torch)", "structure": Path(p).stem,
             "d_energy": r["de"], "d_force": r["df"], "ok": bool(r["df"] < 1e-2)}
            for p, r in json.loads(out.stdout.strip().splitlines()[-1]).items()]
    for r in rows:
        print(r, flush=True)
    return rows


def main(out_path: str) -> int:
    import tempfile

    structures = {"fecr-128": systems.make("fecr", 128), "mgo-64": systems.make("mgo", 64)}
    folder = tempfile.mkdtemp(prefix="matris-smoke-")
    paths = []
    for name, atoms in structures.items():
        paths.append(os.path.join(folder, f"{name}.extxyz"))
        atoms.write(paths[-1])
    rows = jax_checks(structures) + official_checks(paths)
    with open(out_path, "w") as fh:
        json.dump(rows, fh, indent=1)
    bad = [r for r in rows if not r["ok"]]
    print(f"gpu_smoke: {len(rows) - len(bad)}/{len(rows)} within tolerance", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "gpu_smoke.json"))
