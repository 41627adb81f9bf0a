"""The jitted train and eval steps, data-parallel over a device mesh.

A step takes K padded sub-batches stacked on a leading axis (K = a multiple of the number of
devices).  The leading axis is sharded over the mesh axis "data"; parameters, optimizer
state and EMA are replicated.  Per-sub-batch (sum, count) loss terms are added before
dividing, so the loss and gradient of a global batch do not depend on how many devices
share it.  Multi-host: call ``jax.distributed.initialize()`` first; the same mesh over
``jax.devices()`` then spans all hosts (each host feeds its own sub-batches).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..config import MatRISConfig
from ..potential import make_predictor
from .config import LossConfig, OptimConfig
from .loss import loss_terms, weighted_loss

# Held fixed in training: the fitted composition model and the official spherical-basis factor.
FROZEN = ("reference_energy", "sh_factor")


class TrainState(NamedTuple):
    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any


def make_mesh(n_devices: int = 0) -> Mesh:
    """A 1-D mesh named "data" over the first ``n_devices`` devices (0 = all)."""
    devices = jax.devices()
    n = len(devices) if n_devices <= 0 else n_devices
    if n > len(devices):
        raise ValueError(f"asked for {n} devices, only {len(devices)} available")
    return Mesh(np.array(devices[:n]), ("data",))


def make_optimizer(cfg: OptimConfig, total_steps: int, params) -> optax.GradientTransformation:
    """Clip -> AdamW with linear warm-up and cosine decay; frozen leaves get zero updates."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, max(cfg.warmup_steps, 1), max(total_steps, cfg.warmup_steps + 1),
        end_value=cfg.learning_rate * cfg.final_lr_fraction,
    )
    # flatten: one raveled vector instead of one update per leaf (compiles much faster)
    train = optax.flatten(optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(schedule, weight_decay=cfg.weight_decay),
    ))
    labels = jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if any(getattr(p, "key", None) in FROZEN for p in path)
        else "train", params)
    return optax.multi_transform({"train": train, "frozen": optax.set_to_zero()}, labels)


def learning_rate(cfg: OptimConfig, total_steps: int, step: int) -> float:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, max(cfg.warmup_steps, 1), max(total_steps, cfg.warmup_steps + 1),
        end_value=cfg.learning_rate * cfg.final_lr_fraction,
    )
    return float(schedule(step))


def init_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    """Step 0; the EMA starts as a copy (distinct buffers: the step donates its state)."""
    ema = jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), params)
    params = jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), params)
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), ema)


def _summed_terms(predict, params, batches, targets, loss_cfg: LossConfig) -> dict:
    """vmap loss_terms over the stacked sub-batches and add them up."""
    per = jax.vmap(lambda b, t: loss_terms(predict(params, b), t, b, loss_cfg.huber_delta,
                                           loss_cfg.forces_mse))(batches, targets)
    return jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), per)


def stage_weights(loss_cfg: LossConfig, total_steps: int, step: jax.Array) -> dict:
    """{term: traced weight}: the late-stage weights from ``loss_cfg.late_start`` on."""
    early, late = loss_cfg.weights(), loss_cfg.weights(late=True)
    is_late = step >= loss_cfg.late_start(total_steps)
    return {k: jnp.where(is_late, late[k], early[k]) for k in early}


def make_train_step(model_cfg: MatRISConfig, loss_cfg: LossConfig, optim_cfg: OptimConfig,
                    optimizer: optax.GradientTransformation, mesh: Mesh, task: str = "efsm",
                    total_steps: int = 0):
    """jit(step)(state, batches, targets) -> (state, metrics).  Counts its traces in
    ``step.traces`` (a list) so tests can check it compiles once per run.  ``total_steps``
    places the loss's late stage (`LossConfig.late_start`); 0 = none."""
    predict = make_predictor(model_cfg, task)
    traces: list[int] = []

    def step(state: TrainState, batches, targets):
        traces.append(1)
        weights = stage_weights(loss_cfg, total_steps, state.step) if total_steps else loss_cfg

        def loss_fn(params):
            terms = _summed_terms(predict, params, batches, targets, loss_cfg)
            return weighted_loss(terms, weights), terms

        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # a non-finite loss or gradient (one bad batch) skips the update instead of
        # poisoning the parameters; the step still counts (data order is unchanged)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
        params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
        # EMA with warm-up: early on the average follows the parameters closely
        t = state.step.astype(jnp.float32)
        d = jnp.minimum(optim_cfg.ema_decay, (1.0 + t) / (10.0 + t))
        ema = jax.tree_util.tree_map(lambda e, p: (d * e + (1 - d) * p).astype(p.dtype),
                                     state.ema_params, params)
        metrics = {"loss": loss, "grad_norm": grad_norm, "skipped": ~ok, "terms": terms}
        return TrainState(state.step + 1, params, opt_state, ema), metrics

    data = NamedSharding(mesh, PartitionSpec("data"))
    repl = NamedSharding(mesh, PartitionSpec())
    jitted = jax.jit(step, in_shardings=(repl, data, data), out_shardings=(repl, repl),
                     donate_argnums=(0,))
    jitted.traces = traces
    return jitted


def make_eval_step(model_cfg: MatRISConfig, loss_cfg: LossConfig, mesh: Mesh, task: str = "efsm"):
    """jit(eval)(params, batches, targets) -> summed loss terms (see loss.loss_terms)."""
    predict = make_predictor(model_cfg, task)

    def evaluate(params, batches, targets):
        return _summed_terms(predict, params, batches, targets, loss_cfg)

    data = NamedSharding(mesh, PartitionSpec("data"))
    repl = NamedSharding(mesh, PartitionSpec())
    return jax.jit(evaluate, in_shardings=(repl, data, data), out_shardings=repl)


def stack(items):
    """Stack K (GraphBatch, Targets) pairs on a new leading axis (numpy, host side)."""
    batches, targets = zip(*items)
    st = lambda *xs: np.stack(xs)
    return (jax.tree_util.tree_map(st, *batches), jax.tree_util.tree_map(st, *targets))


def shard(tree, mesh: Mesh):
    """device_put a stacked host tree with its leading axis over the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec("data")))
