"""Errors of a model on labelled structures: MAE, RMSE and mean signed error (ME, prediction
minus label: a bias, e.g. unseen compounds predicted too unstable) per quantity, optionally
per group.

    table = matris.evaluate.evaluate_file("test.extxyz", model="bundle.npz", by="split")
    print(matris.evaluate.markdown(table))
    (= matris eval test.extxyz --model bundle.npz --by split)

Labels are read as for training (`matris.data.read_frames`: extended XYZ with REF_* keys or
attached calculator results, or an MPtrj JSON). Units of the errors: energy meV/atom (per-atom
energy of each structure), forces meV/A (per Cartesian component of every atom), stress GPa
(per component of the 3x3 tensor, ASE sign), magnetic moments muB (per atom). A quantity is
scored on the structures that carry its label only; stress also needs a structure with a cell
of its own (see `MatRISCalculator`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .data.frames import EV_PER_A3_IN_GPA, Frame

# quantity -> (unit, factor from the project's units)
UNITS = {"energy": ("meV/atom", 1e3), "forces": ("meV/A", 1e3), "stress": ("GPa", EV_PER_A3_IN_GPA),
         "magmoms": ("muB", 1.0)}
ALL = "all"


def task_for(frames: Sequence[Frame]) -> str:
    """The prediction task that covers every label present ("e" plus f, s, m as needed)."""
    task = "e"
    for letter, name in (("f", "forces"), ("s", "stress"), ("m", "magmoms")):
        if any(getattr(f, name) is not None for f in frames):
            task += letter
    return task


def frame_errors(frame: Frame, result: dict) -> dict[str, np.ndarray]:
    """{quantity: flat array of prediction - label, in the units of UNITS} for one structure."""
    out = {}
    if frame.energy is not None:
        out["energy"] = np.array([(result["energy"] - frame.energy) / frame.n_atoms])
    if frame.forces is not None:
        out["forces"] = (np.asarray(result["forces"]) - frame.forces).ravel()
    if frame.stress is not None and "stress" in result:
        out["stress"] = (np.asarray(result["stress"]) - frame.stress).ravel()
    if frame.magmoms is not None:
        out["magmoms"] = (np.asarray(result["magmoms"]) - frame.magmoms).ravel()
    return {k: v * UNITS[k][1] for k, v in out.items()}


def summarise(errors: Sequence[dict[str, np.ndarray]]) -> dict[str, dict]:
    """{quantity: {"unit", "structures", "values", "mae", "rmse", "me"}} over a list of
    frame_errors (me: mean of prediction - label)."""
    table = {}
    for name, (unit, _) in UNITS.items():
        parts = [e[name] for e in errors if name in e]
        if not parts:
            continue
        v = np.concatenate(parts)
        table[name] = {"unit": unit, "structures": len(parts), "values": int(v.size),
                       "mae": float(np.mean(np.abs(v))), "rmse": float(np.sqrt(np.mean(v * v))),
                       "me": float(np.mean(v))}
    return table


def evaluate_frames(frames: Sequence[Frame], model=None, dtype: str | None = None,
                    batch_size: int = 16, by: str | None = None,
                    progress: bool = False) -> dict[str, dict[str, dict]]:
    """{group: summarise(...)} with group "all" first, then one per value of the frames'
    ``info[by]`` (frames without that key go to "(none)")."""
    from .predict import predict

    if not frames:
        raise ValueError("no structures to evaluate")
    if not any(f.energy is not None or f.forces is not None or f.stress is not None
               or f.magmoms is not None for f in frames):
        raise ValueError("no structure carries a label (energy, forces, stress or magmoms)")
    results = predict([f.atoms for f in frames], model, task_for(frames), dtype, batch_size,
                      progress=progress)
    errors = [frame_errors(f, r) for f, r in zip(frames, results, strict=True)]
    table = {ALL: summarise(errors)}
    if by:
        groups: dict[str, list] = {}
        for f, e in zip(frames, errors, strict=True):
            groups.setdefault(str(f.info.get(by, "(none)")), []).append(e)
        table.update({g: summarise(groups[g]) for g in sorted(groups)})
    return table


def evaluate_file(path: str | os.PathLike, model=None, dtype: str | None = None,
                  batch_size: int = 16, by: str | None = None, index=":",
                  progress: bool = False) -> dict[str, dict[str, dict]]:
    """`evaluate_frames` on the labelled structures of ``path`` (extxyz ``index`` selection;
    an MPtrj JSON is read whole)."""
    from .data.dataset import read_frames

    name = os.fspath(path)
    kwargs = {} if name.endswith((".json", ".json.gz")) else {"index": index}
    return evaluate_frames(read_frames(name, **kwargs), model, dtype, batch_size, by, progress)


def markdown(table: dict[str, dict[str, dict]]) -> str:
    """One Markdown table: group, quantity, unit, structures, values, MAE, RMSE, ME."""
    lines = ["| group | quantity | unit | structures | values | MAE | RMSE | ME (pred - label) |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for group, rows in table.items():
        for name, r in rows.items():
            lines.append(f"| {group} | {name} | {r['unit']} | {r['structures']} | {r['values']} "
                         f"| {r['mae']:.4g} | {r['rmse']:.4g} | {r['me']:.4g} |")
    return "\n".join(lines)
