"""JAX's persistent compilation cache, on by default for the calculator and the `matris` command.

Each padded shape costs one XLA compilation: ~3-17 s on the 2-core CPU VM (shipped model to the
official shape at 128 atoms) and 142 s for the official shape at 128 atoms on an H100
(benchmarks/results/nvidia-h100-80gb-hbm3-2026-11-26.md).  With the cache, a shape compiled
once on a machine is read back from disk in later processes (official shape, CPU: 17 s -> 3 s).

Where: ``$MATRIS_XLA_CACHE`` if set (``off`` / ``0`` / ``false`` / ``none`` disable it), else
``$XDG_CACHE_HOME/matris/xla`` (default ``~/.cache/matris/xla``).  A cache directory the user
configured for JAX (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept as it is.  JAX
keys the entries by the program, the compile options, XLA_FLAGS, the jax/jaxlib versions and
the device, so a stale entry is never used; delete the folder to reclaim the space.  JAX
writes entries in place (not atomically): an entry cut short by a killed process is reported
with a warning ("Error reading persistent compilation cache entry") and that shape is simply
compiled again; deleting the folder clears it.  No size limit is set (JAX's limit needs the
`filelock` package): entries are compressed, typically well under a few MB, one per padded
shape and task.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "MATRIS_XLA_CACHE"
DISABLED = {"off", "0", "false", "none", "no"}
MIN_COMPILE_S = 1.0  # cache only compilations slower than this (JAX's own default)


def default_dir(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "matris" / "xla"


def cache_dir_setting(env: dict[str, str] | None = None) -> Path | None:
    """The folder ``$MATRIS_XLA_CACHE`` asks for (default: `default_dir`), None if disabled."""
    value = (os.environ if env is None else env).get(ENV)
    if value is None:
        return default_dir(env)
    if value.strip().lower() in DISABLED or not value.strip():
        return None
    return Path(value).expanduser()


def enable(path: str | os.PathLike | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache in ``path`` (default: `cache_dir_setting`).
    Keeps a cache folder already configured for JAX.  Returns the folder in use, or None when
    disabled or when the folder cannot be created or written (then compilations simply are not
    cached: a read-only home never stops a calculation)."""
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    folder = Path(path) if path is not None else cache_dir_setting()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK | os.X_OK):
        return None
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    compilation_cache.reset_cache()  # re-read the setting at the next compilation
    return str(folder)
