"""One benchmark curve of the OFFICIAL PyTorch MatRIS (matris 0.1.0), run in .venv-ref.

    .venv-ref/bin/python benchmarks/worker_official.py SPEC.json

SPEC: label, ckpt (official .pth.tar, as written by tests/reference/official_driver.py
--save-ckpt), system, sizes, structures, threads (list, e.g. [2, 1]), tasks (["efs", "e"]),
max_repeats, target_s, budget_s, max_call_s, compare_s, mem_cap, out; device ("cpu", or
"cuda" for the official model on a GPU: model and graph moved there, every timed call ends with
torch.cuda.synchronize(), and the peak device memory is recorded as device_peak_mb).

Per size: the official graph converter (pymatgen, timed as the host graph build), then for each
thread count torch.set_num_threads(t), one warm-up call and the median of timed calls of
model([graph], task="efs"); energy only under torch.no_grad() (its fastest energy path).  Both
thread counts are timed while a call takes less than ``compare_s``; above that only the faster
one of the previous size.  Peak RSS is VmHWM over the calls of that size.  MALLOC_MMAP_MAX_ and
other allocator settings come from the environment (recorded).
"""

from __future__ import annotations

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
import procstats  # noqa: E402
import systems  # noqa: E402

MB = 1024**2


def time_task(model, graph, task, spec) -> dict:
    import torch

    def call():
        if task == "e":
            with torch.no_grad():
                out = model([graph], task="e")
        else:
            out = model([graph], task=task)
        float(out["e"].detach().sum())  # waits for the device too
        if spec.get("device", "cpu") == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    repeats = procstats.repeats_for(first, spec.get("max_repeats", 3), spec.get("target_s", 20))
    return {"status": "ok", "first_s": first, **procstats.timed_calls(call, repeats, warmup=0)}


def measure_threads(model, graph, threads, spec) -> dict:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    out = {}
    for task in spec.get("tasks", ["efs", "e"]):
        out[task] = time_task(model, graph, task, spec)
    return out


def measure_size(model, spec, n, threads_list) -> dict:
    import torch
    from official_driver import graph_counts, make_graph

    atoms = systems.read_structure(spec["structures"], spec["system"], n)
    t0 = time.perf_counter()
    graph = make_graph(model, atoms, torch.float32)
    cuda = spec.get("device", "cpu") == "cuda"
    if cuda:
        graph = graph.to("cuda")
        torch.cuda.reset_peak_memory_stats()
    rec = {"atoms": n, **graph_counts(graph), "graph_s": time.perf_counter() - t0}
    rec["edges"], rec["bonds"], rec["angles"] = rec.pop("n_edges"), rec.pop("n_bonds"), \
        rec.pop("n_angles")
    procstats.reset_peak()
    before = procstats.rss()
    by_threads = {}
    try:
        for threads in threads_list:
            by_threads[str(threads)] = measure_threads(model, graph, threads, spec)
        rec["status"] = "ok"
    except (MemoryError, RuntimeError) as exc:
        if "memory" not in str(exc).lower() and not isinstance(exc, MemoryError):
            raise
        rec["status"] = f"out of memory: {str(exc).splitlines()[0][:160]}"
    rec.update(by_threads=by_threads, rss_before_mb=before / MB,
               peak_mb=procstats.peak_rss() / MB)
    if cuda:
        rec["device_peak_mb"] = torch.cuda.max_memory_allocated() / MB
    best = best_threads(by_threads)
    if best is not None:
        rec["best_threads"] = best
        for task, res in by_threads[str(best)].items():
            rec[task] = res
    return rec


def best_threads(by_threads: dict) -> int | None:
    done = {int(t): r["efs"]["median_s"] for t, r in by_threads.items()
            if r.get("efs", {}).get("status") == "ok"}
    return min(done, key=done.get) if done else None


def run(spec: dict) -> None:
    import torch
    from official_driver import load_checkpoint

    procstats.cap_memory(spec.get("mem_cap", 0) and spec["mem_cap"] + (2 << 30))
    with __import__("contextlib").suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    model = load_checkpoint(spec["ckpt"])
    model.eval()
    device = spec.get("device", "cpu")
    if device == "cuda":
        model = model.to("cuda")
    head = {"label": spec["label"], "system": spec["system"], "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "malloc_mmap_max": os.environ.get("MALLOC_MMAP_MAX_"),
            "params": sum(p.numel() for p in model.parameters())}
    threads_list = list(spec.get("threads", [2, 1]))
    t_start, sizes = time.perf_counter(), spec["sizes"]
    for i, n in enumerate(sizes):
        load = procstats.load()
        rec = measure_size(model, spec, n, threads_list)
        rec.update(head, threads=rec.get("best_threads"), load=load, load_after=procstats.load())
        procstats.emit(spec.get("out"), rec)
        if rec["status"] != "ok" or i + 1 == len(sizes):
            return
        call = rec["efs"]["median_s"]
        if call > spec.get("compare_s", 10.0):
            threads_list = [rec["best_threads"]]
        # next size: ~2.2x the call time, warm-up + repeats for each task and thread count
        per_call = sum(rec[t]["median_s"] for t in spec.get("tasks", ["efs", "e"]))
        calls = 1 + procstats.repeats_for(2.2 * call, spec.get("max_repeats", 3),
                                          spec.get("target_s", 20))
        predicted = 2.2 * per_call * calls * len(threads_list) + 2.5 * rec["graph_s"]
        elapsed = time.perf_counter() - t_start
        if elapsed + predicted > spec.get("budget_s", 1e9) or \
                2.2 * call > spec.get("max_call_s", 1e9):
            procstats.emit(spec.get("out"), {**head, "atoms": sizes[i + 1],
                                             "status": "time budget"})
            return


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        run(json.load(fh))
