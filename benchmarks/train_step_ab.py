"""Two variants of the training config's train step, timed alternately in one process.

    make bench-train-ab BENCH_ARGS="--a symmetric_angles=false --b symmetric_angles=true"
    (= .venv/bin/python benchmarks/train_step_ab.py --a KEY=VALUE ... --b KEY=VALUE ...
       [--steps 30] [--config experiments/default.yaml])

Each variant is the model of ``--config`` with its own model overrides (values read as JSON:
false, 3.3, [64, 64]; anything else a string), built exactly as
`matris train` builds it (`bench_train.prepare`, one device).  After two untimed steps each,
the steps alternate A, B, A, B, ... so that the machine's drift (other load, clocks) hits both
alike: on the shared 2-core dev VM, separate runs of one config differ by up to 15 %.
Prints median and mean step time and the angle budget of each variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train  # noqa: E402


def overrides(items: list[str]) -> dict:
    """["key=value", ...] -> {key: JSON value, or the text if it is not JSON}."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"override {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="experiments/default.yaml")
    p.add_argument("--a", nargs="*", default=[], help="KEY=VALUE model overrides of variant A")
    p.add_argument("--b", nargs="*", default=[], help="KEY=VALUE model overrides of variant B")
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args(argv)
    import jax
    import numpy as np

    from matris.training.step import shard

    runs = {}
    for name, items in (("A", args.a), ("B", args.b)):
        spec = {"preset": "default", "devices": 1, "config": args.config,
                "overrides": overrides(items)}
        cfg, model_cfg, splits, budgets, mesh, state, step, _ = bench_train.prepare(spec)
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        feed = bench_train.batches(splits, budgets, 1, np.dtype(model_cfg.dtype),
                                   lookahead=cfg.batch.lookahead)
        runs[name] = {"state": jax.device_put(state, replicated), "step": step, "feed": feed,
                      "mesh": mesh, "times": [], "budgets": budgets, "overrides": spec["overrides"]}
    for i in range(args.steps + 2):
        for r in runs.values():
            batch, targets, _, _ = next(r["feed"])
            t0 = time.perf_counter()
            r["state"], metrics = r["step"](r["state"], shard(batch, r["mesh"]),
                                            shard(targets, r["mesh"]))
            jax.block_until_ready(metrics["loss"])
            if i >= 2:
                r["times"].append(time.perf_counter() - t0)
    for name, r in runs.items():
        print(f"{name} {r['overrides']}: median step {statistics.median(r['times']):.3f} s, "
              f"mean {statistics.mean(r['times']):.3f} s over {len(r['times'])} steps; "
              f"angle budget {r['budgets'].angles}")


if __name__ == "__main__":
    main()
