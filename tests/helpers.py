"""Small shared helpers for the model tests (structures, random parameters, predictions)."""

from __future__ import annotations

import jax
import numpy as np
from ase import Atoms
from ase.build import bulk

from matris import get_config, init_params, make_predictor
from matris.graph import Budgets, graph_for, pack

BUDGET = Budgets(atoms=72, edges=6144, bonds=3072, angles=16384, graphs=5)


def perturb(params, seed: int = 0, scale: float = 0.1):
    """Add seeded relative Gaussian noise to every parameter (gammas, norms included)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    noisy = [x + scale * (np.abs(x).mean() + 1e-2) * jax.random.normal(k, x.shape, x.dtype)
             for x, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, noisy)


def structures() -> dict[str, Atoms]:
    """Small, diverse test structures (rattled so no symmetry hides an error)."""
    fecr = bulk("Fe", "bcc", a=2.87, cubic=True) * (2, 2, 1)
    fecr.numbers[[1, 4]] = 24
    mgo = bulk("MgO", "rocksalt", a=4.21)
    tric = Atoms("SiO2", cell=[[3.1, 0.2, 0.1], [0.4, 3.3, 0.2], [0.3, 0.5, 3.6]],
                 scaled_positions=[[0, 0, 0], [0.3, 0.25, 0.2], [0.6, 0.7, 0.55]], pbc=True)
    tiny = Atoms("Cu", cell=[[2.2, 0, 0], [0, 2.3, 0], [0.3, 0, 2.4]], pbc=True)
    mol = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    out = {"fecr": fecr, "mgo": mgo, "triclinic": tric, "self_image": tiny, "molecule": mol}
    for i, atoms in enumerate(out.values()):
        atoms.rattle(0.05, seed=i)
    return out


def setup(preset: str = "tiny", dtype: str = "float64", seed: int = 0, **overrides):
    """(config, perturbed params, jitted predictor) for a preset."""
    cfg = get_config(preset, dtype=dtype, **overrides)
    graph = graph_for(bulk("Si", "diamond", a=5.43), cfg)
    batch, _ = pack([graph], BUDGET)
    params = perturb(init_params(cfg, batch, seed), seed)
    return cfg, params, jax.jit(make_predictor(cfg, "efsm"))


def predict(cfg, params, fn, atoms_list, budgets: Budgets = BUDGET) -> dict:
    """Predictions for a list of structures in one padded batch, as numpy."""
    graphs = [graph_for(a, cfg) for a in atoms_list]
    batch, _ = pack(graphs, budgets, dtype=np.dtype(cfg.dtype))
    return {k: np.asarray(v) for k, v in fn(params, batch).items()}, batch
