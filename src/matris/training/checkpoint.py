"""Orbax checkpoints of the train state plus a JSON progress record.

Orbax writes each step into a temporary folder and renames it when complete, so a run killed
at any moment leaves only whole checkpoints.  The progress record holds the position in the
data order (epoch, step within epoch), the best validation loss and the model config, so a
resumed run continues exactly where the last checkpoint stopped and refuses a checkpoint of
another model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from ..config import MatRISConfig
from .config import EXECUTION_FIELDS


class Checkpoints:
    """keep the newest ``keep`` checkpoints under ``folder``."""

    def __init__(self, folder: str | Path, keep: int = 3):
        self.folder = Path(folder).resolve()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False,
                                               create=True)
        self.manager = ocp.CheckpointManager(self.folder, options=options)

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, progress: dict) -> None:
        """Write step ``step`` (a no-op if that step is already saved)."""
        if step in self.manager.all_steps():
            return
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  progress=ocp.args.JsonSave(progress))
        self.manager.save(step, args=args, force=True)
        self.manager.wait_until_finished()

    def restore(self, state_like: Any, model_config: dict) -> tuple[Any, dict]:
        """(state, progress) of the latest checkpoint; errors name the folder and problem."""
        step = self.latest()
        if step is None:
            raise FileNotFoundError(f"{self.folder}: no checkpoint to resume from")
        try:
            progress = self.manager.restore(step, args=ocp.args.Composite(
                progress=ocp.args.JsonRestore()))["progress"]
        except Exception as exc:
            raise ValueError(f"{self.folder}/{step}: corrupt checkpoint ({exc})") from exc
        diff = _diff(progress.get("model_config") or {}, model_config)
        if diff:
            raise ValueError(
                f"{self.folder}/{step}: checkpoint was written for another model config "
                f"({diff}); use a new output folder or the matching config")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state_like)
        try:
            state = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract)))["state"]
        except Exception as exc:
            raise ValueError(f"{self.folder}/{step}: corrupt or mismatched checkpoint "
                             f"({type(exc).__name__}: {exc})") from exc
        return state, progress

    def close(self) -> None:
        self.manager.close()


def _diff(old: dict, new: dict) -> str:
    """'' when the checkpoint's model config (``old``) and the run's agree, else the first
    differences.  A field the checkpoint predates counts as its default value."""
    old = {**MatRISConfig().to_dict(), **old}
    keys = sorted(k for k in set(old) | set(new)
                  if k not in EXECUTION_FIELDS and old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} in checkpoint vs {new.get(k)!r} now" for k in keys[:4])


def dumps(data: dict) -> str:
    return json.dumps(data, default=float)
