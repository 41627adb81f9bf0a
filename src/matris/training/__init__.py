"""Training: `matris train CONFIG` (see experiments/default.yaml)."""

from __future__ import annotations

import argparse

from .config import TrainConfig, from_dict, load_config, model_config
from .loop import train

__all__ = ["TrainConfig", "from_dict", "load_config", "main", "train"]


def main(argv: list[str] | None = None) -> dict:
    """Console entry: matris train CONFIG [--no-resume] [--set key=value ...]."""
    parser = argparse.ArgumentParser(prog="matris train", description=main.__doc__)
    parser.add_argument("config", help="YAML training config (experiments/default.yaml)")
    parser.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.epochs=2")
    args = parser.parse_args(argv)
    import yaml

    overrides = {}
    for item in args.set:
        if "=" not in item:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    cfg = load_config(args.config, overrides)
    from ..compile_cache import enable as enable_compile_cache
    from ..runtime import tune_xla_for_model

    tune_xla_for_model(model_config(cfg.model))  # XLA_FLAGS first: they key the cache entries
    enable_compile_cache()
    return train(cfg, resume=not args.no_resume)
