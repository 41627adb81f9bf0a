"""Energy, forces, stress and magnetic moments from one forward and one gradient call."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .config import MatRISConfig
from .graph.types import GraphBatch
from .nn.geometry import apply_strain, cell_volumes
from .nn.model import MatRIS
from .nn.ops import segment_sum

TASKS = ("e", "em", "ef", "efm", "efs", "efsm")
EV_PER_A3_TO_GPA = 160.21766208


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return task


def make_predictor(config: MatRISConfig, task: str = "efsm") -> Callable[[Any, GraphBatch], dict]:
    """A pure function (params, batch) -> outputs (not jitted; wrap it in jax.jit).

    Outputs (padding rows are exactly zero):
      energy [G] total eV; energy_per_atom [G]; energies [N] per-atom eV;
      forces [N,3] eV/A (task with "f"); stress [G,3,3] eV/A^3, ASE sign (task with "s");
      magmoms [N] muB (task with "m").
    """
    check_task(task)
    module = MatRIS(config)
    want_f, want_s = "f" in task, "s" in task

    def predict(params, batch: GraphBatch) -> dict:
        graph_mask, node_mask = batch.graph_mask, batch.node_mask
        num_graphs = graph_mask.shape[0]
        dt = jnp.dtype(config.dtype)
        positions = batch.positions.astype(dt)
        strain = jnp.zeros((num_graphs, 3, 3), dt)

        def total_energy(pos, eps):
            pos, cell = apply_strain(pos, batch.cell.astype(dt), eps, batch.node_graph)
            out = module.apply({"params": params}, batch, pos, cell)
            return jnp.sum(out["energies"]), out

        if want_f or want_s:
            grad_fn = jax.grad(total_energy, argnums=(0, 1), has_aux=True)
            (d_pos, d_eps), out = grad_fn(positions, strain)
        else:
            _, out = total_energy(positions, strain)
        energy = segment_sum(out["energies"], batch.node_graph, num_graphs)
        n_atoms = jnp.maximum(batch.graphs.n_node, 1).astype(dt)
        result = {
            "energy": jnp.where(graph_mask, energy, 0.0),
            "energy_per_atom": jnp.where(graph_mask, energy / n_atoms, 0.0),
            "energies": out["energies"],
        }
        if want_f:
            result["forces"] = jnp.where(node_mask[:, None], -d_pos, 0.0)
        if want_s:
            volume = cell_volumes(batch.cell.astype(dt), graph_mask)
            stress = d_eps / volume[:, None, None]
            result["stress"] = jnp.where(graph_mask[:, None, None], stress, 0.0)
        if "m" in task:
            result["magmoms"] = out["magmoms"]
        return result

    return predict


@functools.lru_cache(maxsize=32)
def jitted_predictor(config: MatRISConfig, task: str = "efsm") -> Callable[[Any, GraphBatch], dict]:
    """jax.jit(make_predictor(config, task)), shared by every caller with the same config, so
    equal shapes never compile twice in one process."""
    return jax.jit(make_predictor(config, task))


def init_params(config: MatRISConfig, batch: GraphBatch, seed: int = 0):
    """Fresh parameters for ``config`` (PyTorch-style initialisation), traced on ``batch``."""
    dt = jnp.dtype(config.dtype)
    variables = MatRIS(config).init(
        jax.random.PRNGKey(seed), batch, batch.positions.astype(dt), batch.cell.astype(dt)
    )
    return variables["params"]


def count_params(params) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


@dataclasses.dataclass(frozen=True)
class Model:
    """A ready model: configuration plus parameters (what ``matris.load`` returns)."""

    config: MatRISConfig
    params: Any
    metadata: dict = dataclasses.field(default_factory=dict)

    @property
    def num_params(self) -> int:
        return count_params(self.params)

    @property
    def trained_elements(self) -> frozenset[int] | None:
        """Atomic numbers of the training data (bundle metadata "elements"), or None when
        the bundle does not say (official checkpoints, older bundles)."""
        elements = self.metadata.get("elements")
        return None if elements is None else frozenset(int(z) for z in elements)

    def predictor(self, task: str = "efsm") -> Callable[[Any, GraphBatch], dict]:
        """The jitted predictor (params, batch) -> outputs; cached per (config, task)."""
        return jitted_predictor(self.config, task)

    def astype(self, dtype: str) -> Model:
        """The same model computing in ``dtype`` ("float32" | "float64")."""
        cfg = self.config.replace(dtype=dtype)
        params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.dtype(dtype)), self.params)
        return dataclasses.replace(self, config=cfg, params=params)
