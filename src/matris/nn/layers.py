"""Dense building blocks: torch-style initialisers, norms, the gated MLP and the FFN.

Kernels are stored [in, out] (Flax convention; transpose of torch's Linear.weight).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from .ops import layer_norm, rms_norm

Piece = tuple[jax.Array, "jax.Array | None"]


def torch_uniform(fan_in: int):
    """PyTorch's Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    bound = 1.0 / max(fan_in, 1) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def norm_eps(kind: str, eps: float | None, dtype) -> float:
    """The official defaults: LayerNorm 1e-5, RMSNorm the dtype's machine epsilon."""
    if eps is not None:
        return float(eps)
    return 1e-5 if kind == "layer" else float(jnp.finfo(dtype).eps)


class Linear(nn.Module):
    """y = x W (+ b).  x: [..., in] -> [..., features].  zero_init: start at y = 0."""

    features: int
    use_bias: bool = False
    dtype: jnp.dtype = jnp.float32
    zero_init: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        init = nn.initializers.zeros if self.zero_init else torch_uniform(fan_in)
        kernel = self.param("kernel", init, (fan_in, self.features), self.dtype)
        y = x @ kernel
        if self.use_bias:
            y = y + self.param("bias", init, (self.features,), self.dtype)
        return y


class Norm(nn.Module):
    """LayerNorm (scale and bias) or RMSNorm (scale) over the last axis."""

    kind: str = "layer"
    eps: float | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,), self.dtype)
        eps = norm_eps(self.kind, self.eps, self.dtype)
        if self.kind == "rms":
            return rms_norm(x, scale, eps)
        bias = self.param("bias", nn.initializers.zeros, (d,), self.dtype)
        return layer_norm(x, scale, bias, eps)


class GatedMLP(nn.Module):
    """G(z) = SiLU(N_c(M_c(z))) * sigmoid(N_g(M_g(z))), z the concatenation of ``pieces``.

    Each piece is (x [R_k, D_k], index [M] or None).  The first layers of M_c and M_g act on
    the concatenation; their kernels split into per-piece row blocks, so a gathered piece is
    projected once per row of x and the projection gathered (W [a || b[idx]] = W_a a +
    (W_b b)[idx]): the same function at a fraction of the cost.  Returns [M, out].
    """

    in_dims: tuple[int, ...]
    hidden: int
    out: int
    norm: str = "layer"
    eps: float | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, pieces: Sequence[Piece]) -> jax.Array:
        fan_in, h = sum(self.in_dims), self.hidden
        p = lambda name, fan, shape: self.param(name, torch_uniform(fan), shape, self.dtype)
        w_core, w_gate = p("core_in_kernel", fan_in, (fan_in, h)), p("gate_in_kernel", fan_in, (fan_in, h))
        acc_c, acc_g = p("core_in_bias", fan_in, (h,)), p("gate_in_bias", fan_in, (h,))
        start = 0
        for (x, index), d in zip(pieces, self.in_dims):
            pc, pg = x @ w_core[start : start + d], x @ w_gate[start : start + d]
            if index is not None:
                pc, pg = pc[index], pg[index]
            acc_c, acc_g = acc_c + pc, acc_g + pg
            start += d
        core = nn.silu(acc_c) @ p("core_out_kernel", h, (h, self.out)) + p("core_out_bias", h, (self.out,))
        gate = nn.silu(acc_g) @ p("gate_out_kernel", h, (h, self.out)) + p("gate_out_bias", h, (self.out,))
        core = Norm(self.norm, self.eps, self.dtype, name="core_norm")(core)
        gate = Norm(self.norm, self.eps, self.dtype, name="gate_norm")(gate)
        return nn.silu(core) * nn.sigmoid(gate)


class FFN(nn.Module):
    """Bias-free two-layer MLP: Linear(in -> out) -> SiLU -> Linear(out -> out)."""

    out: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.silu(Linear(self.out, dtype=self.dtype, name="linear_0")(x))
        return Linear(self.out, dtype=self.dtype, name="linear_1")(x)


class MLP(nn.Module):
    """Readout MLP with bias: (Linear -> SiLU) per hidden width, then Linear(-> out).
    zero_last: the last layer starts at zero (a fresh energy head then starts exactly at the
    composition model, instead of adding random per-atom energies of order 0.1 eV)."""

    hidden: tuple[int, ...]
    out: int = 1
    dtype: jnp.dtype = jnp.float32
    zero_last: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, width in enumerate(self.hidden):
            x = nn.silu(Linear(width, use_bias=True, dtype=self.dtype, name=f"linear_{i}")(x))
        return Linear(self.out, use_bias=True, dtype=self.dtype, zero_init=self.zero_last,
                      name=f"linear_{len(self.hidden)}")(x)


def residual(module: nn.Module, name: str, x: jax.Array) -> jax.Array:
    """gamma * x with a learnable per-channel gamma (initialised to one) owned by ``module``."""
    gamma = module.param(name, nn.initializers.ones, (x.shape[-1],), module.dtype)
    return gamma * x
