"""Fast checks of the benchmark helpers (no timing): structures, exponent fits, limits, the
abstract-shape memory probe and the dense-attention baseline model."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import scaling_analysis as sa  # noqa: E402
import systems  # noqa: E402

from matris.config import get_config  # noqa: E402
from matris.graph import budgets_for, build_graph, pack  # noqa: E402


@pytest.mark.parametrize("system,n,per_atom", [("fecr", 32, (64, 32, 182)),
                                               ("mgo", 16, (92, 46, 650))])
def test_structures_have_lattice_counts(system, n, per_atom):
    atoms = systems.make(system, n)
    assert len(atoms) == n
    g = build_graph(atoms, 6.0, 4.0)
    assert np.allclose(np.array(g.sizes[1:]) / n, per_atom, rtol=0.01)


def test_doubling_supercells_stay_near_cubic():
    assert systems._reps(2, 16) == (2, 2, 2)
    assert systems._reps(2, 32) == (2, 2, 4)
    assert systems._reps(8, 64) == (2, 2, 2)
    with pytest.raises(ValueError):
        systems._reps(2, 24)


def test_slope_uses_the_larger_half():
    n = np.array([16, 32, 64, 128, 256, 512])
    t = np.where(n < 100, 1.0, n / 128.0)  # flat (overhead), then linear
    assert sa.slope(n, t) == pytest.approx(1.0)
    assert sa.slope(n, n**2.0) == pytest.approx(2.0)
    assert sa.slope([16], [1.0]) is None


def test_curve_sizes_and_gpu_ratios_use_device_memory():
    """A curve's step picks every k-th doubling; on a GPU (both sides report device memory)
    the memory ratio compares device peaks, and the official default-malloc curve stands in
    when there is no fast-malloc one."""
    import bench_scaling
    import plan
    import scaling_report

    gpu = {c.label: c for c in plan.gpu_plan()}
    assert bench_scaling.curve_sizes(gpu["jax:official"], 1 << 14) == [128, 1024, 8192]
    assert bench_scaling.curve_sizes(plan.Curve("jax", "tiny"), 128) == [16, 32, 64, 128]
    pt = lambda s, dev, host: {"atoms": 128, "efs_s": s, "device_peak_mb": dev, "peak_mb": host}
    pts = {("jax:official", "fecr"): [pt(0.02, 1800.0, 3800.0)],
           ("torch:official", "fecr"): [pt(0.09, 4700.0, 1400.0)]}
    (row,) = sa.ratios(pts, "jax:official", "torch:official", "fecr")
    assert row["speedup"] == pytest.approx(4.5) and row["mem_ratio"] == pytest.approx(4700 / 1800)
    text, data = scaling_report.ratio_tables(pts)
    assert "| 128 |" in text and list(data) == ["jax:official vs torch:official (fecr)"]


def test_limits_and_points_from_records():
    rec = lambda n, status, **kw: {"label": "jax:x", "system": "fecr", "kind": "jax",
                                   "atoms": n, "status": status, **kw}
    timed = {"efs": {"status": "ok", "median_s": 2.0, "min_s": 1.9, "n": 3, "compile_s": 5.0}}
    records = [rec(16, "ok", threads=2, **timed), rec(16, "ok", threads=1,
               efs={**timed["efs"], "median_s": 1.0}), rec(32, "time budget"),
               rec(256, "probe: fits", probe=True), rec(512, "probe: exceeds memory", probe=True)]
    lim = sa.limits(records)[("jax:x", "fecr")]
    assert (lim["largest"], lim["stopped_at"], lim["largest_probe_fit"]) == (16, 32, 256)
    assert lim["smallest_probe_fail"] == 512
    point = sa.points(records)[("jax:x", "fecr")][0]
    assert point["efs_s"] == 1.0 and point["threads"] == 1 and point["compile_s"] == 5.0


def test_abstract_batch_scales_every_level():
    import worker_jax

    g = build_graph(systems.make("fecr", 16), 6.0, 4.0)
    budgets = budgets_for([g])
    batch, _ = pack([g], budgets)
    new = tuple(budgets_for(np.array([[128, 8192, 4096, 23296]])))
    abstract = worker_jax.abstract_batch(batch, tuple(budgets), new)
    assert abstract.angle_center.shape == (new[3],)
    assert abstract.graphs.edges["shift"].shape == (new[1], 3)
    assert abstract.node_mask.shape == (new[0],)
    assert abstract.graph_mask.shape == (new[4],)


@pytest.mark.slow
def test_dense_baseline_runs_and_is_finite():
    import dense_attention

    import matris.nn.model as model_module
    from matris.potential import init_params, make_predictor

    original = model_module.InteractionBlock
    try:
        dense_attention.install()
        cfg = get_config("tiny")
        g = build_graph(systems.make("fecr", 16), cfg.cutoff, cfg.three_body_cutoff)
        batch, _ = pack([g], budgets_for([g]))
        params = init_params(cfg, batch, 0)
        assert "attn_atom_dense" in params["blocks"]
        out = jax.jit(make_predictor(cfg, "ef"))(params, batch)
        assert np.all(np.isfinite(np.asarray(out["forces"])))
    finally:
        model_module.InteractionBlock = original


def test_profile_dot_flops_counts_every_product():
    """The profiler's FLOP count: 2*M*K*N per product, inside nested jits, scans and grads."""
    import profile_call

    w = jax.numpy.ones((8, 5))

    def f(x):
        y = jax.numpy.tanh(x @ w)                        # 2*3*8*5 = 240
        z = jax.jit(lambda a: a @ w.T)(y)                # 2*3*5*8 = 240
        _, out = jax.lax.scan(lambda c, _: (c, c @ w), z, None, length=4)  # 4 * 240
        return out.sum()

    x = jax.numpy.ones((3, 8))
    assert profile_call.dot_flops(jax.make_jaxpr(f)(x).jaxpr) == 240 + 240 + 4 * 240
    g = jax.grad(lambda a: jax.numpy.tanh(a @ w).sum())  # forward + input gradient, no dW
    assert profile_call.dot_flops(jax.make_jaxpr(g)(x).jaxpr) == 240 + 240


def test_rounds_give_median_times_and_paired_speedups():
    import scaling_report

    def rec(label, kind, n, t, round_):
        return {"label": label, "system": "fecr", "kind": kind, "atoms": n, "status": "ok",
                "threads": 2, "round": round_,
                "efs": {"status": "ok", "median_s": t, "min_s": 0.9 * t, "n": 3,
                        "compile_s": 5.0 if round_ == 0 else 0.1}}
    jax_t, torch_t = [2.0, 3.0, 1.5], [6.0, 7.5, 4.8]  # a slow second round for both codes
    records = ([rec("jax:official", "jax", 128, t, i) for i, t in enumerate(jax_t)]
               + [rec("torch:official", "torch", 128, t, i) for i, t in enumerate(torch_t)])
    pts = sa.points(records)
    (point,) = pts[("jax:official", "fecr")]
    assert point["efs_s"] == 2.0 and point["efs_min_s"] == pytest.approx(1.35)
    assert point["compile_s"] == 5.0 and point["by_round"] == {0: 2.0, 1: 3.0, 2: 1.5}
    (row,) = sa.ratios(pts, "jax:official", "torch:official", "fecr")
    assert row["speedup_rounds"] == pytest.approx([3.0, 2.5, 3.2])
    assert row["speedup"] == pytest.approx(3.0)  # the median pair, not 6.0 / 2.0 by chance
    text, _ = scaling_report.ratio_tables(pts)
    assert "3.00 (2.50-3.20, 3 rounds)" in text
