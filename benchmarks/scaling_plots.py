"""Two log-log figures: time per E+F+S step vs atoms (fitted exponents in the legend) and peak
memory vs atoms; one panel per system."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import scaling_analysis as sa  # noqa: E402

STYLE = {"jax": "-", "torch": "--", "teacher": ":"}
MARK = {"jax": "o", "torch": "s", "teacher": "^"}


def _panels(pts):
    systems = sorted({s for _, s in pts})
    fig, axes = plt.subplots(1, len(systems), figsize=(7 * len(systems), 5.5), squeeze=False)
    return systems, fig, axes[0]


def _memory(p):
    return p.get("device_peak_mb") or p.get("peak_mb")


def _draw(ax, pts, system, fit, value, with_slope):
    for (label, sys_), ps in sorted(pts.items()):
        if sys_ != system:
            continue
        ys = [value(p) for p in ps]
        xs = [p["atoms"] for p, y in zip(ps, ys) if y]
        ys = [y for y in ys if y]
        if not xs:
            continue
        kind = ps[0].get("kind", "jax")
        slope = fit[(label, sys_)]["time"] if with_slope == "time" else sa.slope(xs, ys)
        name = label + (f" (slope {slope:.2f})" if slope is not None else "")
        ax.loglog(xs, ys, STYLE.get(kind, "-"), marker=MARK.get(kind, "o"), ms=4, label=name)


def plot_all(pts, fit, folder: Path, stem: str) -> list[str]:
    """Write <stem>-time.png and <stem>-memory.png; return their file names."""
    if not pts:
        return []
    out = []
    for what, ylabel, value in (
            ("time", "E+F+S time per step (s)", lambda p: p["efs_s"]),
            ("memory", "peak RSS during the calls (MB)", _memory)):
        systems, fig, axes = _panels(pts)
        for ax, system in zip(axes, systems):
            _draw(ax, pts, system, fit, value, what)
            ax.set_xlabel("atoms")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{system}: {what} (slopes over the larger half of sizes)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"{stem}-{what}.png"
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        out.append(name)
    return out
