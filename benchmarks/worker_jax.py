"""One benchmark curve of the JAX model in its own process: sizes in increasing order.

    .venv/bin/python benchmarks/worker_jax.py SPEC.json

SPEC (written by bench_scaling.py): label, model ({"preset": name} or {"ckpt": path}),
overrides (config fields: remat, scan_blocks, ...), dense (bool: the O(N^2) baseline),
system, sizes, structures (folder), tasks (["efs", "e"]), threads, max_repeats, target_s,
budget_s, max_call_s, mem_cap (bytes, 0 = none), cache_dir, out (JSONL path), seed.

Per size one JSON line: graph counts and build time, and per task compile time, steady-state
time (median after the warm-up calls, block_until_ready), XLA cost-analysis FLOPs, XLA memory
analysis, and the peak RSS during the calls (VmHWM; device memory stats on a GPU).  The curve
stops at the first size that does not fit (predicted by XLA's memory analysis against the cap,
or an allocation failure) or whose predicted cost would overrun the time budget.
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


def setup(spec: dict) -> list[int]:
    """Affinity, memory cap and jax flags; must run before jax is imported."""
    cpus = procstats.pin_threads(spec.get("threads", 0)) if spec.get("pin", True) else []
    if spec.get("mem_cap"):
        # address space, not memory: a kept heap keeps its range after its free pages are
        # given back, and a bigger size maps new memory above it (the RSS watcher in runner.py
        # enforces the cap itself)
        procstats.cap_memory(spec["mem_cap"] + spec.get("address_slack", 8 << 30))
    import jax

    if spec.get("cache_dir"):
        jax.config.update("jax_compilation_cache_dir", spec["cache_dir"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return cpus


def load_model(spec: dict):
    """(config, params or None); None = initialise at the first size (shape-independent)."""
    from matris import load
    from matris.config import get_config

    overrides = spec.get("overrides", {})
    if "ckpt" in spec["model"]:
        model = load(spec["model"]["ckpt"])
        return model.config.replace(**overrides), model.params
    return get_config(spec["model"]["preset"], **overrides), None


def device_info() -> dict:
    import jax

    dev = jax.devices()[0]
    return {"platform": dev.platform, "device": getattr(dev, "device_kind", str(dev)),
            "n_devices": len(jax.devices()), "jax": jax.__version__}


def device_peak() -> int | None:
    import jax

    stats = jax.devices()[0].memory_stats()
    return None if not stats else int(stats.get("peak_bytes_in_use", 0))


def device_free() -> int | None:
    import jax

    stats = jax.devices()[0].memory_stats()
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def graph_record(spec, cfg, n):
    """Build the graph of one structure; (record, padded device batch)."""
    import jax

    from matris.graph import budgets_for, graph_for, pack

    atoms = systems.read_structure(spec["structures"], spec["system"], n)
    t0 = time.perf_counter()
    graph = graph_for(atoms, cfg)
    t_graph = time.perf_counter() - t0
    budgets = budgets_for([graph])
    batch, _ = pack([graph], budgets)
    _, edges, bonds, angles = graph.sizes
    rec = {"atoms": n, "edges": edges, "bonds": bonds, "angles": angles,
           "budgets": list(budgets), "graph_s": t_graph}
    return rec, jax.device_put(batch)


def memory_fits(compiled, spec, extra: int = 0) -> tuple[bool, dict]:
    """XLA's memory analysis of one call against the cap (host RSS now + temp + output +
    ``extra`` bytes not allocated yet)."""
    ma = compiled.memory_analysis()
    info = {"xla_temp_mb": ma.temp_size_in_bytes / MB, "xla_arg_mb": ma.argument_size_in_bytes / MB,
            "xla_out_mb": ma.output_size_in_bytes / MB}
    need = ma.temp_size_in_bytes + ma.output_size_in_bytes + extra
    free = device_free()
    if free is not None:
        return need < free, info
    from matris.runtime import release_free_heap

    cap = spec.get("mem_cap", 0)
    release_free_heap()  # earlier sizes' freed scratch (a kept heap) out of the RSS
    in_use = procstats.rss()
    info["predicted_peak_mb"] = (in_use + need) / MB
    info["mem_cap_mb"] = cap / MB
    return (not cap) or in_use + need < cap, info


def flops_of(compiled, cfg) -> float | None:
    """XLA's FLOP count; None for loops (remat, scan_blocks, chunk_rows): its cost analysis
    counts a loop body once, not once per block."""
    if cfg.remat or cfg.scan_blocks or cfg.chunk_rows:
        return None
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return float(ca["flops"]) if ca and "flops" in ca else None


def compile_task(spec, cfg, params, batch, task):
    """(executable, the config it runs): with spec auto_remat the calculator's own choice for
    this shape (`matris.calculator.variants_for`: plain, or the sub-layers in chunks of rows
    keeping their products, chunked, chunked and rematerialised, the fastest that fits);
    otherwise exactly the curve's config."""
    import jax

    from matris.calculator import CompiledPredictor
    from matris.potential import make_predictor

    if spec.get("auto_remat"):
        holder = CompiledPredictor(cfg, task)
        exe = holder.executable(params, batch)
        return exe, holder.chosen[holder.key(batch)]
    return jax.jit(make_predictor(cfg, task)).lower(params, batch).compile(), cfg


def measure_task(spec, cfg, params, batch, task) -> dict:
    """Compile and time one task on one batch."""
    import jax


    t0 = time.perf_counter()
    compiled, cfg = compile_task(spec, cfg, params, batch, task)
    out = {"compile_s": time.perf_counter() - t0, "flops": flops_of(compiled, cfg),
           "remat": cfg.remat, "remat_save_dots": cfg.remat_save_dots,
           "chunk_rows": cfg.chunk_rows}
    fits, mem = memory_fits(compiled, spec)
    out.update(mem)
    if not fits:
        out["status"] = "exceeds memory (XLA memory analysis)"
        return out
    procstats.reset_peak()
    before = procstats.rss()
    room = lambda: None  # noqa: E731
    if spec.get("auto_remat"):  # as the calculator calls it: the kept heap trimmed when short
        from matris.calculator import make_room

        temp = compiled.memory_analysis().temp_size_in_bytes
        room = lambda: make_room(temp)  # noqa: E731

    def call():
        room()
        jax.block_until_ready(compiled(params, batch))

    first = settled = procstats.timed_calls(call, 1, warmup=0)["median_s"]
    # The heap's first growth can slow the first calls several-fold (official shape, 256 Fe-Cr
    # atoms: 20 s, 23 s, then 5 s): one more warm-up call, then more while calls still fall.
    for i in range(4):
        now = procstats.timed_calls(call, 1, warmup=0)["median_s"]
        dropping, settled = now < 0.8 * settled, now
        if i > 0 and not dropping:
            break
    repeats = procstats.repeats_for(settled, spec.get("max_repeats", 5), spec.get("target_s", 20))
    stats = procstats.timed_calls(call, repeats, warmup=0)
    out.update(status="ok", first_s=first, **stats, rss_before_mb=before / MB,
               peak_mb=procstats.peak_rss() / MB)
    dev = device_peak()
    if dev is not None:
        out["device_peak_mb"] = dev / MB
    if out["flops"]:
        out["gflops_per_s"] = out["flops"] / out["median_s"] / 1e9
    return out


def is_oom(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return isinstance(exc, MemoryError) or "RESOURCE_EXHAUSTED" in text or "Out of memory" in text


def measure_size(spec, cfg, params, n):
    """One size: graph, then each task; (record, params, batch)."""
    import jax

    from matris.potential import init_params

    rec, batch = graph_record(spec, cfg, n)
    if params is None:
        params = jax.device_put(init_params(cfg, batch, spec.get("seed", 0)))
    rec["status"] = "ok"
    for task in spec.get("tasks", ["efs", "e"]):
        try:
            res = measure_task(spec, cfg, params, batch, task)
        except Exception as exc:  # noqa: BLE001 - an OOM must end the curve cleanly
            if not is_oom(exc):
                raise
            res = {"status": f"out of memory: {str(exc).splitlines()[0][:160]}"}
        rec[task] = res
        if res["status"] != "ok":
            rec["status"] = res["status"]
            break
    return rec, params, batch


def abstract_batch(batch, budgets: tuple, new_budgets: tuple):
    """ShapeDtypeStructs of a batch packed with ``new_budgets`` (each leaf's leading axis is
    one of the five budgets; they must be distinct in ``budgets`` to tell which)."""
    import jax

    if len(set(budgets)) != len(budgets):
        raise ValueError(f"budgets {budgets} are not distinct")
    level = dict(zip(budgets, new_budgets))
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct((level[x.shape[0]], *x.shape[1:]), x.dtype), batch)


def probe_size(spec, cfg, params, last, n) -> dict:
    """Compile only (no graph, no call): XLA's memory analysis of E+F+S at ``n`` atoms, the
    counts scaled from the last measured size (exactly linear for these crystals)."""
    import jax
    import numpy as np

    from matris.calculator import lean_config, needs_low_memory
    from matris.graph import budgets_for
    from matris.potential import make_predictor

    rec, batch = last
    per_atom = np.array([rec["edges"], rec["bonds"], rec["angles"]]) / rec["atoms"]
    counts = np.array([[n, *np.round(per_atom * n).astype(np.int64)]])
    budgets = tuple(budgets_for(counts))
    abstract = abstract_batch(batch, tuple(rec["budgets"]), budgets)
    if spec.get("auto_remat") and needs_low_memory(cfg, "efs", budgets[3]):
        cfg = lean_config(cfg)  # the calculator's last fallback where memory is short
    t0 = time.perf_counter()
    compiled = jax.jit(make_predictor(cfg, "efs")).lower(params, abstract).compile()
    fits, mem = memory_fits(compiled, spec, extra=2 * compiled.memory_analysis()
                            .argument_size_in_bytes)
    return {"atoms": n, "status": "probe: fits" if fits else "probe: exceeds memory",
            "probe": True, "budgets": list(budgets), "compile_s": time.perf_counter() - t0,
            "edges": int(counts[0, 1]), "bonds": int(counts[0, 2]), "angles": int(counts[0, 3]),
            "efs": {"flops": flops_of(compiled, cfg), **mem}}


def probe_limit(spec, cfg, params, last, head) -> None:
    """Largest doubling size that fits by XLA's memory analysis: extrapolate the E+F+S
    memory linearly from the measured sizes, then compile at most three sizes around it."""
    rec = last[0]
    n, per_atom = rec["atoms"], rec["efs"]["xla_temp_mb"] * MB / rec["atoms"]
    room = spec["mem_cap"] - procstats.rss()
    guess = n
    while guess * 2 * per_atom < room and guess < spec.get("probe_max", 1 << 22):
        guess *= 2
    guess = max(guess, 2 * n)
    tried = {}
    for _ in range(3):
        if guess <= n or guess in tried:
            break
        res = probe_size(spec, cfg, params, last, guess)
        procstats.emit(spec.get("out"), {**head, **res})
        tried[guess] = res["status"] == "probe: fits"
        guess = guess * 2 if tried[guess] else guess // 2
        if tried.get(guess) is not None:
            break


def predicted_next(rec: dict, spec: dict) -> float:
    """Seconds the next (doubled) size is expected to take, from this size's costs."""
    run = sum(t.get("median_s", 0) * (3 + procstats.repeats_for(2.1 * t.get("median_s", 0),
              spec.get("max_repeats", 5), spec.get("target_s", 20))) for t in _tasks(rec, spec))
    comp = sum(t.get("compile_s", 0) for t in _tasks(rec, spec))
    return 2.1 * run + 1.2 * comp + 2.5 * rec.get("graph_s", 0)


def next_call(rec: dict, spec: dict) -> float:
    return 2.1 * max((t.get("median_s", 0) for t in _tasks(rec, spec)), default=0)


def _tasks(rec, spec):
    return [rec[t] for t in spec.get("tasks", ["efs", "e"]) if isinstance(rec.get(t), dict)]


def peak_matmul(spec: dict) -> None:
    """The machine's practical FLOP/s: a 2048^3 float32 matrix product, median of 10."""
    import jax
    import jax.numpy as jnp

    n = spec.get("peak_n", 2048)
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    stats = procstats.timed_calls(lambda: jax.block_until_ready(f(a)), 10, warmup=2)
    procstats.emit(spec.get("out"), {"label": "peak-matmul", "system": "-",
                                     "threads": spec.get("threads"), "status": "ok",
                                     "gflops_per_s": 2 * n**3 / stats["median_s"] / 1e9,
                                     "n": n, **stats, "load": procstats.load()})


def run(spec: dict) -> None:
    cpus = setup(spec)
    if spec.get("peak"):
        peak_matmul(spec)
        return
    if spec.get("dense"):
        import dense_attention

        dense_attention.install()
    cfg, params = load_model(spec)
    head = {"label": spec["label"], "system": spec["system"], "threads": spec.get("threads"),
            "cpus": cpus, **device_info(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "malloc_mmap_max": os.environ.get("MALLOC_MMAP_MAX_")}
    head["base_rss_mb"] = procstats.rss() / MB
    t_start, last = time.perf_counter(), None
    sizes = spec["sizes"]
    for i, n in enumerate(sizes):
        load = procstats.load()
        rec, params, batch = measure_size(spec, cfg, params, n)
        rec.update(head, load=load, load_after=procstats.load())
        procstats.emit(spec.get("out"), rec)
        if rec["status"] != "ok":
            return
        last = (rec, batch)
        if i + 1 == len(sizes) and spec.get("probe") and spec.get("mem_cap"):
            probe_limit(spec, cfg, params, last, head)
        elapsed = time.perf_counter() - t_start
        if i + 1 < len(sizes) and (
                elapsed + predicted_next(rec, spec) > spec.get("budget_s", 1e9)
                or next_call(rec, spec) > spec.get("max_call_s", 1e9)):
            procstats.emit(spec.get("out"), {**head, "atoms": sizes[i + 1],
                                             "status": "time budget"})
            if spec.get("probe") and spec.get("mem_cap"):
                probe_limit(spec, cfg, params, last, head)
            return


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        run(json.load(fh))
