"""Quick GPU timing of energy+forces+stress (bcc Fe supercells; tiny and 10m presets).

Usage: python benchmarks/gpu_quick.py OUT.json  (prints a Markdown table too).
"""

import json
import sys
import time

import jax
import numpy as np
from ase.build import bulk

sys.path.insert(0, "src")
import matris  # noqa: E402
from matris.graph import budgets_for, build_graph, pack  # noqa: E402


def run(preset: str, reps: int, budget_s: float = 60.0) -> list[dict]:
    rows, t_start = [], time.time()
    for n in reps:
        cfg = matris.get_config(preset)
        atoms = bulk("Fe", "bcc", a=2.86, cubic=True) * (n, n, n)
        t0 = time.time()
        graph = build_graph(atoms, cfg.cutoff, cfg.three_body_cutoff)
        t_graph = time.time() - t0
        batch, _ = pack([graph], budgets_for([graph]))
        params = jax.jit(lambda: matris.init_params(cfg, batch, 0))()
        fn = jax.jit(matris.make_predictor(cfg, "efs"))
        t0 = time.time()
        compiled = fn.lower(params, batch).compile()
        t_compile = time.time() - t0
        try:
            jax.block_until_ready(compiled(params, batch))
            times = []
            for _ in range(5):
                t0 = time.time()
                jax.block_until_ready(compiled(params, batch))
                times.append(time.time() - t0)
        except Exception as exc:  # out of memory: report the limit
            rows.append({"preset": preset, "atoms": len(atoms), "error": str(exc)[:200]})
            break
        stats = jax.devices()[0].memory_stats() or {}
        rows.append({"preset": preset, "atoms": len(atoms), "angles": graph.n_angles,
                     "graph_s": t_graph, "compile_s": t_compile, "efs_s": float(np.median(times)),
                     "atoms_per_s": len(atoms) / float(np.median(times)),
                     "peak_bytes": stats.get("peak_bytes_in_use")})
        print(rows[-1], flush=True)
        if time.time() - t_start > budget_s:
            break
    return rows


if __name__ == "__main__":
    out = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
           "rows": run("tiny", (4, 8, 12, 16, 20)) + run("10m", (4, 6, 8, 10, 12))}
    with open(sys.argv[1], "w") as fh:
        json.dump(out, fh, indent=1)
    print("| preset | atoms | angles | compile s | E+F+S s | atoms/s | peak GB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in out["rows"]:
        if "error" in r:
            print(f"| {r['preset']} | {r['atoms']} | out of memory | | | | |")
            continue
        peak = (r["peak_bytes"] or 0) / 1e9
        print(f"| {r['preset']} | {r['atoms']} | {r['angles']} | {r['compile_s']:.1f} | "
              f"{r['efs_s']:.4f} | {r['atoms_per_s']:.0f} | {peak:.1f} |")
