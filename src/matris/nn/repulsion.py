"""Core repulsion: the ZBL screened nuclear pair potential at very short range (optional).

A network trained on near-equilibrium and thermal frames has never seen two atoms at half a
bond length, and nothing stops it from predicting a deep hole there: the shipped model put a
Fe-Fe dimer at 0.6 A 0.4 eV *below* its 2.5 A energy.  A relaxation from a bad guess or a hot
MD run that pushes two atoms together then falls in.  With ``MatRISConfig.core_repulsion = f``
the energy gains, for every pair closer than f times the sum of the two covalent radii,

    E_ij = V_ZBL(r) * u_p(r / (f (R_i + R_j))),

V_ZBL(r) = k Z_i Z_j / r * phi(r / a), a = 0.46850 A / (Z_i^0.23 + Z_j^0.23), phi the
universal four-exponential screening function of Ziegler, Biersack and Littmark (1985),
k = e^2 / (4 pi eps0) = 14.399645 eV A, R the covalent radii of ``ase.data``, and u_p the
polynomial cutoff envelope (p = 8): smooth (C^2) at the switch-off radius and near 1 well
inside it.  The term has no parameters.  With f = 0.5 it is exactly zero on every frame of
the shipped training set (whose closest pair is 0.58 of its covalent-radius sum), so a model
trained without it predicts the same energies there with it (forces to float32 rounding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from ase.data import covalent_radii

from .ops import polynomial_envelope, segment_sum

COULOMB_EV_A = 14.399645  # e^2 / (4 pi eps0) in eV A
ZBL_LENGTH_A = 0.46850  # screening length prefactor, A
ZBL_COEFFS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)
ZBL_ENVELOPE = 8  # p of the switch-off envelope


def zbl_energy(r: jax.Array, z_i: jax.Array, z_j: jax.Array) -> jax.Array:
    """V_ZBL in eV for distances r [...] (A, > 0) and atomic numbers z_i, z_j [...]."""
    z_i, z_j = z_i.astype(r.dtype), z_j.astype(r.dtype)
    x = r * (z_i ** 0.23 + z_j ** 0.23) / ZBL_LENGTH_A
    phi = sum(c * jnp.exp(-e * x) for c, e in zip(ZBL_COEFFS, ZBL_EXPONENTS))
    return COULOMB_EV_A * z_i * z_j / r * phi


def switch_radius(z_i: jax.Array, z_j: jax.Array, fraction: float, cutoff: float,
                  dtype) -> jax.Array:
    """min(fraction * (R_cov(z_i) + R_cov(z_j)), cutoff) in A (the term must vanish before
    the neighbour list ends); [...] integer arrays -> [...]."""
    radii = jnp.asarray(covalent_radii, dtype)
    return jnp.minimum(fraction * (radii[z_i] + radii[z_j]), cutoff)


def core_repulsion_energies(length: jax.Array, numbers: jax.Array, centers: jax.Array,
                            neighbors: jax.Array, edge_mask: jax.Array, fraction: float,
                            cutoff: float, num_atoms: int) -> jax.Array:
    """Per-atom repulsion energies [N] (eV): half of each directed edge's pair energy goes to
    its centre atom, so each pair counts once in the total.

    length [E] edge lengths (A); numbers [N]; centers, neighbors [E]; edge_mask [E] (padding
    edges contribute 0, with finite gradients); cutoff: the model's r_c (A).
    """
    z_i, z_j = numbers[centers], numbers[neighbors]
    r_out = switch_radius(z_i, z_j, fraction, cutoff, length.dtype)
    inside = edge_mask & (length < r_out) & (length > 0)
    r = jnp.where(inside, length, 1.0)  # finite everywhere, also in the gradient
    pair = zbl_energy(r, z_i, z_j) * polynomial_envelope(r / jnp.where(inside, r_out, 0.5),
                                                         ZBL_ENVELOPE)
    return segment_sum(jnp.where(inside, 0.5 * pair, 0.0), centers, num_atoms)

