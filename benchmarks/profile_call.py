"""Where the time of one jitted call goes on CPU: XLA thunk times by kind, dot FLOP rate.

    make bench-profile    (= .venv/bin/python benchmarks/profile_call.py [--preset official]
        [--system fecr] [--atoms 128] [--task efs] [--remat [--save-dots]] [--chunk ROWS] [--out FILE.md])

Builds the benchmark's structure (bcc Fe-Cr or rock-salt MgO), compiles the predictor of the
task with random parameters, warms up, then records two calls with jax.profiler and sums the
time of every XLA thunk over all worker threads, grouped by kind (the thunk name without its
number: `ynn_fusion` = matrix products run by YNNPACK, `wrapped_scatter` = scatter-adds,
`*_gather_fusion`, elementwise `*_fusion`s, `copy`).  The dot FLOPs come from the jaxpr
(2 * output size * contracted size per dot_general), so the dot rate is exact; compare it
with the matrix-product peak that `make bench-scaling` measures in the same environment.
Times are per call, summed over threads (with 2 threads, about twice the wall time).
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import systems  # noqa: E402


def dot_flops(jaxpr) -> float:
    """FLOPs of every dot_general in a (closed) jaxpr, sub-jaxprs and scan bodies included."""
    total = 0.0
    for eqn in jaxpr.eqns:
        repeat = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += repeat * dot_flops(inner)
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[i] for i in contract])
    return total


def thunk_times(trace_dir: str, calls: int) -> dict[str, float]:
    """Seconds per call summed over XLA worker threads, by thunk kind."""
    from jax.profiler import ProfileData

    kinds: collections.Counter = collections.Counter()
    for path in glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True):
        for plane in ProfileData.from_file(path).planes:
            for line in plane.lines:
                if not line.name.startswith("tf_XLAEigen"):
                    continue
                for ev in line.events:
                    if ev.name.startswith(("ThunkExecutor", "end: ")):
                        continue
                    kinds[re.sub(r"\.\d+$", "", ev.name)] += ev.duration_ns * 1e-9 / calls
    return dict(kinds)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="official")
    ap.add_argument("--system", default="fecr", choices=["fecr", "mgo"])
    ap.add_argument("--atoms", type=int, default=128)
    ap.add_argument("--task", default="efs")
    ap.add_argument("--remat", action="store_true")
    ap.add_argument("--save-dots", action="store_true",
                    help="with --remat: keep the matrix-product outputs (remat_save_dots)")
    ap.add_argument("--chunk", type=int, default=0,
                    help="run the sub-layers in chunks of this many rows (chunk_rows)")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)

    import jax

    from matris.config import get_config
    from matris.graph import budgets_for, graph_for, pack
    from matris.potential import init_params, make_predictor

    cfg = get_config(args.preset, remat=args.remat, remat_save_dots=args.save_dots,
                     chunk_rows=args.chunk)
    atoms = systems.make(args.system, args.atoms)
    graph = graph_for(atoms, cfg)
    batch, _ = pack([graph], budgets_for([graph]))
    params = init_params(cfg, batch)
    fn = make_predictor(cfg, args.task)
    flops = dot_flops(jax.make_jaxpr(fn)(params, batch).jaxpr)
    call = jax.jit(fn)
    batch = jax.device_put(batch)
    for _ in range(2):
        jax.block_until_ready(call(params, batch))
    t0, calls = time.perf_counter(), 3
    for _ in range(calls):
        jax.block_until_ready(call(params, batch))
    wall = (time.perf_counter() - t0) / calls
    with tempfile.TemporaryDirectory() as trace:
        jax.profiler.start_trace(trace)
        for _ in range(2):
            jax.block_until_ready(call(params, batch))
        jax.profiler.stop_trace()
        kinds = thunk_times(trace, 2)
    total = sum(kinds.values())
    dots = kinds.get("ynn_fusion", 0.0)
    _, edges, bonds, angles = graph.sizes
    lines = [f"# Profile: {args.preset}, {args.system} {len(atoms)} atoms, task {args.task}"
             f"{' (remat' + (', products kept)' if args.save_dots else ')') if args.remat else ''}"
             f"{f' (chunks of {args.chunk} rows)' if args.chunk else ''}",
             "",
             f"{edges} edges, {bonds} bonds, {angles} angles; {jax.devices()[0].device_kind}; "
             f"wall {wall:.3f} s per call (mean of {calls}); thunk time summed over "
             f"threads {total:.3f} s; dot FLOPs {flops / 1e9:.1f} G, "
             f"{flops / max(dots, 1e-12) / 1e9:.0f} GFLOP/s per thread-second of dot time.", "",
             "| thunk kind | s per call (all threads) | share |", "|---|---:|---:|"]
    for name, sec in sorted(kinds.items(), key=lambda kv: -kv[1])[: args.top]:
        lines.append(f"| {name} | {sec:.3f} | {100 * sec / total:.1f} % |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
