"""`matris train`: the whole run from a TrainConfig (data, model, steps, eval, checkpoints)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from .. import bundle
from ..data import fit_reference_energies
from ..potential import Model, init_params
from .checkpoint import Checkpoints, dumps
from .config import TrainConfig, config_mismatch, model_config, to_dict
from .data import count_steps, epoch_rng, fitting_budgets, load_splits, step_inputs
from .loss import means, weighted_loss
from .report import baselines, finish_report
from .step import (
    init_state,
    learning_rate,
    make_eval_step,
    make_mesh,
    make_optimizer,
    make_train_step,
    shard,
)

FINE_TUNE_FIT_FRAMES = 5000


def initial_params(cfg: TrainConfig, model_cfg, train_split, budgets):
    """(params, elements): fresh parameters with the composition model fitted on train, or
    the stored ones of ``model.init_from`` with its references corrected for the new data
    (fine-tuning); elements: the sorted atomic numbers the model has been trained on (the
    train split's, plus the stored model's; None when the stored model does not say)."""
    elements = sorted({int(z) for f in train_split.frames for z in f.atoms.numbers})
    if cfg.model.init_from:
        start = bundle.load(cfg.model.init_from)
        diff = config_mismatch(start.config, model_cfg)
        if diff:
            raise ValueError(f"{cfg.model.init_from}: its model config differs from the run's "
                             f"({'; '.join(diff)}); leave model.preset empty to fine-tune "
                             f"the stored model as it is")
        params = dict(jax.tree_util.tree_map(np.asarray, start.astype(model_cfg.dtype).params))
        refs = fine_tune_references(Model(model_cfg, params), train_split)
        before = start.trained_elements
        elements = None if before is None else sorted(before | set(elements))
    else:
        from ..graph import pack

        batch, _ = pack(train_split.graphs[:1], budgets)
        params = dict(jax.tree_util.tree_map(np.asarray, init_params(model_cfg, batch, cfg.seed)))
        refs = fit_reference_energies(train_split.frames)
    params["reference_energy"] = refs.astype(model_cfg.dtype)
    return params, elements


def fine_tune_references(start: Model, train_split, limit: int = FINE_TUNE_FIT_FRAMES):
    """[94] reference energies for fine-tuning ``start``: its stored ones plus the per-element
    least-squares fit of what it misses per atom (label - prediction) on the train frames.

    The references are frozen in training, so they must fit the new labels from the first
    step: a constant per-element offset of the new data (another functional or code) is
    absorbed exactly, data of the same kind adds almost nothing, and elements the new data
    lacks keep their stored values (a fresh fit would set them to 0 and break the model for
    them).  Uses at most ``limit`` train frames, evenly spaced (one energy-only pass).
    """
    from ..predict import predict_graphs

    stored = np.asarray(start.params["reference_energy"], np.float64)
    step = max(1, -(-len(train_split.frames) // limit))
    frames, graphs = train_split.frames[::step], train_split.graphs[::step]
    predicted = [r["energy"] for r in predict_graphs(graphs, start, "e", progress=False)]
    return stored + fit_reference_energies(frames, predicted)


def evaluate(eval_step, params, split, budgets, k, mesh, loss_cfg, dtype) -> dict:
    """Mean loss terms and MAEs of ``params`` over a whole split."""
    total = None
    for batches, targets, _ in step_inputs(split, budgets, k, None, dtype):
        terms = jax.device_get(eval_step(params, shard(batches, mesh), shard(targets, mesh)))
        total = terms if total is None else jax.tree_util.tree_map(np.add, total, terms)
    if total is None:
        return {}
    out = {k: float(v) for k, v in means(total).items()}
    out["loss"] = float(weighted_loss(total, loss_cfg))
    return out


def _report_skipped(pending, new, progress: dict):
    """Count and print the step in ``pending`` = (step, skipped flag) if its update was
    skipped (non-finite loss or gradient); return ``new`` as the next pending one."""
    if pending is not None and bool(pending[1]):
        progress["skipped"] = progress.get("skipped", 0) + 1
        print(f"step {pending[0]}: non-finite loss or gradient, update skipped")
    return new


def train(cfg: TrainConfig, resume: bool = True) -> dict:
    """Run (or resume) training; returns the final summary (also written to summary.json)."""
    out = Path(cfg.output)
    model_cfg = model_config(cfg.model)
    dtype = np.dtype(model_cfg.dtype)
    t0 = time.time()
    splits = load_splits(cfg.data, model_cfg.cutoff, model_cfg.three_body_cutoff, cfg.seed,
                         model_cfg.symmetric_angles)
    mesh = make_mesh(cfg.devices)
    k = mesh.devices.size
    budgets = fitting_budgets(splits, cfg.batch.batch_size, cfg.batch.headroom)
    eval_budgets = fitting_budgets(splits, cfg.batch.eval_batch_size, cfg.batch.headroom)
    epoch_steps = count_steps(splits["train"], budgets, k, cfg.seed, cfg.optim.epochs,
                              cfg.batch.lookahead)
    total_steps = sum(epoch_steps)
    params, elements = initial_params(cfg, model_cfg, splits["train"], budgets)
    known = {} if elements is None else {"elements": elements}  # bundle metadata
    optimizer = make_optimizer(cfg.optim, total_steps, params)
    state = init_state(params, optimizer)
    ckpt = Checkpoints(out / "checkpoints", cfg.checkpoint.keep)
    progress = {"epoch": 0, "step_in_epoch": 0, "best_val": None, "elapsed": 0.0,
                "model_config": model_cfg.to_dict(), "train_config": to_dict(cfg)}
    if resume and ckpt.latest() is not None:
        state, progress = ckpt.restore(state, model_cfg.to_dict())
        print(f"resumed from {ckpt.folder} at step {int(state.step)} (epoch {progress['epoch']})")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    train_step = make_train_step(model_cfg, cfg.loss, cfg.optim, optimizer, mesh,
                                 total_steps=total_steps)
    eval_step = make_eval_step(model_cfg, cfg.loss, mesh)
    state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    log = (out / "metrics.jsonl").open("a")
    elapsed0, t_start = progress["elapsed"], time.time()
    print(f"{len(splits['train'].frames)} train / {len(splits['val'].frames)} val / "
          f"{len(splits['test'].frames)} test frames; budgets {tuple(budgets)}; {k} device(s); "
          f"{total_steps} steps in {cfg.optim.epochs} epoch(s); data ready in {time.time() - t0:.0f} s")
    stop = False
    for epoch in range(progress["epoch"], cfg.optim.epochs):
        rng = epoch_rng(cfg.seed, epoch)
        bar = tqdm(total=epoch_steps[epoch], initial=progress["step_in_epoch"], desc=f"epoch {epoch + 1}",
                   dynamic_ncols=True, mininterval=2.0)
        n_struct, t_epoch = 0, time.time()
        step = int(state.step)
        pending = None  # the last step's "skipped" flag, read one step late (no host sync)
        for i, (batches, targets, n) in enumerate(step_inputs(splits["train"], budgets, k, rng, dtype,
                                                                    cfg.batch.lookahead)):
            if i < progress["step_in_epoch"]:
                continue
            # jax dispatches the step asynchronously: the host packs the next batch while it
            # runs, as long as nothing below reads a result of this step.
            state, metrics = train_step(state, shard(batches, mesh), shard(targets, mesh))
            pending = _report_skipped(pending, (step + 1, metrics["skipped"]), progress)
            n_struct += n
            step += 1
            progress["step_in_epoch"] = i + 1
            if step % 10 == 0 or i + 1 == epoch_steps[epoch]:
                rate = n_struct / max(time.time() - t_epoch, 1e-9)
                bar.set_postfix(loss=f"{float(metrics['loss']):.4f}",
                                lr=f"{learning_rate(cfg.optim, total_steps, step):.2e}",
                                structs_s=f"{rate:.1f}")
            bar.update(1)
            progress["elapsed"] = elapsed0 + time.time() - t_start
            if step % cfg.checkpoint.every_steps == 0:
                ckpt.save(step, state, progress)
            if cfg.time_limit_min and progress["elapsed"] > 60 * cfg.time_limit_min:
                stop = True
                break
        _report_skipped(pending, None, progress)
        bar.close()
        if stop:
            ckpt.save(int(state.step), state, progress)
            print(f"time limit of {cfg.time_limit_min} min reached at step {int(state.step)}")
            break
        progress.update(epoch=epoch + 1, step_in_epoch=0)
        if (epoch + 1) % cfg.eval_every_epochs == 0 or epoch + 1 == cfg.optim.epochs:
            val = evaluate(eval_step, state.ema_params, splits["val"], eval_budgets, k, mesh,
                           cfg.loss, dtype) if splits["val"].frames else {}
            record = {"epoch": epoch + 1, "step": int(state.step), "time_s": progress["elapsed"],
                      "train_loss": float(metrics["loss"]), "lr": learning_rate(
                          cfg.optim, total_steps, int(state.step)),
                      **{f"val_{k2}": v for k2, v in val.items()}}
            log.write(dumps(record) + "\n")
            log.flush()
            print(" ".join(f"{k2}={v:.4g}" if isinstance(v, float) else f"{k2}={v}"
                           for k2, v in record.items()))
            if val and (progress["best_val"] is None or val["loss"] < progress["best_val"]):
                progress["best_val"] = val["loss"]
                bundle.save(Model(model_cfg, jax.device_get(state.ema_params),
                                  {"epoch": epoch + 1, "val": val, **known}), out / "best.npz")
        ckpt.save(int(state.step), state, progress)
    log.close()
    ckpt.close()
    final = Model(model_cfg, jax.device_get(state.ema_params), {"name": cfg.name, **known})
    results = {name: evaluate(eval_step, final.params, split, eval_budgets, k, mesh, cfg.loss,
                              dtype) for name, split in splits.items() if split.frames}
    summary = finish_report(cfg, final, results, baselines(splits, final.params), out,
                            train_minutes=progress["elapsed"] / 60,
                            compilations=len(train_step.traces), splits=splits)
    return summary
