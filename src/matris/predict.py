"""Batched prediction: many structures packed into padded batches of one compiled shape.

    results = matris.predict(structures, model="bundle.npz", task="efsm")
    results[k]["energy"], results[k]["forces"], ...

All graphs are built (and validated) before any model call; the batches share one set of
bucketed budgets, so a whole run compiles once.  Batching never changes a result.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import ase
import ase.io
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from tqdm.auto import tqdm

from .calculator import (
    compiled_predictor,
    device_params,
    resolve_model,
    structure_results,
    warn_unseen_elements,
)
from .data.extxyz import read_structures
from .graph import Budgets, StructureGraph, as_atoms, budgets_for, graph_for, iterate_batches
from .graph import pack as pack_graphs
from .graph.batch import graph_sizes
from .potential import Model

DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_ATOMS = 2048  # atoms per batch, so a batch of large cells stays in memory


def build_graphs(atoms_list: Sequence[ase.Atoms], model: Model,
                 labels: Sequence[str] | None = None) -> list[StructureGraph]:
    """Validated graphs at the model's cutoffs; errors name the structure."""
    cfg = model.config
    labels = labels or [f"structure {k}" for k in range(len(atoms_list))]
    graphs = [graph_for(a, cfg, label) for a, label in zip(atoms_list, labels, strict=True)]
    warn_unseen_elements(model, [(label, a.numbers) for a, label in zip(atoms_list, labels)])
    return graphs


def inference_budgets(graphs: Sequence[StructureGraph], batch_size: int = DEFAULT_BATCH_SIZE,
                      max_atoms: int = DEFAULT_MAX_ATOMS) -> Budgets:
    """One set of bucketed budgets for batches of about `batch_size` structures.

    k = min(batch_size, len(graphs), max_atoms // mean atoms) structures; each level gets
    max(k * mean, largest single structure), then `budgets_for` adds the padding row and buckets.
    """
    sizes = graph_sizes(graphs)
    mean = sizes.mean(axis=0)
    k = max(1, min(batch_size, len(sizes), int(max_atoms // max(mean[0], 1.0))))
    need = np.maximum(np.ceil(mean * k), sizes.max(axis=0)).astype(np.int64)
    return budgets_for(need[None, :], n_graphs=k)


def predict_graphs(graphs: Sequence[StructureGraph], model: Model, task: str = "efsm",
                   budgets: Budgets | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                   progress: bool = True) -> list[dict[str, Any]]:
    """Per-structure result dicts (see `structure_results`) for prebuilt graphs."""
    if not graphs:
        return []
    holder = compiled_predictor(model.config, task)
    params = device_params(model)
    budgets = budgets or inference_budgets(graphs, batch_size)
    results: list[dict[str, Any] | None] = [None] * len(graphs)
    with tqdm(total=len(graphs), disable=not progress, unit="structure",
              desc="matris predict") as bar:
        for batch_ids in iterate_batches(graphs, budgets):
            chosen = [graphs[s] for s in batch_ids]
            batch, _ = pack_graphs(chosen, budgets, dtype=holder.dtype)
            out = holder(params, batch)
            start = 0
            for g, (s, graph) in enumerate(zip(batch_ids, chosen, strict=True)):
                rows = slice(start, start + graph.n_atoms)
                results[s] = structure_results(out, g, rows, graph.own_cell)
                start += graph.n_atoms
            bar.update(len(batch_ids))
    return results  # type: ignore[return-value]


def predict(structures: Iterable, model: Model | str | os.PathLike | None = None,
            task: str = "efsm", dtype: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
            budgets: Budgets | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Predict many structures at once (packed into padded batches).

    structures: ase.Atoms or pymatgen structures.  model: as for `MatRISCalculator`.
    Returns one dict per structure, in order: energy, free_energy, energy_per_atom (float, eV),
    energies [n], forces [n,3] (task with "f"), stress [3,3] eV/A^3 ASE sign (task with "s",
    structures with a non-singular cell of their own, see `MatRISCalculator`), magmoms [n]
    (task with "m").
    Every structure is validated before the first model call (ValueError naming it).
    """
    model = resolve_model(model, dtype)
    atoms_list = [as_atoms(s) for s in structures]
    graphs = build_graphs(atoms_list, model)
    return predict_graphs(graphs, model, task, budgets, batch_size, progress)


def attach_results(atoms: ase.Atoms, result: dict[str, Any]) -> ase.Atoms:
    """A copy of `atoms` carrying `result` as a SinglePointCalculator (what extxyz writes)."""
    out = atoms.copy()
    keys = ("energy", "free_energy", "energies", "forces", "stress", "magmoms")
    out.calc = SinglePointCalculator(out, **{k: result[k] for k in keys if k in result})
    return out


def predict_file(path_in, path_out, model=None, task: str = "efsm", dtype: str | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, index: str = ":",
                 progress: bool = True) -> int:
    """Read structures (any ase format), predict, write extended XYZ with the predictions as
    calculator results (energy, forces, stress, magmoms, per-atom energies).  Returns count."""
    path_in = os.fspath(path_in)
    atoms_list = read_structures(path_in, index)
    model = resolve_model(model, dtype)
    labels = [f"{path_in}:{k}" for k in range(len(atoms_list))]
    graphs = build_graphs(atoms_list, model, labels)
    results = predict_graphs(graphs, model, task, None, batch_size, progress)
    frames = [attach_results(a, r) for a, r in zip(atoms_list, results, strict=True)]
    ase.io.write(os.fspath(path_out), frames, format="extxyz")
    return len(frames)
