"""Sub-layers computed in chunks of rows (`matris.nn.chunked`, ``chunk_rows``): the same model."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import predict, setup, structures

from matris import get_config, init_params, make_predictor
from matris.graph import budgets_for, build_graph, pack
from matris.nn.chunked import chunk_layout, from_chunks, to_chunks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from profile_call import dot_flops  # noqa: E402


def test_chunk_layout_covers_rows():
    for rows in (1, 7, 100, 4096, 4097, 23552, 65519):
        for chunk in (1, 3, 64, 2048):
            count, size = chunk_layout(rows, chunk)
            assert size <= chunk and count * size >= rows and (count - 1) * size < rows
    assert chunk_layout(23552, 2048) == (16, 1472)  # a divisor: nothing padded
    x = np.arange(14.0).reshape(7, 2)  # 7 rows in chunks of <= 3: no divisor, one padding row
    xs = to_chunks({"x": (x, -1.0), "none": (None, 0.0)}, 7, 3)
    assert xs["none"] is None and xs["x"].shape == (3, 3, 2) and float(xs["x"][2, 2, 0]) == -1.0
    np.testing.assert_array_equal(from_chunks(xs["x"], 7), x)


@pytest.mark.parametrize("preset,smooth,remat,save_dots", [
    ("tiny", True, True, False), ("tiny", False, False, True),
    pytest.param("official", False, False, False, marks=pytest.mark.slow)])
def test_chunked_equals_whole(preset, smooth, remat, save_dots):
    """Energies, forces, stress and magmoms of a padded batch of five structures (both graphs
    chunked; with and without rematerialised blocks, with the loop bodies' products kept or
    recomputed) equal the unchunked model's."""
    overrides = {}
    if preset == "official":  # its functions (RMSNorm, spherical basis, no cutoff weights), smaller
        overrides = dict(num_layers=2, atom_dim=32, bond_dim=32, angle_dim=32,
                         energy_hidden=(32,), magmom_hidden=(32,))
    cfg, params, fn = setup(preset, smooth=smooth, **overrides)
    atoms = list(structures().values())
    budgets = budgets_for([build_graph(a, cfg.cutoff, cfg.three_body_cutoff) for a in atoms])
    whole, batch = predict(cfg, params, fn, atoms, budgets)
    assert int(batch.angle_mask.sum()) > 3 * 300 and batch.centers.shape[0] > 3 * 300
    chunked_cfg = cfg.replace(chunk_rows=300, remat=remat, remat_save_dots=save_dots)
    chunked, _ = predict(chunked_cfg, params, jax.jit(make_predictor(chunked_cfg, "efsm")), atoms,
                         budgets)
    for key in ("energy", "forces", "stress", "magmoms"):
        np.testing.assert_allclose(chunked[key], whole[key], rtol=1e-10, atol=1e-12, err_msg=key)
    assert np.abs(whole["forces"]).max() > 1e-5  # the comparison is not between zeros


def test_kept_products_are_not_recomputed():
    """The chunked loops recompute their bodies in the backward pass; with remat_save_dots
    they keep the matrix products instead: the force call's dot FLOPs (scan trip counts
    included, from the jaxpr) fall back to within 10 % of the unchunked model's."""
    cfg, params, fn = setup("tiny", smooth=False)
    atoms = list(structures().values())
    budgets = budgets_for([build_graph(a, cfg.cutoff, cfg.three_body_cutoff) for a in atoms])
    _, batch = predict(cfg, params, fn, atoms, budgets)
    flops = {}
    for name, kw in (("plain", {}), ("recomputed", dict(chunk_rows=300)),
                     ("kept", dict(chunk_rows=300, remat_save_dots=True))):
        f = make_predictor(cfg.replace(**kw), "efsm")
        flops[name] = dot_flops(jax.make_jaxpr(f)(params, batch).jaxpr)
    assert flops["recomputed"] > 1.3 * flops["plain"]  # the forward products run twice
    assert flops["plain"] <= flops["kept"] < 1.1 * flops["plain"], flops


@pytest.mark.slow
def test_chunked_training_gradient():
    """The parameter gradient of a force loss (what training differentiates) equals the
    unchunked one.  Slow (the second-order compilation, ~55 s); training itself does not
    chunk, the calculator's forces are covered above."""
    cfg, params, fn = setup("tiny")
    atoms = [structures()["fecr"]]
    budgets = budgets_for([build_graph(a, cfg.cutoff, cfg.three_body_cutoff) for a in atoms])
    chunked_cfg = cfg.replace(chunk_rows=300)
    _, batch = predict(cfg, params, fn, atoms, budgets)
    assert int(batch.angle_mask.sum()) > 2 * 300

    def loss(c):
        f = make_predictor(c, "ef")
        return lambda p: jax.numpy.sum(f(p, batch)["forces"] ** 2)

    g_whole = jax.jit(jax.grad(loss(cfg)))(params)
    g_chunk = jax.jit(jax.grad(loss(chunked_cfg)))(params)
    for a, b in zip(jax.tree_util.tree_leaves(g_chunk), jax.tree_util.tree_leaves(g_whole)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.slow
def test_chunked_config_initialises_the_same_parameters():
    """Initialisation runs the unchunked modules, so a chunked config has the same parameter
    tree and values (bundles and converted checkpoints load into either)."""
    cfg = get_config("tiny")
    graph = build_graph(structures()["fecr"], cfg.cutoff, cfg.three_body_cutoff)
    batch, _ = pack([graph], budgets_for([graph]))
    plain = init_params(cfg, batch, seed=3)
    chunked = init_params(cfg.replace(chunk_rows=64), batch, seed=3)
    assert jax.tree_util.tree_structure(plain) == jax.tree_util.tree_structure(chunked)
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(chunked)):
        np.testing.assert_array_equal(a, b)
