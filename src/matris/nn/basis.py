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


INV_SQRT2_F32 = float(np.float32(1.0 / math.sqrt(2.0)))  # the official constant, as float32


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
        const = jnp.full((theta.shape[0], 1), INV_SQRT2_F32, dtype=theta.dtype)
        return jnp.concatenate([const, jnp.sin(arg), jnp.cos(arg)], axis=1) / math.sqrt(math.pi)


# The official spherical basis (spec 2.4), as float32 numbers: roots z_ln of j_l and the
# coefficients a_k of R_ln(x) (l = 0..3 rows, n = 0..3 columns).  R_0n = sin(zx)/x;
# R_1n = (a0 x cos + a2 sin)/x^2; R_2n = (a0 x^2 sin - a2 x cos + a4 sin)/x^3;
# R_3n = (a0 x^3 cos - a2 x^2 sin - a4 x cos + a6 sin)/x^4 (sin, cos of zx).
SH_ROOTS = np.array([
    [3.1415927410125732, 6.2831854820251465, 9.42477798461914, 12.566370964050293],
    [4.493409633636475, 7.7252516746521, 10.904121398925781, 14.066193580627441],
    [5.763459205627441, 9.095011711120605, 12.322940826416016, 15.514602661132812],
    [6.987932205200195, 10.417118072509766, 13.698022842407227, 16.923622131347656],
])
SH_COEFFS = {  # l -> [a0, a2, a4, a6][: l + 1] per n
    1: [[-1.0244648456573486, -1.0083433389663696, -1.0041964054107666, -1.0025237798690796],
        [0.22799275815486908, 0.1305256336927414, 0.09209328889846802, 0.0712718591094017]],
    2: [[-1.048079490661621, -1.0186179876327515, -1.010022759437561, -1.0062896013259888],
        [0.5455470681190491, 0.33599230647087097, 0.24588839709758759, 0.19458240270614624],
        [0.09465618431568146, 0.036942481994628906, 0.019953710958361626, 0.01254188735038042]],
    3: [[1.0694283246994019, 1.0292173624038696, 1.0165081024169922, 1.010696530342102],
        [0.9182358384132385, 0.5928034782409668, 0.4452502727508545, 0.3583263158798218],
        [0.3285077214241028, 0.1422666758298874, 0.0812617763876915, 0.05293286591768265],
        [0.047010719776153564, 0.013657009229063988, 0.0059323725290596485,
         0.003127750474959612]],
}


def spherical_radial(x: float) -> np.ndarray:
    """R_ln(x) for l, n = 0..3 from the tables above (numpy float64).  -> [4, 4]."""
    out = np.zeros((4, 4))
    for l in range(4):
        zx = SH_ROOTS[l] * x
        s, c = np.sin(zx), np.cos(zx)
        if l == 0:
            out[l] = s / x
            continue
        a = np.array(SH_COEFFS[l])
        if l == 1:
            out[l] = (a[0] * x * c + a[1] * s) / x**2
        elif l == 2:
            out[l] = (a[0] * x**2 * s - a[1] * x * c + a[2] * s) / x**3
        else:
            out[l] = (a[0] * x**3 * c - a[1] * x**2 * s - a[2] * x * c + a[3] * s) / x**4
    return out


def legendre_harmonics(cos_theta: jax.Array) -> jax.Array:
    """Y_l(cos theta) with m = 0 for l = 0..3.  [A] -> [A, 4]."""
    c = cos_theta
    y0 = jnp.full_like(c, 0.5 * math.sqrt(1.0 / math.pi))
    y1 = math.sqrt(3.0 / (4 * math.pi)) * c
    y2 = math.sqrt(5.0 / (16 * math.pi)) * (3 * c * c - 1)
    y3 = math.sqrt(7.0 / (16 * math.pi)) * c * (5 * c * c - 3)
    return jnp.stack([y0, y1, y2, y3], axis=1)
