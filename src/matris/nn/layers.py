"""Dense building blocks: torch-style initialisers, norms, the gated MLP and the FFN.

Kernels are stored [in, out] (Flax convention; transpose of torch's Linear.weight).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from .ops import layer_norm, rms_norm

# (x [R_k, D_k], index): index None (x is per row), [M] (gather rows of x), or a tuple of
# [M] index arrays (the sum of those gathers: one kernel block shared by several pieces).
Piece = tuple[jax.Array, "jax.Array | tuple[jax.Array, ...] | None"]


def gather_rows(table: jax.Array, index) -> jax.Array:
    """table [R, D] -> table (index None), table[index], or sum_k table[index[k]] (tuple)."""
    if index is None:
        return table
    if isinstance(index, tuple):
        out = table[index[0]]
        for i in index[1:]:
            out = out + table[i]
        return out
    return table[index]


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


def apply_norm(p: dict, x: jax.Array, kind: str, eps: float) -> jax.Array:
    """The Norm module's function on its parameters p ({"scale"[, "bias"]})."""
    if kind == "rms":
        return rms_norm(x, p["scale"], eps)
    return layer_norm(x, p["scale"], p["bias"], eps)


def norm_params(module: nn.Module, kind: str, d: int, dtype) -> dict:
    """Create (or fetch) a norm's parameters in ``module``'s scope: scale [d] (+ bias [d])."""
    p = {"scale": module.param("scale", nn.initializers.ones, (d,), dtype)}
    if kind != "rms":
        p["bias"] = module.param("bias", nn.initializers.zeros, (d,), dtype)
    return p


class Norm(nn.Module):
    """LayerNorm (scale and bias) or RMSNorm (scale) over the last axis."""

    kind: str = "layer"
    eps: float | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = norm_params(self, self.kind, x.shape[-1], self.dtype)
        return apply_norm(p, x, self.kind, norm_eps(self.kind, self.eps, self.dtype))


class NormParams(nn.Module):
    """A Norm's parameters without applying it (same names, so the same parameter tree)."""

    kind: str = "layer"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, d: int) -> dict:
        return norm_params(self, self.kind, d, self.dtype)


# The gated MLP's input layer keeps its core and gate pre-activations as a pair of [M, h]
# arrays, never one [M, 2h] array cut in two: the cut's gradient (pad + add over every row)
# cost 10 % of a force call at the official widths (128 Fe atoms, 2.84 -> 2.55 s).
Pair = tuple[jax.Array, jax.Array]


def piece_projection(p: dict, in_dims: Sequence[int], k: int, x: jax.Array) -> Pair:
    """x [R, in_dims[k]] -> (core, gate) [R, h] each: piece k's rows of the input kernels."""
    start = sum(in_dims[:k])
    rows = slice(start, start + in_dims[k])
    return x @ p["core_in_kernel"][rows], x @ p["gate_in_kernel"][rows]


def add_pair(a: Pair, b: Pair) -> Pair:
    """(a_core + b_core, a_gate + b_gate)."""
    return a[0] + b[0], a[1] + b[1]


def gated_output(p: dict, acc: Pair, kind: str, eps: float) -> jax.Array:
    """The GatedMLP after its input layer: acc = (core, gate) pre-activations [M, h] each,
    biases included -> SiLU(N_c(SiLU(core) W + b)) * sigmoid(N_g(SiLU(gate) W + b)), [M, out]."""
    core = nn.silu(acc[0]) @ p["core_out_kernel"] + p["core_out_bias"]
    gate = nn.silu(acc[1]) @ p["gate_out_kernel"] + p["gate_out_bias"]
    core, gate = apply_norm(p["core_norm"], core, kind, eps), apply_norm(p["gate_norm"], gate, kind, eps)
    return nn.silu(core) * nn.sigmoid(gate)


def gated_input_bias(p: dict) -> Pair:
    """(core, gate) input biases, [h] each."""
    return p["core_in_bias"], p["gate_in_bias"]


def gated_mlp(p: dict, in_dims: Sequence[int], pieces: Sequence[Piece], kind: str,
              eps: float) -> jax.Array:
    """The GatedMLP module's function on its parameters p (see GatedMLP).  Returns [M, out]."""
    acc = gated_input_bias(p)
    for k, (x, index) in enumerate(pieces):
        core, gate = piece_projection(p, in_dims, k, x)
        acc = add_pair(acc, (gather_rows(core, index), gather_rows(gate, index)))
    return gated_output(p, acc, kind, eps)


def apply_ffn(p: dict, x: jax.Array) -> jax.Array:
    """The FFN module's function on its parameters p ({"linear_0": {"kernel"}, "linear_1": ...})."""
    return nn.silu(x @ p["linear_0"]["kernel"]) @ p["linear_1"]["kernel"]


class GatedMLP(nn.Module):
    """G(z) = SiLU(N_c(M_c(z))) * sigmoid(N_g(M_g(z))), z the concatenation of ``pieces``.

    Each piece is (x [R_k, D_k], index [M], a tuple of [M] (summed gathers, one shared
    kernel block) or None).  The first layers of M_c and M_g act on
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
        params = {
            "core_in_kernel": p("core_in_kernel", fan_in, (fan_in, h)),
            "gate_in_kernel": p("gate_in_kernel", fan_in, (fan_in, h)),
            "core_in_bias": p("core_in_bias", fan_in, (h,)),
            "gate_in_bias": p("gate_in_bias", fan_in, (h,)),
            "core_out_kernel": p("core_out_kernel", h, (h, self.out)),
            "core_out_bias": p("core_out_bias", h, (self.out,)),
            "gate_out_kernel": p("gate_out_kernel", h, (h, self.out)),
            "gate_out_bias": p("gate_out_bias", h, (self.out,)),
        }
        for name in ("core_norm", "gate_norm"):
            params[name] = NormParams(self.norm, self.dtype, name=name)(self.out)
        return gated_mlp(params, self.in_dims, pieces, self.norm,
                         norm_eps(self.norm, self.eps, self.dtype))


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
