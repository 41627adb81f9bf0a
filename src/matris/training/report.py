"""End-of-run report: trivial baselines, the MAE tables (overall and by family), learning
curves, bundle, summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from .. import bundle
from ..potential import EV_PER_A3_TO_GPA, Model
from .config import TrainConfig

UNITS = {"energy_mae": ("energy (meV/atom)", 1000.0), "forces_mae": ("forces (meV/A)", 1000.0),
         "stress_mae": ("stress (GPa)", 1.0), "magmoms_mae": ("magmoms (muB)", 1.0)}


def composition_error(ref: np.ndarray, frame) -> float:
    """|E - sum_i ref[Z_i - 1]| / N (eV/atom): the composition model's error on one frame."""
    z = frame.atoms.numbers
    return abs(frame.energy - ref[z - 1].sum()) / len(z)


def baselines(splits: dict, params) -> dict:
    """MAEs of trivial predictors per split: the composition model alone for energy, zero for
    forces and stress, the training mean for magmoms."""
    ref = np.asarray(params["reference_energy"], np.float64)
    train_m = [f.magmoms for f in splits["train"].frames if f.magmoms is not None]
    mean_m = float(np.mean(np.concatenate(train_m))) if train_m else 0.0
    out = {}
    for name, split in splits.items():
        e, f, s, m = [], [], [], []
        for fr in split.frames:
            e.append(composition_error(ref, fr))
            if fr.forces is not None:
                f.append(np.abs(fr.forces).mean())
            if fr.stress is not None:
                s.append(np.abs(fr.stress).mean() * EV_PER_A3_TO_GPA)
            if fr.magmoms is not None:
                m.append(np.abs(fr.magmoms - mean_m).mean())
        # forces / magmoms per atom: weight structures by atom count like the model metrics
        atoms = [len(fr.atoms) for fr in split.frames]
        wmean = lambda v, w: float(np.average(v, weights=w)) if v else float("nan")
        out[name] = {"energy_mae": float(np.mean(e)) if e else float("nan"),
                     "forces_mae": wmean(f, atoms[: len(f)] if len(f) == len(atoms) else None),
                     "stress_mae": float(np.mean(s)) if s else float("nan"),
                     "magmoms_mae": wmean(m, atoms[: len(m)] if len(m) == len(atoms) else None)}
    return out


def table(results: dict, base: dict) -> str:
    """Markdown table: model MAE and baseline MAE per split and quantity (quantities without
    labels in a split, e.g. magmoms in a data set that has none, are left out)."""
    lines = ["| quantity | split | MatRIS-JAX | trivial baseline | ratio |", "|---|---|---:|---:|---:|"]
    for key, (label, scale) in UNITS.items():
        for split in ("val", "test"):
            if split not in results or key not in results[split]:
                continue
            ours, triv = results[split][key] * scale, base[split][key] * scale
            if not np.isfinite(triv):  # the split has no labels of this kind
                continue
            lines.append(f"| {label} | {split} | {ours:.3f} | {triv:.3f} | {triv / max(ours, 1e-12):.1f}x |")
    return "\n".join(lines)


def family_table(split, model: Model, top: int = 10, key: str = "family") -> str:
    """Markdown table of the ``top`` families (frames sharing ``info[key]``) of one split by
    energy MAE, with the composition-model MAE and force MAE beside it: where the error is.
    '' when the frames carry no family or no energy labels."""
    from ..predict import predict_graphs

    frames = [f for f in split.frames if f.info.get(key) is not None and f.energy is not None]
    if not frames:
        return ""
    index = {id(f): i for i, f in enumerate(split.frames)}
    graphs = [split.graphs[index[id(f)]] for f in frames]
    preds = predict_graphs(graphs, model, task="ef", progress=False)
    ref = np.asarray(model.params["reference_energy"], np.float64)
    rows: dict[str, list] = {}
    for f, p in zip(frames, preds, strict=True):
        f_err = np.abs(p["forces"] - f.forces).mean() if f.forces is not None else np.nan
        rows.setdefault(str(f.info[key]), []).append(
            (abs(p["energy"] - f.energy) / f.n_atoms, composition_error(ref, f), f_err))
    ranked = sorted(rows.items(), key=lambda kv: -np.mean([r[0] for r in kv[1]]))[:top]
    lines = [f"| {key} | frames | energy MAE (meV/atom) | composition model | forces MAE (meV/A) |",
             "|---|---:|---:|---:|---:|"]
    for name, errs in ranked:
        e, b, fe = (1000.0 * np.mean(col) for col in zip(*errs))
        lines.append(f"| {name} | {len(errs)} | {e:.0f} | {b:.0f} | {fe:.0f} |")
    return "\n".join(lines)


def plot_curves(metrics_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ep = [r["epoch"] for r in rows]
    axes[0].semilogy(ep, [r["train_loss"] for r in rows], label="train (last step)")
    if "val_loss" in rows[0]:
        axes[0].semilogy(ep, [r["val_loss"] for r in rows], label="val (EMA)")
    axes[0].set_title("loss")
    for ax, key, (label, scale) in [(axes[1], "val_energy_mae", UNITS["energy_mae"]),
                                    (axes[2], "val_forces_mae", UNITS["forces_mae"])]:
        if key in rows[0]:
            ax.semilogy(ep, [r[key] * scale for r in rows])
        ax.set_title(f"validation {label}")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def finish_report(cfg: TrainConfig, model: Model, results: dict, base: dict, out: Path,
                  train_minutes: float, compilations: int, splits: dict | None = None) -> dict:
    path = bundle.save(model, out / "model.npz")
    if cfg.release:
        Path(cfg.release).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(cfg.release).with_suffix(".tmp"))
        Path(cfg.release).with_suffix(".tmp").replace(cfg.release)
    md = table(results, base)
    for name in ("val", "test"):
        part = family_table(splits[name], model) if splits and name in splits else ""
        if part:
            md += f"\n\n{name.capitalize()}-split families with the largest energy error:\n\n{part}"
    (out / "results.md").write_text(md + "\n")
    if (out / "metrics.jsonl").exists():
        plot_curves(out / "metrics.jsonl", out / "learning_curves.png")
    summary = {"results": results, "baselines": base, "train_minutes": train_minutes,
               "train_step_compilations": compilations,
               "num_params": model.num_params, "bundle": str(path), "release": cfg.release}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print(md)
    print(f"bundle: {path}" + (f" (copied to {cfg.release})" if cfg.release else ""))
    return summary
