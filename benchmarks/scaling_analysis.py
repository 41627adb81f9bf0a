"""From raw worker records to points, fitted exponents, limits and ratios.

A point is one (curve label, system, atom count): the better of the thread settings for
steady-state E+F+S (and, separately, energy only), the compile time of the cold process, the
peak RSS during the calls of the setting that won, and XLA's FLOP count.  A run with several
rounds (``bench_scaling.py --rounds``) measures every curve once per round; a point is then
the median over the rounds, and a speed-up the median of the per-round ratios (pairs measured
minutes apart, so a slow spell of the shared machine does not count against one side only).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

OK = "ok"


def _median(rec: dict, task: str) -> float | None:
    res = rec.get(task)
    return res.get("median_s") if isinstance(res, dict) and res.get("status") == OK else None


def _jax_point(recs: list[dict]) -> dict:
    """Merge the per-thread JAX records of one size."""
    timed = [r for r in recs if _median(r, "efs") is not None]
    best = min(timed, key=lambda r: _median(r, "efs"))
    efs = best["efs"]
    compile_s = max(r["efs"].get("compile_s", 0) for r in timed)
    e_times = [(_median(r, "e"), r) for r in recs if _median(r, "e") is not None]
    point = {"efs_s": efs["median_s"], "efs_min_s": efs["min_s"], "n": efs["n"],
             "threads": best.get("threads"), "compile_s": compile_s,
             "by_threads": {str(r.get("threads")): _median(r, "efs") for r in timed},
             "peak_mb": efs.get("peak_mb"), "delta_mb": _delta(efs),
             "xla_temp_mb": efs.get("xla_temp_mb"), "device_peak_mb": efs.get("device_peak_mb"),
             "flops": efs.get("flops"), "load": best.get("load")}
    if e_times:
        e_s, e_rec = min(e_times, key=lambda x: x[0])
        point.update(e_s=e_s, e_compile_s=max(r["e"].get("compile_s", 0) for _, r in e_times),
                     e_flops=e_rec["e"].get("flops"))
    return point


def _delta(res: dict) -> float | None:
    if res.get("peak_mb") is None or res.get("rss_before_mb") is None:
        return None
    return res["peak_mb"] - res["rss_before_mb"]


def _torch_point(rec: dict) -> dict:
    """Official / teacher record (already the best thread count, chosen in the worker)."""
    efs = rec["efs"]
    point = {"efs_s": efs["median_s"], "efs_min_s": efs["min_s"], "n": efs["n"],
             "threads": rec.get("best_threads"),
             "by_threads": {t: r["efs"]["median_s"] for t, r in rec.get("by_threads", {}).items()
                            if r.get("efs", {}).get("status") == OK},
             "peak_mb": rec.get("peak_mb"), "delta_mb": _delta(rec), "load": rec.get("load"),
             "device_peak_mb": rec.get("device_peak_mb")}
    if _median(rec, "e") is not None:
        point["e_s"] = rec["e"]["median_s"]
    return point


def _round_point(recs: list[dict]) -> dict:
    """The point of one size in one round (JAX: best thread count of that round)."""
    first = recs[0]
    point = _jax_point(recs) if first.get("kind") == "jax" else _torch_point(first)
    point.update(kind=first.get("kind"),
                 **{k: first.get(k) for k in ("edges", "bonds", "angles", "graph_s")})
    return point


def _merge_rounds(by_round: dict) -> dict:
    """{round: point} -> one point: the round with the median E+F+S time, its times replaced
    by the medians over rounds, the per-round times kept (by_round, e_by_round)."""
    rounds = sorted(by_round)
    times = [by_round[r]["efs_s"] for r in rounds]
    point = dict(by_round[rounds[int(np.argsort(times)[(len(times) - 1) // 2])]])
    if len(rounds) == 1:
        return point
    e_times = {r: by_round[r]["e_s"] for r in rounds if by_round[r].get("e_s") is not None}
    point.update(efs_s=float(np.median(times)),
                 efs_min_s=min(by_round[r]["efs_min_s"] for r in rounds),
                 compile_s=max(by_round[r].get("compile_s") or 0 for r in rounds),
                 by_round={r: by_round[r]["efs_s"] for r in rounds}, e_by_round=e_times)
    if e_times:
        point["e_s"] = float(np.median(list(e_times.values())))
    return point


def points(records: list[dict]) -> dict:
    """{(label, system): [point, ...] sorted by atoms} for sizes measured successfully; with
    several rounds (records with "round"), each size's median over the rounds."""
    groups = defaultdict(list)
    for r in records:
        if r.get("status") == OK and r.get("atoms") and not r.get("probe"):
            groups[(r["label"], r["system"], r["atoms"], r.get("round", 0))].append(r)
    rounds = defaultdict(dict)
    for (label, system, atoms, round_), recs in groups.items():
        rounds[(label, system, atoms)][round_] = _round_point(recs)
    out = defaultdict(list)
    for (label, system, atoms), by_round in rounds.items():
        point = _merge_rounds(by_round)
        point["atoms"] = atoms
        point["us_per_atom"] = 1e6 * point["efs_s"] / atoms
        point["atoms_per_s"] = atoms / point["efs_s"]
        if point.get("flops"):
            point["gflops_per_s"] = point["flops"] / point["efs_s"] / 1e9
            point["mflop_per_atom"] = point["flops"] / atoms / 1e6
        out[(label, system)].append(point)
    return {k: sorted(v, key=lambda p: p["atoms"]) for k, v in out.items()}


def limits(records: list[dict]) -> dict:
    """{(label, system): {"largest": n, "stopped_at": n, "reason": str, "largest_probe_fit": n}}"""
    out = {}
    for r in records:
        key = (r.get("label"), r.get("system"))
        info = out.setdefault(key, {"largest": None, "stopped_at": None, "reason": None,
                                    "largest_probe_fit": None, "smallest_probe_fail": None})
        n, status = r.get("atoms"), str(r.get("status"))
        if status == OK and not r.get("probe"):
            info["largest"] = max(info["largest"] or 0, n)
        elif status == "probe: fits":
            info["largest_probe_fit"] = max(info["largest_probe_fit"] or 0, n)
        elif status.startswith("probe: exceeds"):
            info["smallest_probe_fail"] = min(info["smallest_probe_fail"] or 1 << 60, n)
        elif info["reason"] is None or (n or 0) < (info["stopped_at"] or 1 << 60):
            info.update(stopped_at=n, reason=status)
    return out


def slope(xs, ys, larger_half: bool = True) -> float | None:
    """Least-squares slope of log y vs log x over the larger half of the sizes (>= 2 points)."""
    pts = [(x, y) for x, y in zip(xs, ys) if x and y and y > 0]
    if larger_half:
        pts = pts[len(pts) - max(2, math.ceil(len(pts) / 2)):]
    if len(pts) < 2:
        return None
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def fits(pts: dict) -> dict:
    """Exponents of time (E+F+S), energy-only time and memory per curve."""
    out = {}
    for key, ps in pts.items():
        atoms = [p["atoms"] for p in ps]
        mem = [p.get("device_peak_mb") or p.get("xla_temp_mb") or p.get("delta_mb") for p in ps]
        out[key] = {"time": slope(atoms, [p["efs_s"] for p in ps]),
                    "time_energy": slope(atoms, [p.get("e_s") for p in ps]),
                    "memory": slope(atoms, mem), "sizes": len(ps),
                    "fit_sizes": atoms[len(atoms) - max(2, math.ceil(len(atoms) / 2)):]}
    return out


def paired(a: dict, b: dict, key: str = "by_round") -> list[float]:
    """b / a per round run by both points (empty unless both have several rounds)."""
    ra, rb = a.get(key) or {}, b.get(key) or {}
    return [rb[r] / ra[r] for r in sorted(set(ra) & set(rb)) if ra[r]]


def ratios(pts: dict, jax_label: str, torch_label: str, system: str) -> list[dict]:
    """Per shared size: official / JAX time and memory.  With several rounds the speed-ups
    are the medians of the per-round ratios (speedup_rounds lists them)."""
    jax = {p["atoms"]: p for p in pts.get((jax_label, system), [])}
    ref = {p["atoms"]: p for p in pts.get((torch_label, system), [])}
    rows = []
    for n in sorted(set(jax) & set(ref)):
        j, t = jax[n], ref[n]
        key = "device_peak_mb" if j.get("device_peak_mb") and t.get("device_peak_mb") \
            else "peak_mb"  # on a GPU: device memory, not host RSS
        per_round, e_round = paired(j, t), paired(j, t, "e_by_round")
        rows.append({"atoms": n, "jax_s": j["efs_s"], "official_s": t["efs_s"],
                     "speedup": float(np.median(per_round)) if per_round
                     else t["efs_s"] / j["efs_s"],
                     "speedup_rounds": per_round or None,
                     "jax_threads": j.get("threads"), "official_threads": t.get("threads"),
                     "jax_peak_mb": j.get(key), "official_peak_mb": t.get(key),
                     "mem_ratio": _div(t.get(key), j.get(key)),
                     "delta_ratio": _div(t.get("delta_mb"), j.get("delta_mb")),
                     "energy_speedup": float(np.median(e_round)) if e_round
                     else _div(t.get("e_s"), j.get("e_s"))})
    return rows


def _div(a, b):
    return a / b if a is not None and b else None
