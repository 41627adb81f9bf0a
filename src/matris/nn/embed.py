"""Input featurisation (spec 2.1-2.4): atoms, bonds and angles to 128-wide features."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .basis import BesselBasis, FourierBasis, legendre_harmonics, spherical_radial
from .elements import NUM_ELEMENTS, element_chemistry, element_descriptors
from .layers import Linear, Norm


class AtomEmbedding(nn.Module):
    """h0 = SiLU(A E[Z-1]).  numbers: [N] int (0 = padding) -> [N, d].

    descriptors: E[Z-1] + D[Z-1] P instead, D the fixed element descriptors
    (`matris.nn.elements`) and P learned; the table then starts small (std 0.1) so that
    elements start out as similar as their descriptors are.  chemistry: also add C[Z-1] Q, C the
    electronegativity and ionisation energy (`matris.nn.elements.element_chemistry`), Q learned.
    """

    dim: int
    dtype: jnp.dtype = jnp.float32
    descriptors: bool = False
    chemistry: bool = False

    @nn.compact
    def __call__(self, numbers: jax.Array) -> jax.Array:
        scale = 0.1 if self.descriptors or self.chemistry else 1.0
        table = self.param(
            "embedding", nn.initializers.normal(scale), (NUM_ELEMENTS, self.dim), self.dtype
        )
        index = jnp.clip(numbers - 1, 0, NUM_ELEMENTS - 1)
        rows = table[index]
        if self.descriptors:
            desc = jnp.asarray(element_descriptors(), self.dtype)
            rows = rows + Linear(self.dim, dtype=self.dtype, name="descriptors")(desc)[index]
        if self.chemistry:
            chem = jnp.asarray(element_chemistry(), self.dtype)
            rows = rows + Linear(self.dim, dtype=self.dtype, name="chemistry")(chem)[index]
        return nn.silu(Linear(self.dim, dtype=self.dtype, name="linear")(rows))


class BondEmbedding(nn.Module):
    """b0 = SiLU(W3 LN(W2 W1 rho)), rho the Bessel basis at r_c; also returns rho and rho3.

    d: [U] bond lengths -> (b0 [U, d], rho [U, K], rho3 [U, K]).
    """

    dim: int
    num_radial: int
    cutoff: float
    three_body_cutoff: float
    exponent: int
    learnable: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, d: jax.Array):
        kw = dict(num=self.num_radial, exponent=self.exponent, learnable=self.learnable,
                  dtype=self.dtype)
        rho = BesselBasis(cutoff=self.cutoff, name="rbf", **kw)(d)
        rho3 = BesselBasis(cutoff=self.three_body_cutoff, name="rbf_three_body", **kw)(d)
        x = Linear(self.dim, dtype=self.dtype, name="linear_1")(rho)
        x = Linear(self.dim, dtype=self.dtype, name="linear_2")(x)
        x = Norm("layer", 1e-5, self.dtype, name="norm")(x)
        b0 = nn.silu(Linear(self.dim, dtype=self.dtype, name="linear_3")(x))
        return b0, rho, rho3


def spherical_factor(cutoff: float) -> float:
    """sqrt(2/r_c^3), as the float32 number the official model stores (a frozen buffer)."""
    return float(np.float32(math.sqrt(2.0 / cutoff**3)))


class AngleEmbedding(nn.Module):
    """t0 = SiLU(B2 B1 psi), psi the Fourier basis of theta or the spherical basis.

    theta, cos_theta: [A] -> [A, d].
    """

    dim: int
    basis: str
    num_angular: int
    cutoff: float
    learnable: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, theta: jax.Array, cos_theta: jax.Array) -> jax.Array:
        if self.basis == "fourier":
            psi = FourierBasis(self.num_angular, self.learnable, self.dtype, name="fourier")(theta)
        else:
            # The official unit-vector quirk: the radial argument is |unit vector| / r_c, so
            # the radial part is a constant per feature (spec 2.4).  The factor is frozen.
            factor = self.param("sh_factor", lambda k, s, d: jnp.full(s, spherical_factor(
                self.cutoff), d), (), self.dtype)
            radial = factor * jnp.asarray(spherical_radial(1.0 / self.cutoff), self.dtype)
            ylm = legendre_harmonics(cos_theta)  # [A, 4]
            psi = (radial[None, :, :] * ylm[:, :, None]).reshape(theta.shape[0], 16)
        x = Linear(self.dim, dtype=self.dtype, name="linear_1")(psi)
        return nn.silu(Linear(self.dim, dtype=self.dtype, name="linear_2")(x))
