"""A small random MatRIS model for the calculator, prediction, relaxation and MD tests.

One layer, 16 features, r_c = 4.5 A, r_3 = 3.0 A: cheap to compile on two CPU cores.  The
energy head is scaled up so forces are of realistic size (about 0.2 eV/A for a 0.05 A rattle),
and the elemental reference energies are non-zero (-0.1 Z eV).  Models are cached per process,
so the test files of one pytest run share one initialisation (and compiled executables).
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from ase import Atoms
from helpers import perturb

from matris import Model, get_config, init_params
from matris.graph import budgets_for, build_graph, pack

SMALL = dict(num_layers=1, atom_dim=16, bond_dim=16, angle_dim=16, energy_hidden=(16,),
             magmom_hidden=(16,), cutoff=4.5, three_body_cutoff=3.0)


def stiffen(params, factor: float, seed: int = 0):
    """Redraw the last energy-head layer (normal, std factor / sqrt(fan_in), whatever the
    initialiser does to it) and set the reference energies to -0.1 Z eV."""
    head = dict(params["energy_head"])
    last = sorted(head)[-1]
    kernel = np.asarray(head[last]["kernel"])
    rng = np.random.default_rng(seed)
    head[last] = {"kernel": rng.normal(size=kernel.shape) * factor / np.sqrt(kernel.shape[0]),
                  "bias": np.zeros_like(np.asarray(head[last]["bias"]))}
    head[last] = {k: v.astype(kernel.dtype) for k, v in head[last].items()}
    ref = -0.1 * np.arange(1, params["reference_energy"].shape[0] + 1)
    return {**params, "energy_head": head,
            "reference_energy": np.asarray(ref, params["reference_energy"].dtype)}


@functools.lru_cache(maxsize=8)
def small_model(smooth: bool = True, dtype: str = "float64", seed: int = 0,
                stiffness: float = 10.0) -> Model:
    """Perturbed random parameters (initialised under jit: faster than eager on 2 cores)."""
    cfg = get_config("tiny", dtype=dtype, smooth=smooth, **SMALL)
    graph = build_graph(Atoms("H", positions=[[0.0, 0.0, 0.0]]), cfg.cutoff,
                        cfg.three_body_cutoff)
    batch, _ = pack([graph], budgets_for([graph]))
    params = jax.jit(lambda b: init_params(cfg, b, seed))(batch)
    return Model(cfg, stiffen(perturb(params, seed), stiffness, seed))
