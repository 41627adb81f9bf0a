"""Training data: read frames, split them, build graphs, pack fixed-shape step inputs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from ..data import Dataset, Frame, read_frames
from ..graph import Budgets, StructureGraph, graph_sizes, iterate_batches, pack, training_budgets
from ..graph.types import GraphBatch, Targets
from .config import DataConfig
from .step import stack

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class Split:
    """Frames of one split, their dataset (statistics) and graphs (same order)."""

    frames: list[Frame]
    dataset: Dataset
    graphs: list[StructureGraph]


def _read(path: str, cfg: DataConfig) -> list[Frame]:
    keys = dict(energy_key=cfg.energy_key, forces_key=cfg.forces_key, stress_key=cfg.stress_key,
                magmoms_key=cfg.magmoms_key)
    frames = read_frames(path, **{k: v for k, v in keys.items() if v})
    return frames[: cfg.max_frames] if cfg.max_frames > 0 else frames


def load_splits(cfg: DataConfig, cutoff: float, three_body_cutoff: float, seed: int,
                symmetric_angles: bool = False) -> dict[str, Split]:
    """train / val / test splits with graphs (built as `matris.graph.build_graph` with these
    settings).  Frames without an energy are an error."""
    frames = _read(cfg.train, cfg)
    if cfg.val or cfg.test:
        parts = {"train": frames,
                 "val": _read(cfg.val, cfg) if cfg.val else [],
                 "test": _read(cfg.test, cfg) if cfg.test else []}
    elif frames and all(cfg.split_key in f.info for f in frames):
        parts = {s: [f for f in frames if f.info[cfg.split_key] == s] for s in SPLITS}
    else:
        idx = Dataset(frames).split_indices(cfg.fractions, seed)
        parts = {s: [frames[i] for i in ix] for s, ix in zip(SPLITS, idx)}
    if not parts["train"]:
        raise ValueError(f"{cfg.train}: no training frames")
    out = {}
    for name, part in parts.items():
        missing = [f.source for f in part if f.energy is None]
        if missing:
            raise ValueError(f"{missing[0]}: frame has no energy label ({len(missing)} such "
                             f"frames in the {name} split)")
        ds = Dataset(part, cutoff, three_body_cutoff, symmetric_angles=symmetric_angles)
        out[name] = Split(part, ds, ds.graphs())
    return out


def step_inputs(split: Split, budgets: Budgets, k: int, rng: np.random.Generator | None,
                dtype, lookahead: int = 0) -> Iterator[tuple[GraphBatch, Targets, int]]:
    """Yield (stacked batches, stacked targets, structures) per step: K sub-batches each.

    The packer fills sub-batches in the order given by ``rng`` (None = file order), first fit
    over a window of ``lookahead`` structures (0 = plain greedy; matris.graph.iterate_batches);
    a last incomplete group is completed with empty (all-padding) sub-batches.
    """
    groups = list(iterate_batches(split.graphs, budgets, rng, lookahead))
    for start in range(0, len(groups), k):
        chunk = groups[start : start + k]
        items = [_pack(split, ix, budgets, dtype) for ix in chunk]
        items += [_pack(split, [], budgets, dtype)] * (k - len(chunk))
        batches, targets = stack(items)
        yield batches, targets, sum(len(ix) for ix in chunk)


def fitting_budgets(splits: dict[str, Split], batch_size: int, headroom: float) -> Budgets:
    """Training budgets from the train statistics, raised so every structure of every split
    fits alone (one compiled shape for the whole run)."""
    base = training_budgets(splits["train"].dataset.statistics(), batch_size, headroom)
    largest = np.max([graph_sizes(s.graphs).max(axis=0) for s in splits.values() if s.graphs],
                     axis=0)
    return Budgets(*[max(int(b), int(m) + 1) for b, m in zip(base[:4], largest)], base.graphs)


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The shuffling RNG of one epoch (a resumed run replays the same order)."""
    return np.random.default_rng([seed, epoch])


def count_steps(split: Split, budgets: Budgets, k: int, seed: int, epochs: int,
                lookahead: int = 0) -> list[int]:
    """Steps of each epoch, packed exactly as training will pack them (host only, cheap): the
    learning-rate schedule then ends at the last step instead of part-way down."""
    counts = []
    for epoch in range(epochs):
        n = sum(1 for _ in iterate_batches(split.graphs, budgets, epoch_rng(seed, epoch), lookahead))
        counts.append(-(-n // k))
    return counts


def _pack(split: Split, indices: Sequence[int], budgets: Budgets, dtype):
    graphs = [split.graphs[i] for i in indices]
    frames = [split.frames[i] for i in indices]
    return pack(graphs, budgets, targets=frames, dtype=dtype,
                symmetric_angles=split.dataset.symmetric_angles)
