"""Context curves: SevenNet-0 and CHGNet 0.3.0 (weights shipped in their wheels), run in
.venv-teacher when it exists.

    .venv-teacher/bin/python benchmarks/worker_teacher.py SPEC.json

SPEC: label ("sevennet-0" | "chgnet-0.3.0"), system, sizes, structures, threads ([2, 1]),
max_repeats, target_s, budget_s, max_call_s, compare_s, mem_cap, out.

Each timed call is one full ASE calculator call for energy, forces and stress, so unlike the
MatRIS timings it includes each package's own graph construction.  For context only.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procstats  # noqa: E402
import systems  # noqa: E402

MB = 1024**2
PROPERTIES = ["energy", "forces", "stress"]


def make_calculator(label: str):
    if label.startswith("sevennet"):
        from sevenn.calculator import SevenNetCalculator

        return SevenNetCalculator("7net-0", device="cpu")
    if label.startswith("chgnet"):
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator

        model = CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)
        return CHGNetCalculator(model, use_device="cpu")
    raise ValueError(f"unknown teacher {label!r}")


def time_threads(calc, atoms, threads, spec) -> dict:
    import torch
    from ase.calculators.calculator import all_changes

    torch.set_num_threads(threads)

    def call():
        calc.calculate(atoms, PROPERTIES, all_changes)

    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    repeats = procstats.repeats_for(first, spec.get("max_repeats", 3), spec.get("target_s", 20))
    return {"status": "ok", "first_s": first, **procstats.timed_calls(call, repeats, warmup=0)}


def measure_size(calc, spec, n, threads_list) -> dict:
    atoms = systems.read_structure(spec["structures"], spec["system"], n)
    procstats.reset_peak()
    before = procstats.rss()
    rec = {"atoms": n, "status": "ok", "by_threads": {}}
    try:
        for threads in threads_list:
            rec["by_threads"][str(threads)] = {"efs": time_threads(calc, atoms, threads, spec)}
    except MemoryError as exc:
        rec["status"] = f"out of memory: {exc}"
    done = {int(t): r["efs"]["median_s"] for t, r in rec["by_threads"].items()}
    if done:
        rec["best_threads"] = min(done, key=done.get)
        rec["efs"] = rec["by_threads"][str(rec["best_threads"])]["efs"]
    rec.update(rss_before_mb=before / MB, peak_mb=procstats.peak_rss() / MB)
    return rec


def run(spec: dict) -> None:
    import torch

    procstats.cap_memory(spec.get("mem_cap", 0) and spec["mem_cap"] + (2 << 30))
    calc = make_calculator(spec.get("teacher", spec["label"]))
    head = {"label": spec["label"], "system": spec["system"], "torch": torch.__version__}
    threads_list = list(spec.get("threads", [2, 1]))
    t_start, sizes = time.perf_counter(), spec["sizes"]
    for i, n in enumerate(sizes):
        load = procstats.load()
        rec = measure_size(calc, spec, n, threads_list)
        rec.update(head, threads=rec.get("best_threads"), load=load, load_after=procstats.load())
        procstats.emit(spec.get("out"), rec)
        if rec["status"] != "ok" or i + 1 == len(sizes):
            return
        call = rec["efs"]["median_s"]
        if call > spec.get("compare_s", 10.0):
            threads_list = [rec["best_threads"]]
        calls = 1 + procstats.repeats_for(2.2 * call, spec.get("max_repeats", 3),
                                          spec.get("target_s", 20))
        predicted = 2.2 * call * calls * len(threads_list)
        if time.perf_counter() - t_start + predicted > spec.get("budget_s", 1e9) or \
                2.2 * call > spec.get("max_call_s", 1e9):
            procstats.emit(spec.get("out"), {**head, "atoms": sizes[i + 1],
                                             "status": "time budget"})
            return


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        run(json.load(fh))
