"""A small random MatRIS model for the calculator, prediction, relaxation and MD tests.

One layer, 16 features, r_c = 4.5 A, r_3 = 3.0 A: cheap to compile on two CPU cores.  The
energy head is scaled up so forces are of realistic size (about 1 eV/A for a 0.05 A rattle),
and the elemental reference energies are non-zero, so tests see a non-trivial landscape.
"""

from __future__ import annotations

import jax
import numpy as np
from helpers import setup

from matris import Model

SMALL = dict(num_layers=1, atom_dim=16, bond_dim=16, angle_dim=16, energy_hidden=(16,),
             magmom_hidden=(16,), cutoff=4.5, three_body_cutoff=3.0)


def stiffen(params, factor: float):
    """Scale the last energy-head layer by `factor` and set reference energies -0.1 Z eV."""
    params = jax.tree_util.tree_map(lambda x: x, params)  # shallow copy of the nested dicts
    head = dict(params["energy_head"])
    last = sorted(head)[-1]
    head[last] = {k: v * factor for k, v in head[last].items()}
    ref = -0.1 * np.arange(1, params["reference_energy"].shape[0] + 1)
    return {**params, "energy_head": head,
            "reference_energy": np.asarray(ref, params["reference_energy"].dtype)}


def small_model(smooth: bool = True, dtype: str = "float64", seed: int = 0,
                stiffness: float = 30.0) -> Model:
    cfg, params, _ = setup("tiny", dtype, seed, smooth=smooth, **SMALL)
    return Model(cfg, stiffen(params, stiffness))
