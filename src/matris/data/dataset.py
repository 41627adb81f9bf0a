"""In-memory dataset: frames, cached graphs, grouped splits and statistics for budgets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..graph.neighbors import MAX_Z, StructureGraph, build_graph
from .extxyz import read_extxyz
from .frames import Frame
from .mptrj import read_mptrj


def read_frames(path, **kwargs) -> list[Frame]:
    """Frames from an MPtrj JSON (.json, .json.gz) or any extended-XYZ file (other names)."""
    name = os.fspath(path)
    if name.endswith((".json", ".json.gz")):
        return read_mptrj(name, **kwargs)
    return read_extxyz(name, **kwargs)


@dataclass(frozen=True)
class DatasetStats:
    """Per-structure size statistics (mean, max) and label statistics.

    reference_energies [94]: eV/atom per element Z at index Z-1 (0 for absent elements),
    least squares of per-atom energies on composition fractions.
    """

    n_structures: int
    atoms_mean: float
    atoms_max: int
    edges_mean: float
    edges_max: int
    bonds_mean: float
    bonds_max: int
    angles_mean: float
    angles_max: int
    force_rms: float
    energy_per_atom_mean: float
    reference_energies: np.ndarray
    cutoff: float
    three_body_cutoff: float


def composition_fractions(frames: Sequence[Frame]) -> np.ndarray:
    """[S,94] C[s, Z-1] = n_{s,Z} / N_s."""
    counts = np.zeros((len(frames), MAX_Z))
    for s, frame in enumerate(frames):
        counts[s] = np.bincount(frame.atoms.numbers - 1, minlength=MAX_Z)[:MAX_Z]
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)


def fit_reference_energies(frames: Sequence[Frame],
                           offsets: Sequence[float] | None = None) -> np.ndarray:
    """[94] w = lstsq(C, e) on frames with an energy (e = E / N); absent elements get 0.

    offsets: a total energy per frame (aligned with ``frames``) to subtract from its label
    first, e.g. a model's predictions: then w is the per-element fit of what it misses."""
    offsets = [0.0] * len(frames) if offsets is None else list(offsets)
    if len(offsets) != len(frames):
        raise ValueError(f"{len(offsets)} offsets for {len(frames)} frames")
    pairs = [(f, o) for f, o in zip(frames, offsets) if f.energy is not None]
    labelled = [f for f, _ in pairs]
    if not labelled:
        return np.zeros(MAX_Z)
    comp = composition_fractions(labelled)
    per_atom = np.array([(f.energy - o) / f.n_atoms for f, o in pairs])
    present = np.any(comp > 0, axis=0)
    weights = np.zeros(MAX_Z)
    weights[present] = np.linalg.lstsq(comp[:, present], per_atom, rcond=None)[0]
    return weights


class Dataset:
    """Frames plus StructureGraphs built on first use and cached per (cutoff, r3).

    Graphs of a frame are shared between a dataset and the subsets made from it.
    """

    def __init__(self, frames: Sequence[Frame], cutoff: float = 6.0,
                 three_body_cutoff: float = 4.0, _cache: dict | None = None,
                 _ids: Sequence[int] | None = None, symmetric_angles: bool = False):
        self.frames = list(frames)
        self.cutoff, self.three_body_cutoff = float(cutoff), float(three_body_cutoff)
        self.symmetric_angles = bool(symmetric_angles)
        self._cache = {} if _cache is None else _cache
        self._ids = list(range(len(self.frames))) if _ids is None else list(_ids)

    @classmethod
    def from_files(cls, paths, cutoff: float = 6.0, three_body_cutoff: float = 4.0,
                   **read_kwargs) -> "Dataset":
        """Dataset of all frames of one path or several (see `read_frames`)."""
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        frames = [f for p in paths for f in read_frames(p, **read_kwargs)]
        return cls(frames, cutoff, three_body_cutoff)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Frame:
        return self.frames[i]

    def graph(self, i: int, cutoff: float | None = None,
              three_body_cutoff: float | None = None) -> StructureGraph:
        """Graph of frame i (built once per cutoff pair, labelled by the frame's source)."""
        rc = self.cutoff if cutoff is None else float(cutoff)
        r3 = self.three_body_cutoff if three_body_cutoff is None else float(three_body_cutoff)
        key = (self._ids[i], rc, r3, self.symmetric_angles)
        if key not in self._cache:
            frame = self.frames[i]
            self._cache[key] = build_graph(frame.atoms, rc, r3, frame.source,
                                           self.symmetric_angles)
        return self._cache[key]

    def graphs(self, cutoff: float | None = None,
               three_body_cutoff: float | None = None) -> list[StructureGraph]:
        return [self.graph(i, cutoff, three_body_cutoff) for i in range(len(self))]

    def subset(self, indices: Sequence[int]) -> "Dataset":
        """Dataset of the given frames, sharing this one's graph cache."""
        indices = [int(i) for i in indices]
        return Dataset([self.frames[i] for i in indices], self.cutoff, self.three_body_cutoff,
                       self._cache, [self._ids[i] for i in indices], self.symmetric_angles)

    def groups(self) -> np.ndarray:
        """[S] int group id: frames with equal info["family"] share one, others are alone."""
        keys = [("family", f.info["family"]) if "family" in f.info else ("frame", i)
                for i, f in enumerate(self.frames)]
        lookup = {}
        return np.array([lookup.setdefault(k, len(lookup)) for k in keys], np.int64)

    def split_indices(self, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> list[np.ndarray]:
        """Seeded split of frame indices by group; each group goes to exactly one part.

        Groups are shuffled and dealt in order; a group joins the part whose cumulative
        fraction range contains the group's mid-point (in frames).
        """
        fractions = np.asarray(fractions, np.float64)
        if np.any(fractions < 0) or fractions.sum() <= 0:
            raise ValueError(f"bad split fractions {fractions.tolist()}")
        groups = self.groups()
        n_groups = int(groups.max()) + 1 if len(groups) else 0
        sizes = np.bincount(groups, minlength=n_groups)
        order = np.random.default_rng(seed).permutation(n_groups)
        mid = (np.cumsum(sizes[order]) - 0.5 * sizes[order]) / max(len(groups), 1)
        bounds = np.cumsum(fractions / fractions.sum())
        part_of_group = np.empty(n_groups, np.int64)
        part_of_group[order] = np.minimum(np.searchsorted(bounds, mid), len(fractions) - 1)
        part = part_of_group[groups]
        return [np.nonzero(part == k)[0] for k in range(len(fractions))]

    def split(self, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> list["Dataset"]:
        """Datasets for `split_indices(fractions, seed)` (e.g. train, val, test)."""
        return [self.subset(idx) for idx in self.split_indices(fractions, seed)]

    def statistics(self, cutoff: float | None = None,
                   three_body_cutoff: float | None = None) -> DatasetStats:
        """Sizes of the graphs (mean, max), force RMS, mean E/N and reference energies."""
        if len(self) == 0:
            raise ValueError("statistics of an empty dataset")
        sizes = np.array([g.sizes for g in self.graphs(cutoff, three_body_cutoff)], np.float64)
        forces = [f.forces.reshape(-1) for f in self.frames if f.forces is not None]
        all_forces = np.concatenate(forces) if forces else np.zeros(0)
        per_atom = [f.energy / f.n_atoms for f in self.frames if f.energy is not None]
        mean, top = sizes.mean(axis=0), sizes.max(axis=0).astype(int)
        return DatasetStats(
            n_structures=len(self),
            atoms_mean=float(mean[0]), atoms_max=int(top[0]),
            edges_mean=float(mean[1]), edges_max=int(top[1]),
            bonds_mean=float(mean[2]), bonds_max=int(top[2]),
            angles_mean=float(mean[3]), angles_max=int(top[3]),
            force_rms=float(np.sqrt(np.mean(all_forces**2))) if len(all_forces) else 0.0,
            energy_per_atom_mean=float(np.mean(per_atom)) if per_atom else 0.0,
            reference_energies=fit_reference_energies(self.frames),
            cutoff=self.cutoff if cutoff is None else float(cutoff),
            three_body_cutoff=(self.three_body_cutoff if three_body_cutoff is None
                               else float(three_body_cutoff)))
