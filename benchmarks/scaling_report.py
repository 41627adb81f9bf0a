"""Write the scaling results: JSON (everything), Markdown tables and two log-log PNG plots."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import socket
from pathlib import Path

import scaling_analysis as sa

COMPARE = (("jax:official", "torch:official/mmap0+thp", "torch:official"),
           ("jax:10m", "torch:10m/mmap0+thp", "torch:10m"))
VARIANT_LABELS = ("jax:10m", "jax:10m/remat", "jax:10m/scan", "jax:10m/remat+scan")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            match = re.search(r"model name\s*:\s*(.+)", fh.read())
        return match.group(1).strip() if match else platform.processor()
    except OSError:
        return platform.processor()


def machine_meta(device: dict, args, ckpts: dict, load) -> dict:
    import procstats

    return {"host": socket.gethostname(), "date": datetime.date.today().isoformat(),
            "cpu": cpu_name(), "logical_cpus": os.cpu_count(),
            "ram_gib": procstats.meminfo()["MemTotal"] / 1024**3, "device": device,
            "mem_cap_gib": args.mem_cap / 1024**3, "quick": args.quick,
            "official_checkpoints": ckpts, "load_start": load,
            "argv": vars(args) | {"mem_cap": args.mem_cap}}


def default_stem(device: dict, quick: bool = False) -> str:
    machine = socket.gethostname() if device["platform"] == "cpu" else device["device"]
    machine = re.sub(r"[^A-Za-z0-9]+", "-", machine).strip("-").lower()
    return f"{machine}-{datetime.date.today().isoformat()}" + ("-quick" if quick else "")


def _f(x, fmt="{:.3g}"):
    return "" if x is None else fmt.format(x)


def efficiency(point: dict, peak: dict) -> str:
    """Achieved GFLOP/s (XLA cost analysis) and its share of the matrix-product peak."""
    gf = point.get("gflops_per_s")
    ref = peak.get(str(point.get("threads"))) or peak.get("0")
    if gf is None:
        return ""
    return f"{gf:.3g}" + (f" ({100 * gf / ref:.0f} %)" if ref else "")


def summary_table(pts, fit, lim, peak) -> str:
    head = ("| curve | system | sizes | largest timed | ms/atom there | atoms/s there | "
            "GFLOP/s there (% of matmul peak) | exponent time (E+F+S) | exponent E only | "
            "exponent memory | stopped at | why | largest fitting (XLA probe) |\n"
            + "|---" * 13 + "|\n")
    rows = []
    for (label, system), ps in sorted(pts.items()):
        last, f, li = ps[-1], fit[(label, system)], lim.get((label, system), {})
        rows.append(f"| {label} | {system} | {len(ps)} | {last['atoms']} | "
                    f"{_f(last['us_per_atom'] / 1e3)} | {_f(last['atoms_per_s'])} | "
                    f"{efficiency(last, peak)} | "
                    f"{_f(f['time'], '{:.2f}')} | {_f(f['time_energy'], '{:.2f}')} | "
                    f"{_f(f['memory'], '{:.2f}')} | {_f(li.get('stopped_at'), '{}')} | "
                    f"{li.get('reason') or ''} | {_f(li.get('largest_probe_fit'), '{}')} |")
    return head + "\n".join(rows) + "\n"


def curve_table(label, system, ps) -> str:
    head = (f"\n#### {label}, {system}\n\n| atoms | edges | bonds | angles | graph (s) | "
            "compile (s) | E+F+S (s) | threads (t:s) | E only (s) | atoms/s | peak RSS (MB) | "
            "RSS increase (MB) | XLA temp (MB) | MFLOP/atom | GFLOP/s | load 1 min |\n"
            + "|---" * 16 + "|\n")
    rows = []
    for p in ps:
        by = " ".join(f"{t}:{s:.3g}" for t, s in sorted(p.get("by_threads", {}).items()))
        rows.append(f"| {p['atoms']} | {_f(p.get('edges'), '{}')} | {_f(p.get('bonds'), '{}')} | "
                    f"{_f(p.get('angles'), '{}')} | {_f(p.get('graph_s'))} | "
                    f"{_f(p.get('compile_s'))} | {_f(p['efs_s'])} | {by} | {_f(p.get('e_s'))} | "
                    f"{_f(p['atoms_per_s'])} | {_f(p.get('device_peak_mb') or p.get('peak_mb'), '{:.0f}')} | "
                    f"{_f(p.get('delta_mb'), '{:.0f}')} | {_f(p.get('xla_temp_mb'), '{:.0f}')} | "
                    f"{_f(p.get('mflop_per_atom'))} | {_f(p.get('gflops_per_s'))} | "
                    f"{_f((p.get('load') or [None])[0])} |")
    return head + "\n".join(rows) + "\n"


def _speedup(row: dict) -> str:
    """'2.91', or with rounds '2.91 (2.80-3.05, 3 rounds)'."""
    per_round = row.get("speedup_rounds")
    text = f"{row['speedup']:.2f}"
    if per_round:
        text += f" ({min(per_round):.2f}-{max(per_round):.2f}, {len(per_round)} rounds)"
    return text


def ratio_tables(pts) -> tuple[str, dict]:
    text, data = "", {}
    systems = sorted({s for _, s in pts})
    for jax_label, fast, default in COMPARE:
        for system in systems:
            slow = {r["atoms"]: r for r in sa.ratios(pts, jax_label, default, system)}
            rows = sa.ratios(pts, jax_label, fast, system)
            used = fast if rows else default
            rows = rows or list(slow.values())  # on a GPU only the default curve runs
            if not rows:
                continue
            data[f"{jax_label} vs {used} ({system})"] = rows
            text += (f"\n#### {jax_label} vs the official model, {system}\n\n| atoms | JAX E+F+S (s) "
                     "| official fastest (s) | speed-up | official default malloc (s) | speed-up "
                     "| E-only speed-up | JAX peak memory (MB) | official peak memory (MB) | memory ratio "
                     "| RSS-increase ratio |\n" + "|---" * 11 + "|\n")
            for r in rows:
                s = slow.get(r["atoms"], {})
                text += (f"| {r['atoms']} | {r['jax_s']:.3g} ({r['jax_threads']}t) | "
                         f"{r['official_s']:.3g} ({r['official_threads']}t) | {_speedup(r)} | "
                         f"{_f(s.get('official_s'))} | {_f(s.get('speedup'), '{:.2f}')} | "
                         f"{_f(r['energy_speedup'], '{:.2f}')} | {_f(r['jax_peak_mb'], '{:.0f}')} | "
                         f"{_f(r['official_peak_mb'], '{:.0f}')} | {_f(r['mem_ratio'], '{:.2f}')} | "
                         f"{_f(r['delta_ratio'], '{:.2f}')} |\n")
    return text, data


def variant_table(pts, lim) -> str:
    rows = []
    for label in VARIANT_LABELS:
        for p in pts.get((label, "fecr"), []):
            rows.append((p["atoms"], label, p))
    if not rows:
        return ""
    text = ("\n| atoms | variant | E+F+S (s) | compile (s) | peak RSS (MB) | XLA temp (MB) |\n"
            "|---|---|---|---|---|---|\n")
    for n, label, p in sorted(rows, key=lambda x: (x[0], x[1])):
        text += (f"| {n} | {label} | {p['efs_s']:.3g} | {_f(p.get('compile_s'))} | "
                 f"{_f(p.get('peak_mb'), '{:.0f}')} | {_f(p.get('xla_temp_mb'), '{:.0f}')} |\n")
    for label in VARIANT_LABELS:
        li = lim.get((label, "fecr"), {})
        if li.get("largest_probe_fit") or li.get("smallest_probe_fail"):
            text += (f"\n{label}: largest size that fits by XLA memory analysis "
                     f"{li.get('largest_probe_fit')}, first that does not "
                     f"{li.get('smallest_probe_fail')}.")
    return text + "\n"


def markdown(meta, pts, fit, lim, plots) -> str:
    ratio_text, _ = ratio_tables(pts)
    text = (f"# Scaling benchmark: {meta['host']}, {meta['date']}\n\n"
            f"Device {meta['device']['device']} ({meta['device']['platform']}); CPU {meta['cpu']}, "
            f"{meta['logical_cpus']} logical CPUs, {meta['ram_gib']:.1f} GiB RAM; memory cap "
            f"{meta['mem_cap_gib']:.1f} GiB; load at start {meta['load_start']}, at end "
            f"{meta.get('load_end')}; wall {meta.get('wall_min', 0):.1f} min.\n\n"
            "Times are the median of steady-state calls after warm-up (JAX: two or more "
            "warm-up calls, more while they still get faster; "
            "block_until_ready), best of 1 and 2 threads where both were run; peak RSS is "
            "VmHWM during the calls (absolute, and its increase over the RSS before the calls); "
            "XLA temp is the compiled executable's temporary buffer size; exponents are "
            "log-log slopes over the larger half of the sizes.\n\n"
            + (f"{meta['rounds']} rounds, curves in alternating order: times are medians over "
               "the rounds, speed-ups medians of the per-round ratios (range in brackets).\n\n"
               if (meta.get("rounds") or 1) > 1 else "")
            + f"Matrix-product peak (GFLOP/s by thread count): {meta.get('peak_matmul_gflops')}."
            f"\n\nPlots: {', '.join(plots)}\n\n## Summary\n\n"
            + summary_table(pts, fit, lim, meta.get("peak_matmul_gflops") or {}))
    if ratio_text:
        text += "\n## JAX vs the official PyTorch MatRIS 0.1.0 (same weights)\n" + ratio_text
    vt = variant_table(pts, lim)
    if vt:
        text += "\n## 10m: rematerialisation and scanned blocks (Fe-Cr)\n" + vt
    text += "\n## Every curve\n" + "".join(curve_table(label, system, ps)
                                           for (label, system), ps in sorted(pts.items()))
    return text


def write_all(folder: Path, stem: str, meta: dict, records: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pts, lim = sa.points(records), sa.limits(records)
    fit = sa.fits(pts)
    try:
        import scaling_plots

        plots = scaling_plots.plot_all(pts, fit, folder, stem)
    except ImportError as exc:  # matplotlib missing: tables only
        print(f"no plots: {exc}")
        plots = []
    key = lambda k: f"{k[0]}|{k[1]}"  # noqa: E731
    _, ratio_data = ratio_tables(pts)
    data = {"meta": meta, "fits": {key(k): v for k, v in fit.items()},
            "limits": {key(k): v for k, v in lim.items()}, "ratios": ratio_data,
            "points": {key(k): v for k, v in pts.items()}, "records": records}
    (folder / f"{stem}.json").write_text(json.dumps(data, indent=1, default=str))
    (folder / f"{stem}.md").write_text(markdown(meta, pts, fit, lim, plots))
    print(f"written {folder / stem}.json, .md, {', '.join(plots)}")
    return folder / f"{stem}.json"
