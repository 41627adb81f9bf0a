"""FIRE over many structures at once (numpy) and a log-strain cell parametrisation.

Degrees of freedom of one structure are n + 3 rows of 3 numbers: n atom rows and 3 cell rows,
concatenated over structures with ``owner[r]`` = structure of row r.  FIRE (Bitzek et al.,
PRL 97, 170201, 2006) acts on each structure independently; its parameters default to the
values ASE's FIRE uses, so a batched relaxation follows the single-structure one closely.

Cell parametrisation (rows are lattice vectors): a deformation F = expm(X) maps the reference
cell C0 to C = C0 F^T and reference positions u to r = u F^T; the cell degrees of freedom are
x = s X with s the "cell factor" (default: number of atoms).  With stress sigma (ASE sign,
sigma = dE/d(strain) / V) and external pressure P, dE/dF = V (sigma + P I) F^-T, and the
gradient with respect to X is the adjoint Frechet derivative of expm, L(X^T, dE/dF).
Matrix exponentials use numpy matrix products only (no LAPACK solves), which keeps these 3x3
operations cheap even when BLAS threads compete with JAX for the cores.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class FireParams(NamedTuple):
    """dt: initial step; maxstep: largest displacement norm of one structure per step (A)."""

    dt: float = 0.1
    maxstep: float = 0.2
    dtmax: float = 1.0
    nmin: int = 5
    finc: float = 1.1
    fdec: float = 0.5
    astart: float = 0.1
    fa: float = 0.99


FIRE_DEFAULTS = FireParams()


class FireState(NamedTuple):
    """v [R,3] velocities of all rows; dt, alpha [S] float; n_pos [S] int (steps with P > 0)."""

    v: np.ndarray
    dt: np.ndarray
    alpha: np.ndarray
    n_pos: np.ndarray


def segment_sum(values: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """[S] sums of [R] values per owner."""
    return np.bincount(owner, weights=values, minlength=n)


def fire_step(state: FireState, forces: np.ndarray, owner: np.ndarray,
              p: FireParams = FIRE_DEFAULTS) -> tuple[np.ndarray, FireState]:
    """One FIRE step for every structure.  forces [R,3], owner [R] -> (displacement [R,3], state).

    Per structure: if P = F.v > 0, mix v towards F (weight alpha) and, after nmin such steps,
    grow dt and shrink alpha; otherwise stop (v = 0), halve dt and reset alpha (except at rest,
    on the first step, where nothing changes).  Then
    v += dt F, dx = dt v, with |dx| (whole structure) capped at maxstep.
    """
    n = len(state.dt)
    power = segment_sum(np.sum(forces * state.v, axis=1), owner, n)
    v_norm = np.sqrt(segment_sum(np.sum(state.v**2, axis=1), owner, n))
    f_norm = np.sqrt(segment_sum(np.sum(forces**2, axis=1), owner, n))
    up = power > 0.0
    fresh = v_norm == 0.0  # at rest (first step): nothing to mix or to reset
    a = state.alpha[owner][:, None]
    ratio = (v_norm / np.where(f_norm > 0.0, f_norm, 1.0))[owner][:, None]
    v = np.where(up[owner][:, None], (1.0 - a) * state.v + a * ratio * forces, 0.0)
    grow = up & (state.n_pos > p.nmin)
    down = ~up & ~fresh
    dt = np.where(grow, np.minimum(state.dt * p.finc, p.dtmax),
                  np.where(down, state.dt * p.fdec, state.dt))
    alpha = np.where(grow, state.alpha * p.fa, np.where(down, p.astart, state.alpha))
    n_pos = np.where(up, state.n_pos + 1, np.where(down, 0, state.n_pos))
    v = v + dt[owner][:, None] * forces
    dx = dt[owner][:, None] * v
    dx_norm = np.sqrt(segment_sum(np.sum(dx**2, axis=1), owner, n))
    scale = np.minimum(1.0, p.maxstep / np.where(dx_norm > 0.0, dx_norm, 1.0))
    return dx * scale[owner][:, None], FireState(v, dt, alpha, n_pos)


def expm(a: np.ndarray, order: int = 12) -> np.ndarray:
    """Matrix exponential of a small square matrix [k,k]: scaling and squaring around a Taylor
    series (the scaled matrix has norm <= 1/4, so the truncation error is below 1e-18)."""
    a = np.asarray(a, np.float64)
    norm = np.abs(a).sum(axis=1).max()
    squarings = max(0, int(np.ceil(np.log2(norm / 0.25)))) if norm > 0.25 else 0
    b = a / 2.0**squarings
    term = result = np.eye(len(a))
    for k in range(1, order + 1):
        term = term @ b / k
        result = result + term
    for _ in range(squarings):
        result = result @ result
    return result


def expm_frechet(a: np.ndarray, e: np.ndarray) -> np.ndarray:
    """[k,k] Frechet derivative L(a, e) of expm at a in direction e (linear in e): the upper
    right block of expm([[a, e], [0, a]])."""
    scale = np.abs(e).max()
    if scale == 0.0:
        return np.zeros_like(e, dtype=np.float64)
    k = len(a)
    block = np.zeros((2 * k, 2 * k))
    block[:k, :k] = block[k:, k:] = a
    block[:k, k:] = e / scale
    return expm(block)[:k, k:] * scale


def deformation(x: np.ndarray, factor: float) -> np.ndarray:
    """[3,3] F = expm(x / factor) from cell degrees of freedom x [3,3]."""
    return expm(np.asarray(x, np.float64) / factor)


def atom_dof_forces(forces: np.ndarray, F: np.ndarray) -> np.ndarray:
    """[n,3] forces on reference positions u (r = u F^T): -dE/du = forces @ F."""
    return forces @ F


def cell_dof_forces(x: np.ndarray, factor: float, stress: np.ndarray, volume: float,
                    pressure: float = 0.0, mask: np.ndarray | None = None) -> np.ndarray:
    """[3,3] -dH/dx for H = E + P V, stress [3,3] eV/A^3 (ASE sign), pressure eV/A^3.
    mask [3,3] bool: only those components of the cell relax (the rest get zero force, as
    in ASE's cell filters, which zero the virial outside the mask)."""
    X = np.asarray(x, np.float64) / factor
    F_inv = expm(-X)
    load = stress + pressure * np.eye(3)
    if mask is not None:
        load = load * mask
    dH_dF = volume * load @ F_inv.T
    forces = -expm_frechet(X.T, dH_dF) / factor
    return forces if mask is None else forces * mask


def row_norm_max(rows: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """[S] largest row norm of each structure (the fmax of ASE's convergence test)."""
    out = np.zeros(n)
    np.maximum.at(out, owner, np.linalg.norm(rows, axis=1))
    return out
