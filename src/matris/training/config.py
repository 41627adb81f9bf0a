"""Training configuration: frozen dataclasses read from a small YAML file.

Unknown keys are an error that names the key and the section.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """train/val/test: file paths; if val/test are empty, frames are split by ``split_key``
    (info value "train"|"val"|"test") or, without it, by group (``info["family"]``) with
    ``fractions`` and ``seed``.  *_key: label names in the files (None = auto)."""

    train: str = "data/mptrj_like.extxyz.gz"
    val: str = ""
    test: str = ""
    split_key: str = "split"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    max_frames: int = 0  # 0 = all; for quick runs
    energy_key: str | None = None
    forces_key: str | None = None
    stress_key: str | None = None
    magmoms_key: str | None = None


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """A preset name plus field overrides (see matris.MatRISConfig); ``init_from`` a bundle or
    an official checkpoint to fine-tune.  Without a preset the model is the one stored in
    ``init_from`` (fine-tuning) or the ``small`` preset; overrides apply on top."""

    preset: str = ""
    overrides: dict = dataclasses.field(default_factory=dict)
    init_from: str = ""


LOSS_TERMS = ("energy", "forces", "stress", "magmoms")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Spec 7: 5 MAE(E/atom) + 5 L2MAE(F) + 0.1 MAE(stress, GPa) + 0.1 MAE(magmom).
    ``huber_delta`` > 0 replaces every absolute error by a Huber loss with that delta.
    ``forces_mse``: the force term is the mean squared error norm ||dF||^2 (eV^2/A^2, as
    MACE and NequIP train) instead of the L2MAE; it weighs large force errors more
    (``huber_delta`` then applies to the other terms only)."""

    energy: float = 5.0
    forces: float = 5.0
    stress: float = 0.1
    magmoms: float = 0.1
    huber_delta: float = 0.0
    forces_mse: bool = False
    # a second stage: for the last ``late_fraction`` of the steps the weights in ``late``
    # (e.g. {energy: 40}) replace these (MACE's energy-heavy final stage)
    late_fraction: float = 0.0
    late: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        unknown = sorted(set(self.late) - set(LOSS_TERMS))
        if unknown:
            raise ValueError(f"loss.late: unknown term(s) {unknown}; allowed: {list(LOSS_TERMS)}")
        if not 0.0 <= self.late_fraction < 1.0:
            raise ValueError(f"loss.late_fraction must be in [0, 1), got {self.late_fraction}")

    def weights(self, late: bool = False) -> dict[str, float]:
        """{term: weight} of the first stage, or of the late stage."""
        return {k: float(self.late.get(k, getattr(self, k)) if late else getattr(self, k))
                for k in LOSS_TERMS}

    def late_start(self, total_steps: int) -> int:
        """First step of the late stage (total_steps when there is none)."""
        if not self.late or self.late_fraction <= 0:
            return total_steps
        return int(round(total_steps * (1.0 - self.late_fraction)))


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with warm-up + cosine decay, global-norm clipping and an EMA of parameters."""

    learning_rate: float = 3e-4
    final_lr_fraction: float = 0.01
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    epochs: int = 10
    clip_norm: float = 10.0
    ema_decay: float = 0.99


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """Average structures per device per step; budgets come from dataset statistics
    (batch_size x mean size x headroom per level).  lookahead: the packer's first-fit window
    (matris.graph.iterate_batches): fuller batches at the same budgets."""

    batch_size: int = 8
    headroom: float = 1.3
    eval_batch_size: int = 16
    lookahead: int = 32


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 200
    keep: int = 3


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs.  ``devices``: 0 = all local devices.  ``output``: run folder
    (checkpoints, metrics.jsonl, plots, model.npz).  ``release``: extra path to copy the final
    bundle to (empty = none).  ``time_limit_min``: stop cleanly (checkpoint + bundle) after this
    many minutes of training (0 = no limit)."""

    name: str = "default"
    output: str = "runs/default"
    release: str = ""
    seed: int = 0
    devices: int = 0
    eval_every_epochs: int = 1
    time_limit_min: float = 0.0
    data: DataConfig = DataConfig()
    model: ModelSection = ModelSection()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    batch: BatchConfig = BatchConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()


def _build(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    kwargs = {}
    for key, value in data.items():
        default = fields[key].default
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value or {}, f"{where}.{key}")
        elif isinstance(default, tuple) and value is not None:
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    return _build(TrainConfig, data or {}, where)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML training config; ``overrides`` ({"optim.epochs": 2, ...}) win."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such training config")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return from_dict(data, str(path))


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


# Options that change how the model runs, not its parameters: a fine-tuning run may set them
# freely on top of the starting model's config.
# how the model is executed, not what it computes: may change when a run resumes
EXECUTION_FIELDS = ("remat", "remat_save_dots", "scan_blocks", "chunk_rows")
# ... and, with the dtype, when a stored model is fine-tuned
RUNTIME_FIELDS = ("dtype",) + EXECUTION_FIELDS


def model_config(section: ModelSection):
    """The run's MatRISConfig: the preset (default ``small``) with the overrides, or, when
    fine-tuning without a preset, the config stored in ``init_from`` with the overrides."""
    from ..config import get_config

    if section.preset or not section.init_from:
        return get_config(section.preset or "small", **section.overrides)
    from ..bundle import load

    return load(section.init_from).config.replace(**section.overrides)


def config_mismatch(start, run) -> list[str]:
    """Fields (other than RUNTIME_FIELDS) where two MatRISConfigs differ, as 'name: a != b'."""
    a, b = start.to_dict(), run.to_dict()
    return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if k not in RUNTIME_FIELDS and a[k] != b[k]]
