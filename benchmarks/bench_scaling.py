"""`make bench-scaling`: how the cost of energy + forces + stress grows with the atom count.

    .venv/bin/python benchmarks/bench_scaling.py [--quick] [--gpu-plan] [--budget-min 60]

bcc Fe-Cr and rock-salt MgO supercells from 16 atoms doubling; JAX presets (tiny, small, the
official default shape and 10m, with remat / scan variants), the official PyTorch MatRIS 0.1.0
with the same weights (its checkpoint written by tests/reference/official_driver.py and read by
our converter), an O(N^2) dense-attention baseline, and SevenNet-0 / CHGNet for context.  Each
curve runs in its own subprocess (memory watchdog, RLIMIT_AS) and stops at the memory limit or
its time budget.  JAX: best of 1 and 2 threads (1 thread = CPU affinity of one core, set before
jax starts); torch: best of torch.set_num_threads(1) and (2).  Writes
benchmarks/results/<machine>-<date>.json, .md and two PNG plots (see scaling_report.py).

A paired comparison on this shared VM, whose speed drifts by 20-40 % over an hour:
    bench_scaling.py --only 'jax:official$' torch:official/mmap0+thp --systems fecr \
        --min-atoms 128 --max-atoms 256 --threads 2 --rounds 3
runs both curves three times in alternating order; the report gives the median time over the
rounds and the median of the per-round speed-ups.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import plan as plans  # noqa: E402
import procstats  # noqa: E402
import runner  # noqa: E402
import scaling_report  # noqa: E402
import systems  # noqa: E402

GIB = 1024**3


def detect_device() -> dict:
    """Platform and device name, asked in a subprocess (no GPU memory held here)."""
    code = ("import jax, json; d = jax.devices()[0]; print(json.dumps({'platform': d.platform, "
            "'device': getattr(d, 'device_kind', str(d)), 'count': len(jax.devices())}))")
    env = runner.clean_env({"XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def default_mem_cap() -> int:
    """What one benchmark process may use: 80 % of RAM, less what others hold now."""
    mem = procstats.meminfo()
    return int(min(0.8 * mem["MemTotal"], mem["MemAvailable"] - 1.0 * GIB))


def official_checkpoints(curves, workdir: Path, structures: str) -> dict:
    """Write one official checkpoint per config the plan needs (seeded random weights)."""
    py = runner.python_for("torch")
    names = sorted({c.model for c in curves if c.kind == "torch"
                    or (c.kind == "jax" and c.model in plans.OFFICIAL_CONFIGS)})
    out = {}
    if py is None:
        return out
    for name in names:
        if name not in plans.OFFICIAL_CONFIGS:
            continue
        ckpt = workdir / f"official-{name}.pth.tar"
        cmd = [py, str(HERE.parent / "tests" / "reference" / "official_driver.py"),
               "--config", json.dumps(plans.OFFICIAL_CONFIGS[name]), "--seed", "0",
               "--structures", systems.structure_path(structures, "fecr", 16),
               "--out", str(workdir / f"driver-{name}.json"), "--save-ckpt", str(ckpt)]
        subprocess.run(cmd, check=True, capture_output=True, env=runner.env_for("torch"))
        out[name] = str(ckpt)
    return out


def peak_flops(paths, threads_list) -> dict:
    """Matrix-product GFLOP/s of this machine per thread setting (the FLOP-efficiency scale)."""
    out = {}
    for threads in threads_list:
        spec = {"label": "peak-matmul", "system": "-", "sizes": [0], "threads": threads,
                "peak": True, "pin": threads > 0}
        recs = runner.run_curve("jax", spec, paths["work"], timeout_s=120)
        if recs and recs[0].get("status") == "ok":
            out[str(threads)] = recs[0]["gflops_per_s"]
    return out


def jax_model(curve, ckpts: dict) -> dict:
    if curve.variant != "dense" and curve.model in ckpts:
        return {"ckpt": ckpts[curve.model]}
    return {"preset": curve.model}


def make_spec(curve, system, threads, sizes, args, ckpts, paths) -> dict:
    spec = {"label": curve.label, "system": system, "sizes": sizes, "threads": threads,
            "structures": paths["structures"], "tasks": list(curve.tasks),
            "max_repeats": curve.max_repeats, "target_s": args.target_s,
            "budget_s": curve.budget_s * args.budget_scale, "max_call_s": curve.max_call_s,
            "mem_cap": args.mem_cap, "compare_s": args.compare_s}
    if curve.kind == "jax":
        spec.update(model=jax_model(curve, ckpts), overrides=curve.overrides(),
                    dense="dense" in curve.variant, cache_dir=paths["cache"],
                    auto_remat=curve.variant == "",
                    probe=curve.probe and not args.no_probe, pin=threads > 0)
    elif curve.kind == "torch":
        spec.update(ckpt=ckpts.get(curve.model, ""), threads=list(curve.threads),
                    device="cuda" if args.gpu else "cpu")
    else:
        spec.update(threads=list(curve.threads), teacher=curve.model)
    return spec


def run_jax(curve, system, sizes, args, ckpts, paths, remaining) -> list[dict]:
    """2 threads first (cold compile, timed), then 1 thread on the sizes that finished
    (compiled executables come from the shared persistent cache)."""
    records = []
    for threads in curve.threads:
        spec = make_spec(curve, system, threads, sizes, args, ckpts, paths)
        spec["budget_s"] = min(spec["budget_s"], remaining())
        if threads != curve.threads[0]:
            spec["probe"] = False
            done = [r["atoms"] for r in records if r.get("status") == "ok"]
            spec["sizes"] = [n for n in sizes if n in done]
            if not spec["sizes"]:
                continue
        records += runner.run_curve("jax", spec, paths["work"], curve.env,
                                    timeout_s=spec["budget_s"] + 600)
    return records


def curve_sizes(curve, max_atoms: int) -> list[int]:
    """min_atoms, min_atoms * step, ... up to the curve's and the run's largest size."""
    sizes = systems.doubling(curve.min_atoms, min(curve.max_atoms, max_atoms))
    return sizes[::max(1, curve.step.bit_length() - 1)]  # step 8: every third doubling


def run_curve(curve, args, ckpts, paths, remaining) -> list[dict]:
    records = []
    for system in curve.systems:
        sizes = curve_sizes(curve, args.max_atoms)
        if remaining() < 30:
            records.append({"label": curve.label, "system": system, "kind": curve.kind,
                            "status": "skipped: global time budget"})
            continue
        if curve.kind == "jax":
            records += run_jax(curve, system, sizes, args, ckpts, paths, remaining)
            continue
        if curve.kind == "torch" and curve.model not in ckpts:
            records.append({"label": curve.label, "system": system, "kind": "torch",
                            "status": "skipped: no official reference environment"})
            continue
        spec = make_spec(curve, system, 0, sizes, args, ckpts, paths)
        spec["budget_s"] = min(spec["budget_s"], remaining())
        records += runner.run_curve(curve.kind, spec, paths["work"], curve.env,
                                    timeout_s=spec["budget_s"] + 900)
    for r in records:
        r.update(label=curve.label, model=curve.model, variant=curve.variant, kind=curve.kind)
    return records


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the under-5-minute plan")
    p.add_argument("--gpu-plan", action="store_true", help="the short plan for a lent GPU "
                   "(chosen automatically when JAX sees a GPU)")
    p.add_argument("--only", nargs="*", default=None, help="run only curves whose label "
                   "contains one of these strings (ending in $: equals it)")
    p.add_argument("--budget-min", type=float, default=None, help="global wall-clock budget")
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiply curve budgets")
    p.add_argument("--max-atoms", type=int, default=1 << 20)
    p.add_argument("--min-atoms", type=int, default=None, help="start every curve here")
    p.add_argument("--systems", nargs="*", default=None, help="only these systems (fecr, mgo)")
    p.add_argument("--threads", type=int, nargs="*", default=None,
                   help="thread counts to run (default: each curve's own, 2 and 1)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the selected curves this many times, in alternating order (a "
                        "paired comparison: each size's time is the median over rounds, the "
                        "speed-up the median of the per-round speed-ups)")
    p.add_argument("--mem-cap-gb", type=float, default=None)
    p.add_argument("--target-s", type=float, default=20.0, help="timed seconds per point")
    p.add_argument("--compare-s", type=float, default=15.0,
                   help="torch: time both thread counts while a call is shorter than this")
    p.add_argument("--no-probe", action="store_true", help="no compile-only memory probes")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--name", default=None, help="result file stem (default <machine>-<date>)")
    return p.parse_args(argv)


def choose_plan(args, device) -> list:
    if device["platform"] != "cpu" or args.gpu_plan:
        curves = plans.gpu_plan(args.max_atoms)
    elif args.quick:
        curves = plans.quick_plan()
    else:
        curves = plans.full_plan()
    if args.only:
        curves = [c for c in curves if any(c.label == s[:-1] if s.endswith("$") else s in c.label
                                           for s in args.only)]
    if args.min_atoms:
        curves = [dataclasses.replace(c, min_atoms=max(c.min_atoms, args.min_atoms))
                  for c in curves]
    if args.systems:
        curves = [dataclasses.replace(c, systems=tuple(s for s in c.systems if s in args.systems))
                  for c in curves]
        curves = [c for c in curves if c.systems]
    if args.threads:
        curves = [c if c.threads == (0,) else dataclasses.replace(c, threads=tuple(args.threads))
                  for c in curves]
    return curves


def main(argv=None) -> Path:
    args = parse_args(argv)
    t0 = time.monotonic()
    device = detect_device()
    gpu = args.gpu = device["platform"] != "cpu"
    args.mem_cap = 0 if gpu else int(args.mem_cap_gb * GIB) if args.mem_cap_gb else default_mem_cap()
    curves = choose_plan(args, device)
    budget_min = args.budget_min or (4.5 if args.quick else 8 if gpu else 60)
    deadline = t0 + 60 * budget_min
    remaining = lambda: deadline - time.monotonic()  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="matris-bench-"))
    paths = {"work": work, "structures": str(work / "structures"), "cache": str(work / "cache")}
    sizes = systems.doubling(16, min(args.max_atoms, max(c.max_atoms for c in curves)))
    if gpu:
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
    systems.write_structures(paths["structures"], sorted({s for c in curves for s in c.systems}),
                             sizes)
    ckpts = official_checkpoints(curves, work, paths["structures"])
    meta = scaling_report.machine_meta(device, args, ckpts, procstats.load())
    meta["peak_matmul_gflops"] = peak_flops(paths, [0] if gpu else [2, 1])
    print(f"bench-scaling: {len(curves)} curves, budget {budget_min:.0f} min, memory cap "
          f"{args.mem_cap / GIB:.1f} GiB, device {device['device']}, work dir {work}", flush=True)
    records = []
    for round_ in range(args.rounds):
        # alternate the order, so that a slow spell of the machine is shared out
        for curve in curves if round_ % 2 == 0 else curves[::-1]:
            if gpu and curve.kind == "teacher":
                continue
            for rec in run_curve(curve, args, ckpts, paths, remaining):
                records.append({**rec, "round": round_} if args.rounds > 1 else rec)
    meta.update(wall_min=(time.monotonic() - t0) / 60, load_end=procstats.load(),
                rounds=args.rounds)
    stem = args.name or scaling_report.default_stem(device, quick=args.quick)
    out = scaling_report.write_all(Path(args.out), stem, meta, records)
    shutil.rmtree(paths["cache"], ignore_errors=True)
    print(f"bench-scaling: done in {meta['wall_min']:.1f} min; raw curves in {work}")
    return out


if __name__ == "__main__":
    main()
