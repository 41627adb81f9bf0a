"""Padding-safe primitives, written once and reused by every layer.

All functions are pure and jit-friendly; segment counts are static Python ints.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def safe_norm(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """Euclidean norm with a finite gradient at zero length.  x: [..., 3] -> [...]."""
    sq = jnp.sum(x * x, axis=axis)
    safe_sq = jnp.where(sq > eps, sq, 1.0)
    return jnp.where(sq > eps, jnp.sqrt(safe_sq), 0.0)


def segment_sum(data: jax.Array, segment_ids: jax.Array, num_segments: int) -> jax.Array:
    """Sum rows of ``data`` [R, ...] into ``num_segments`` buckets by ``segment_ids`` [R]."""
    return jax.ops.segment_sum(data, segment_ids, num_segments=num_segments)


SMOOTH_SOFTMAX_EPS = 1e-6


def segment_softmax_sum(
    logits: jax.Array,
    values: jax.Array,
    segment_ids: jax.Array,
    num_segments: int,
    weights: jax.Array | None = None,
) -> jax.Array:
    """sum_{rows r of segment n} softmax_n(logits)[r] * values[r], per channel.

    logits, values: [R, C]; segment_ids: [R]; weights: optional [R] >= 0 multiplying
    exp(logits) (a smooth cutoff: a row with weight 0 is absent from its segment).  Returns
    [num_segments, C].  The softmax is normalised per segment after the sum (numerator and
    denominator are both segment sums), which is the same number as normalising each row
    first, without gathering the denominators back to the rows.  The per-segment max is held
    constant under differentiation (the softmax does not depend on it); empty or
    all-zero-weight segments give 0 instead of NaN.  Padding rows must carry padding segment
    ids so they never share a segment with real rows.
    """
    seg_max = finite_or_zero(jax.ops.segment_max(logits, segment_ids, num_segments=num_segments))
    expo = softmax_numerators(logits, seg_max, segment_ids, weights)
    numer = segment_sum(expo * values, segment_ids, num_segments)
    denom = segment_sum(expo, segment_ids, num_segments)
    return softmax_normalise(numer, denom, weights is not None)


def finite_or_zero(x: jax.Array) -> jax.Array:
    """x with non-finite entries (the -inf max of an empty segment) replaced by 0."""
    return jnp.where(jnp.isfinite(x), x, 0.0)


def softmax_numerators(logits, seg_max, segment_ids, weights=None) -> jax.Array:
    """exp(logits - max of the row's segment) [* weights]: [R, C].  The max is held constant
    under differentiation (the normalised softmax does not depend on it)."""
    expo = jnp.exp(logits - jax.lax.stop_gradient(seg_max)[segment_ids])
    return expo if weights is None else expo * weights[:, None]


def softmax_normalise(numer: jax.Array, denom: jax.Array, weighted: bool) -> jax.Array:
    """Segment sums of numerators -> the softmax-weighted sums (0 for an empty segment)."""
    if not weighted:
        return numer / jnp.where(denom > 0, denom, 1.0)
    # Smooth cutoff: a small constant in the denominator keeps the weights (and their first
    # and second derivatives) bounded when every row of a segment fades out together.
    return numer / (denom + SMOOTH_SOFTMAX_EPS)


def pair_mean(data: jax.Array, pair_ids: jax.Array, num_pairs: int) -> jax.Array:
    """Mean of the two directed rows of each undirected bond: 0.5 * (a_e + a_rev(e)).

    data: [E, C]; pair_ids: [E] bond index of each directed edge; returns [U, C].
    """
    return 0.5 * segment_sum(data, pair_ids, num_pairs)


def polynomial_envelope(x: jax.Array, p: int) -> jax.Array:
    """Smooth cutoff u_p(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2).

    Zero for x >= 1; evaluated in the factored form (1-x)^3 * sum_k C(k+2, 2) x^k,
    which is the same polynomial with less cancellation near x = 1.  x: [...] -> [...].
    """
    xc = jnp.clip(x, 0.0, 1.0)
    acc = jnp.zeros_like(xc)
    for k in range(p - 1, -1, -1):
        acc = acc * xc + (k + 2) * (k + 1) / 2.0
    return jnp.where(x < 1.0, (1.0 - xc) ** 3 * acc, 0.0)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """LayerNorm over the last axis (biased variance, like torch.nn.LayerNorm)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    centred = x - mean
    var = jnp.mean(centred * centred, axis=-1, keepdims=True)
    return centred * jax.lax.rsqrt(var + eps) * scale + bias


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """RMSNorm over the last axis (like torch.nn.RMSNorm with an affine weight)."""
    ms = jnp.mean(x * x, axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(ms + eps) * scale
