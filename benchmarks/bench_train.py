"""Training throughput: structures/s and atoms/s per step of the real jitted train step.

    make bench-train    (= .venv/bin/python benchmarks/bench_train.py [--presets default 10m]
        [--devices 1 2] [--steps 8] [--seconds 60] [--batch-size 10m=1])

For each model ("default": the model of the training config, experiments/default.yaml, with
its overrides; "10m" or another preset name: that preset as it is, in the same training
config; 10m with remat and one structure per device, see PRESET_BATCH) and each device count, a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=N (on a GPU host: the first N GPUs) builds the
training split of the shipped data set, the fixed budgets, the optimizer and the sharded train
step exactly as `matris train` does, runs one step to compile, one untimed step, then times
steps (block_until_ready on the loss) until ``--steps`` steps or ``--seconds`` have passed.
One step on N devices processes N sub-batches (N x batch_size structures on average), so
structures/s compares directly.  Writes benchmarks/results/train-<machine>-<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import procstats  # noqa: E402

from matris import runtime as matris_runtime  # noqa: E402

# The 10m train step (650 angles per atom at r_3 = 4.5 A, double backprop) asks XLA for 104 GB
# at the default config's 16 structures per step; at one structure per step with rematerialised
# blocks it fits the 24 GB dev VM (20.9 GB RSS, 78 s per step, budgets sized for the data set's
# largest structure; benchmarks/results/train-vm-2026-11-26-10m-remat.md).  One structure per
# device, remat on.
PRESET_BATCH = {"10m": 1}
PRESET_OVERRIDES = {"10m": {"remat": True}}


def prepare(spec: dict):
    """Config, splits, budgets, mesh, optimizer, state and step, as matris train builds them."""
    import numpy as np

    from matris.config import get_config
    from matris.training.config import load_config
    from matris.training.data import count_steps, fitting_budgets, load_splits
    from matris.training.loop import initial_params
    from matris.training.step import init_state, make_mesh, make_optimizer, make_train_step

    cfg = load_config(ROOT / spec["config"])
    if spec.get("batch_size"):
        cfg = dataclasses.replace(cfg, batch=dataclasses.replace(cfg.batch,
                                                                 batch_size=spec["batch_size"]))
    if spec["preset"] == "default":  # the config's model, its own overrides included
        model_cfg = get_config(cfg.model.preset, **{**cfg.model.overrides, **spec["overrides"]})
    else:  # a named preset as it is (the config's CPU-budget overrides do not apply)
        model_cfg = get_config(spec["preset"], **{**PRESET_OVERRIDES.get(spec["preset"], {}),
                                                  **spec["overrides"]})
    matris_runtime.tune_xla_for_model(model_cfg)  # what `matris train` does (before jax starts)
    t0 = time.perf_counter()
    splits = load_splits(cfg.data, model_cfg.cutoff, model_cfg.three_body_cutoff, cfg.seed,
                         model_cfg.symmetric_angles)
    data_s = time.perf_counter() - t0
    mesh = make_mesh(spec["devices"])
    budgets = fitting_budgets(splits, cfg.batch.batch_size, cfg.batch.headroom)
    k = mesh.devices.size
    total = sum(count_steps(splits["train"], budgets, k, cfg.seed, cfg.optim.epochs,
                            cfg.batch.lookahead))
    params = initial_params(cfg, model_cfg, splits["train"], budgets)
    optimizer = make_optimizer(cfg.optim, total, params)
    state = init_state(params, optimizer)
    step = make_train_step(model_cfg, cfg.loss, cfg.optim, optimizer, mesh)
    info = {"preset": spec["preset"] if spec["preset"] != "default"
            else f"default ({cfg.model.preset})", "model_config": model_cfg.to_dict(),
            "batch_size": cfg.batch.batch_size, "budgets": list(budgets), "devices": k,
            "data_s": data_s, "train_frames": len(splits["train"].frames),
            "dtype": str(np.dtype(model_cfg.dtype)), "xla_flags": os.environ.get("XLA_FLAGS", "")}
    return cfg, model_cfg, splits, budgets, mesh, state, step, info


def batches(splits, budgets, k, dtype, seed=0, lookahead=0):
    """Endless (stacked batches, targets, structures, atoms) in shuffled epochs."""
    import numpy as np

    from matris.training.data import epoch_rng, step_inputs

    epoch = 0
    while True:
        rng = epoch_rng(seed, epoch)
        for b, t, n in step_inputs(splits["train"], budgets, k, rng, dtype, lookahead):
            yield b, t, n, int(np.sum(b.node_mask))
        epoch += 1


def worker(spec: dict) -> dict:
    import jax
    import numpy as np

    from matris.training.step import shard

    cfg, model_cfg, splits, budgets, mesh, state, step, info = prepare(spec)
    state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    feed = batches(splits, budgets, info["devices"], np.dtype(model_cfg.dtype),
                   lookahead=cfg.batch.lookahead)
    times, structs, atoms, losses = [], [], [], []
    t_start = time.perf_counter()
    for i in range(2 + spec["steps"]):
        b, t, n, a = next(feed)
        t0 = time.perf_counter()
        state, metrics = step(state, shard(b, mesh), shard(t, mesh))
        loss = float(jax.block_until_ready(metrics["loss"]))
        dt = time.perf_counter() - t0
        if i == 0:
            info["first_step_s"] = dt  # compile + run
        elif i >= 2:
            times.append(dt)
            structs.append(n)
            atoms.append(a)
            losses.append(loss)
            if time.perf_counter() - t_start > spec["seconds"] and len(times) >= 2:
                break
    total = sum(times)
    info.update(steps=len(times), step_median_s=statistics.median(times), step_mean_s=total / len(times),
                structures_per_step=sum(structs) / len(times), atoms_per_step=sum(atoms) / len(times),
                structures_per_s=sum(structs) / total, atoms_per_s=sum(atoms) / total,
                losses_finite=bool(np.all(np.isfinite(losses))), compilations=len(step.traces),
                peak_rss_mb=procstats.peak_rss() / 2**20, platform=jax.devices()[0].platform,
                device=jax.devices()[0].device_kind, load=procstats.load())
    return info


def run_one(preset: str, devices: int, args) -> dict:
    """A subprocess with N forced host devices (CPU) or the first N GPUs."""
    spec = {"preset": preset, "devices": devices, "config": args.config, "steps": args.steps,
            "batch_size": args.batch_size.get(preset, PRESET_BATCH.get(preset)),
            "seconds": args.seconds, "overrides": json.loads(args.overrides)}
    env = matris_runtime.with_tunables(dict(os.environ), "training") or dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    print(f"== {preset}, {devices} device(s)", flush=True)
    load = procstats.load()
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"preset": preset, "devices": devices, "status": f"timed out ({args.timeout:.0f} s)"}
    if proc.returncode:
        return {"preset": preset, "devices": devices, "status": "failed",
                "log_tail": proc.stderr[-1500:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(status="ok", load_before=load)
    print(f"   {out['structures_per_s']:.2f} structures/s, {out['atoms_per_s']:.1f} atoms/s, "
          f"step {out['step_median_s']:.2f} s, first step {out['first_step_s']:.0f} s", flush=True)
    return out


def markdown(rows, meta) -> str:
    devices = sorted({f"{r['platform']}: {r['device']}" for r in rows if r.get("status") == "ok"})
    text = (f"# Training throughput, {meta['host']}, {meta['date']}\n\n"
            f"Devices: {', '.join(devices) or '-'}; CPU {meta['cpu']}, "
            f"{meta['logical_cpus']} logical CPUs; config {meta['config']} (batch_size = average "
            "structures per device per step); steady-state steps after compile.\n\n"
            "| preset | devices | status | step (s, median) | structures/step | atoms/step | "
            "structures/s | atoms/s | first step incl. compile (s) | peak RSS (MB) | load |\n"
            + "|---" * 11 + "|\n")
    for r in rows:
        if r.get("status") != "ok":
            text += f"| {r['preset']} | {r['devices']} | {r['status']} |" + " |" * 8 + "\n"
            continue
        text += (f"| {r['preset']} | {r['devices']} | ok | {r['step_median_s']:.3g} | "
                 f"{r['structures_per_step']:.1f} | {r['atoms_per_step']:.0f} | "
                 f"{r['structures_per_s']:.3g} | {r['atoms_per_s']:.3g} | {r['first_step_s']:.0f} | "
                 f"{r['peak_rss_mb']:.0f} | {r['load'][0]} |\n")
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--config", default="experiments/default.yaml")
    p.add_argument("--presets", nargs="+", default=["default", "10m"],
                   help="'default' = the config's own preset")
    p.add_argument("--devices", nargs="+", type=int, default=[1, 2])
    p.add_argument("--overrides", default="{}", help="JSON model overrides for every preset")
    p.add_argument("--batch-size", nargs="*", default=[], help="PRESET=N: structures per "
                   f"device per step (defaults: {PRESET_BATCH}; others: the config's)")
    p.add_argument("--steps", type=int, default=10, help="timed steps at most")
    p.add_argument("--seconds", type=float, default=60.0, help="timed seconds at most")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    args.batch_size = {k: int(v) for k, v in (item.split("=") for item in args.batch_size)}
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    import scaling_report

    rows = [run_one(preset, n, args) for preset in args.presets for n in args.devices]
    meta = {"host": __import__("socket").gethostname(), "date": time.strftime("%Y-%m-%d"),
            "cpu": scaling_report.cpu_name(), "logical_cpus": os.cpu_count(),
            "config": args.config, "argv": vars(args)}
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"train-{meta['host']}-{meta['date']}"
    (folder / f"{stem}.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=1))
    (folder / f"{stem}.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
