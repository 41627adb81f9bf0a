"""Radial and angular bases (spec sections 2.2 and 2.4)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .ops import polynomial_envelope


class BesselBasis(nn.Module):
    """phi_k(d) = sqrt(2/r) sin(w_k d / r) / d * u_p(d / r), w_k initialised to k*pi.

    d: [R] lengths (> 0) -> [R, K].  Zero for d >= r (the envelope).
    """

    num: int
    cutoff: float
    exponent: int = 8
    learnable: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, d: jax.Array) -> jax.Array:
        init = lambda key, shape, dtype: jnp.arange(1, self.num + 1, dtype=dtype) * math.pi
        if self.learnable:
            freq = self.param("frequencies", init, (self.num,), self.dtype)
        else:
            freq = init(None, (self.num,), self.dtype)
        x = d / self.cutoff
        env = polynomial_envelope(x, self.exponent)
        pref = math.sqrt(2.0 / self.cutoff)
        return pref * jnp.sin(freq * x[:, None]) / d[:, None] * env[:, None]


class FourierBasis(nn.Module):
    """(1/sqrt(pi)) [1/sqrt(2), sin(f_1 t)..sin(f_F t), cos(f_1 t)..cos(f_F t)].

    theta: [A] radians -> [A, 2F+1]; f initialised to 1..F.
    """

    num: int  # 2F + 1
    learnable: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, theta: jax.Array) -> jax.Array:
        f = (self.num - 1) // 2
        init = lambda key, shape, dtype: jnp.arange(1, f + 1, dtype=dtype)
        if self.learnable:
            freq = self.param("frequencies", init, (f,), self.dtype)
        else:
            freq = init(None, (f,), self.dtype)
        arg = theta[:, None] * freq
        const = jnp.full((theta.shape[0], 1), 1.0 / math.sqrt(2.0), dtype=theta.dtype)
        return jnp.concatenate([const, jnp.sin(arg), jnp.cos(arg)], axis=1) / math.sqrt(math.pi)


# Roots z_ln of the spherical Bessel functions j_l, l = 0..3, n = 1..4 (spec 2.4).
SPHERICAL_BESSEL_ROOTS = np.array(
    [
        [math.pi, 2 * math.pi, 3 * math.pi, 4 * math.pi],
        [4.49341, 7.72525, 10.90412, 14.06619],
        [5.76346, 9.09501, 12.32294, 15.51460],
        [6.98793, 10.41712, 13.69802, 16.92362],
    ]
)


def spherical_bessel(l: int, z: np.ndarray) -> np.ndarray:
    """j_l(z) for l = 0..3 in closed form (numpy, float64)."""
    s, c = np.sin(z), np.cos(z)
    if l == 0:
        return s / z
    if l == 1:
        return s / z**2 - c / z
    if l == 2:
        return (3 / z**3 - 1 / z) * s - 3 * c / z**2
    return (15 / z**4 - 6 / z**2) * s - (15 / z**3 - 1 / z) * c


def legendre_harmonics(cos_theta: jax.Array) -> jax.Array:
    """Y_l(cos theta) with m = 0 for l = 0..3.  [A] -> [A, 4]."""
    c = cos_theta
    y0 = jnp.full_like(c, 0.5 * math.sqrt(1.0 / math.pi))
    y1 = math.sqrt(3.0 / (4 * math.pi)) * c
    y2 = math.sqrt(5.0 / (16 * math.pi)) * (3 * c * c - 1)
    y3 = math.sqrt(7.0 / (16 * math.pi)) * c * (5 * c * c - 3)
    return jnp.stack([y0, y1, y2, y3], axis=1)
