"""Official PyTorch MatRIS checkpoints ({"config", "state_dict"}, .pth.tar) -> our Model.

`matris convert official.pth.tar -o bundle.npz`, or directly `matris.load("x.pth.tar")`.
Torch is not needed: the checkpoint is read by `torch_pickle`.  Torch Linear weights are
[out, in] and become [in, out] kernels; residual scales [1, D] become [D].
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .config import MatRISConfig
from .potential import Model
from .torch_pickle import load_torch_checkpoint

_UNSUPPORTED = {  # official option -> value we support
    "distance_expansion": "bessel", "graph_conv_mlp": "gatemlp", "activation_type": "silu",
    "is_conservation": True, "use_bias": False, "max_l": 4, "max_n": 4,
}


def official_config(cfg: dict[str, Any], source: str = "checkpoint") -> MatRISConfig:
    """Our MatRISConfig for an official constructor-kwargs dict (defaults of matris 0.1.0)."""
    get = lambda k, d: cfg.get(k, d)
    for key, want in _UNSUPPORTED.items():
        value = cfg.get(key, want)
        value = value.lower() if isinstance(value, str) else value
        if value != want:
            raise ValueError(f"{source}: official option {key}={cfg.get(key)!r} is not supported "
                             f"(only {want!r})")
    norm = str(get("norm_type", "rms")).lower()
    if norm not in ("layer", "rms"):
        raise ValueError(f"{source}: norm_type={norm!r} is not supported (layer | rms)")
    hidden = get("mlp_hidden_dims", (128, 128))
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    d_n = int(get("node_feat_dim", 128))
    return MatRISConfig(
        num_layers=int(get("num_layers", 6)), atom_dim=d_n, bond_dim=int(get("edge_feat_dim", 128)),
        angle_dim=int(get("three_body_feat_dim", 128)), cutoff=float(get("pairwise_cutoff", 6)),
        three_body_cutoff=float(get("three_body_cutoff", 4)), num_radial=int(get("num_radial", 7)),
        num_angular=int(get("num_angular", 7)), envelope_exponent=int(get("envelope_exponent", 8)),
        learnable_basis=bool(get("learnable_basis", True)),
        angle_basis="sh" if str(get("three_body_expansion", "SH")).lower() == "sh" else "fourier",
        norm=norm, energy_hidden=hidden, magmom_hidden=(2 * d_n,),
        intensive=bool(get("is_intensive", True)),
        smoothed_delta_edge=bool(get("use_smoothed_for_delta_edge", False)), smooth=False)


def _linear(sd, key):
    return {"kernel": np.asarray(sd[f"{key}.weight"]).T}


def _linear_b(sd, key):
    return {"kernel": np.asarray(sd[f"{key}.weight"]).T, "bias": np.asarray(sd[f"{key}.bias"])}


def _norm(sd, key, kind):
    out = {"scale": np.asarray(sd[f"{key}.weight"])}
    if kind == "layer":
        out["bias"] = np.asarray(sd[f"{key}.bias"])
    return out


def _gated(sd, key, kind):
    out = {"core_norm": _norm(sd, f"{key}.core_norm", kind),
           "gate_norm": _norm(sd, f"{key}.gate_norm", kind)}
    for branch in ("core", "gate"):
        for ours, layer in (("in", 0), ("out", 3)):
            out[f"{branch}_{ours}_kernel"] = np.asarray(sd[f"{key}.mlp_{branch}.layers.{layer}.weight"]).T
            out[f"{branch}_{ours}_bias"] = np.asarray(sd[f"{key}.mlp_{branch}.layers.{layer}.bias"])
    return out


def _ffn(sd, key):
    return {"linear_0": _linear(sd, f"{key}.layers.0"), "linear_1": _linear(sd, f"{key}.layers.3")}


def _res(sd, key):
    return np.asarray(sd[key]).reshape(-1)


def _attention(sd, key, kind):
    return {"edge_mlp": _gated(sd, f"{key}.edge_nonlinear_update", kind),
            "node_mlp": _gated(sd, f"{key}.node_nonlinear_update", kind),
            "target_logits": _linear(sd, f"{key}.target_weight_linear"),
            "source_logits": _linear(sd, f"{key}.source_weight_linear"),
            "node_res": _res(sd, f"{key}.node_res_weight"),
            "edge_res": _res(sd, f"{key}.edge_res_weight")}


def _refine(sd, key, kind):
    return {"message_mlp": _gated(sd, f"{key}.edge_nonlinear_update", kind),
            "envelope": _linear(sd, f"{key}.learnable_envelope"),
            "node_ffn": _ffn(sd, f"{key}.node_FFN"), "edge_ffn": _ffn(sd, f"{key}.edge_FFN"),
            "node_res": _res(sd, f"{key}.node_res_weight"),
            "edge_res": _res(sd, f"{key}.edge_res_weight")}


def _mlp(sd, key, n_layers):
    return {f"linear_{i}": _linear_b(sd, f"{key}.layers.{3 * i}") for i in range(n_layers)}


def convert_state_dict(sd: dict[str, np.ndarray], config: MatRISConfig) -> dict:
    """Our parameter tree from an official state_dict (numpy arrays)."""
    kind = config.norm
    params: dict[str, Any] = {
        "atom_embedding": {"embedding": np.asarray(sd["atom_embedding.embedding.weight"]),
                           "linear": _linear(sd, "atom_embedding.atom_swish_layer.linear")},
        "bond_embedding": {
            "rbf": {"frequencies": np.asarray(sd["edge_embedding.pairwise_rbf_expansion.frequencies"])},
            "rbf_three_body": {"frequencies": np.asarray(
                sd["edge_embedding.threebody_rbf_expansion.frequencies"])},
            "linear_1": _linear(sd, "edge_embedding.edge_linear1"),
            "linear_2": _linear(sd, "edge_embedding.edge_linear2"),
            "norm": _norm(sd, "edge_embedding.edge_init_norm", "layer"),
            "linear_3": _linear(sd, "edge_embedding.swish_layer.linear")},
        "angle_embedding": {"linear_1": _linear(sd, "three_body_embedding.angle_embedding"),
                            "linear_2": _linear(sd, "three_body_embedding.swish_layer.linear")},
        "readout_norm": _norm(sd, "readout_norm", kind),
        "energy_head": _mlp(sd, "energy_head.energy_head", len(config.energy_hidden) + 1),
        "magmom_head": _mlp(sd, "magmom_head.magmom_head", 2),
    }
    if not config.learnable_basis:
        for sub in ("rbf", "rbf_three_body"):
            del params["bond_embedding"][sub]
    if config.angle_basis == "fourier" and config.learnable_basis:
        params["angle_embedding"]["fourier"] = {
            "frequencies": np.asarray(sd["three_body_embedding.expansion.frequencies"])}
    if config.angle_basis == "sh":
        params["angle_embedding"]["sh_factor"] = np.asarray(
            sd["three_body_embedding.expansion.factor"]).reshape(())
    ref = sd.get("reference_energy.fc.weight", sd.get("composition_model.fc.weight"))
    params["reference_energy"] = (np.zeros(94, np.float32) if ref is None
                                  else np.asarray(ref).reshape(-1))
    layers = []
    for k in range(config.num_layers):
        key = f"interaction_block.{k}"
        layers.append({
            "attn_line": _attention(sd, f"{key}.attn_block_line_graph", kind),
            "attn_atom": _attention(sd, f"{key}.attn_block_atom_graph", kind),
            "refine_line": _refine(sd, f"{key}.refine_block_line_graph", kind),
            "refine_atom": _refine(sd, f"{key}.refine_block_atom_graph", kind)})
    params["blocks"] = _stack(layers)  # the blocks are scanned: layer index leads
    return params


def _stack(trees: list[dict]) -> dict:
    return {k: _stack([t[k] for t in trees]) if isinstance(trees[0][k], dict)
            else np.stack([np.asarray(t[k]) for t in trees]) for k in trees[0]}


def load_official(path: str | Path, check: bool = True) -> Model:
    """A Model from an official checkpoint file (validated against the converted config)."""
    from .bundle import check_params

    ckpt = load_torch_checkpoint(path)
    if isinstance(ckpt, dict) and "model" in ckpt and "state_dict" not in ckpt:
        ckpt = ckpt["model"]
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not an official MatRIS checkpoint (no 'state_dict')")
    config = official_config(dict(ckpt.get("config") or {}), str(path))
    try:
        params = convert_state_dict(dict(ckpt["state_dict"]), config)
    except KeyError as exc:
        raise ValueError(f"{path}: state_dict is missing {exc} for its config") from exc
    if check:
        check_params(config, params, str(path))
    params = _cast(params, np.dtype(config.dtype))
    return Model(config, params, {"source": str(path), "official_config": _plain(ckpt.get("config"))})


def _cast(tree, dtype):
    if isinstance(tree, dict):
        return {k: _cast(v, dtype) for k, v in tree.items()}
    return np.asarray(tree, dtype)


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj if isinstance(obj, (int, float, str, bool, type(None))) else str(obj)


def main(argv: list[str] | None = None) -> Path:
    """matris convert CKPT -o BUNDLE: official checkpoint -> MatRIS-JAX bundle (.npz)."""
    from .bundle import save

    parser = argparse.ArgumentParser(prog="matris convert", description=main.__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    model = load_official(args.checkpoint)
    out = save(model, args.output)
    print(f"{args.checkpoint} -> {out}: {model.num_params:,} parameters, "
          f"{model.config.num_layers} layers, r_c={model.config.cutoff}, "
          f"r_3={model.config.three_body_cutoff}")
    return out
