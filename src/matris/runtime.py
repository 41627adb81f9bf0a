"""Process settings that make XLA faster on CPU: transparent huge pages for large buffers, and
YNNPACK fusions of elementwise work for narrow models.

XLA's CPU runtime allocates each call's scratch buffer (GBs for a force call on a few hundred
atoms) fresh and returns it afterwards, so every call page-faults and zeroes it in 4 KiB
pages: measured on the 2-core dev VM, 1.1 M page faults and 1.6 s of kernel time in a 2.7 s
call (official shape, 128 Fe atoms).  glibc >= 2.35 backs malloc's large blocks with 2 MiB
pages when started with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``: 2.7 s -> 2.2 s there, and
a training step of the default model 0.91 s -> 0.76 s.  The tunable is read at process start,
so the ``matris`` command re-executes itself once with it set; library users can export it
(``export GLIBC_TUNABLES=glibc.malloc.hugetlb=1``) before starting Python.

Narrow models (feature widths <= 64, e.g. the default training config: 64 / 32 / 32) spend
most of a training step on small [rows, 32] x [32, 32] products and the elementwise work
around them.  Letting XLA's CPU backend hand the elementwise fusions to YNNPACK as well
(``--xla_cpu_experimental_ynn_fusion_type=individual_dot,eltwise``) made the default train
step 0.60 s -> 0.49 s on the 2-core dev VM (same numbers to float32 rounding); for the
official widths (128) it is slower (force call at 128 Fe atoms 2.07 s -> 2.34 s), so
`matris train` sets it only for narrow models, and only when XLA_FLAGS does not choose.
"""

from __future__ import annotations

import os
import platform
import re
import sys

HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"
YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
NARROW_FUSIONS = "individual_dot,eltwise"
NARROW_WIDTH = 64
# XLA aborts on flags it does not know; the fusion-type flag is verified with jaxlib 0.10.
YNN_MIN_JAXLIB = (0, 10)
NO_REEXEC = "MATRIS_NO_REEXEC"  # set to any value to keep the process as started


def with_hugepages(env: dict[str, str]) -> dict[str, str] | None:
    """``env`` with the huge-page tunable added, or None when it is already set (to any
    value: a user's explicit choice is kept) or the platform is not Linux with glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables:
        return None
    out = dict(env)
    out["GLIBC_TUNABLES"] = f"{tunables}:{HUGEPAGE_TUNABLE}" if tunables else HUGEPAGE_TUNABLE
    return out


def reexec_with_hugepages() -> None:
    """Replace this process by the same command with the huge-page tunable set (no-op when
    it is set, when MATRIS_NO_REEXEC is set, or off Linux/glibc).  Call it first thing in a
    command's entry point, before any work."""
    if os.environ.get(NO_REEXEC):
        return
    env = with_hugepages(dict(os.environ))
    if env is None:
        return
    env[NO_REEXEC] = "1"  # never loop, whatever happens to the variable in between
    argv = [sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def narrow_model_flags(flags: str, width: int) -> str:
    """XLA_FLAGS value for a model whose widest feature is ``width``: ``flags`` plus the
    YNNPACK elementwise fusions when width <= NARROW_WIDTH and ``flags`` does not already set
    the fusion type (an explicit choice is kept); otherwise ``flags`` unchanged."""
    if width > NARROW_WIDTH or YNN_FUSION_FLAG in flags:
        return flags
    return f"{flags} {YNN_FUSION_FLAG}={NARROW_FUSIONS}".strip()


def tune_xla_for_model(config) -> bool:
    """Set XLA_FLAGS for a model (a MatRISConfig; see `narrow_model_flags`) if JAX's backends
    are not yet initialised (flags are read once, at initialisation) and jaxlib is at least
    YNN_MIN_JAXLIB (older ones may abort on the unknown flag; they keep XLA's defaults).
    Returns whether the flags now in effect are the ones this model asks for."""
    import jaxlib
    from jax._src import xla_bridge

    current = os.environ.get("XLA_FLAGS", "")
    version = tuple(int(re.match(r"\d*", p).group() or 0)
                    for p in jaxlib.__version__.split(".")[:2])
    if version < YNN_MIN_JAXLIB:
        return True  # this jaxlib may not know the flag: leave XLA's defaults
    width = max(config.atom_dim, config.bond_dim, config.angle_dim)
    wanted = narrow_model_flags(current, width)
    if wanted == current:
        return True
    if xla_bridge.backends_are_initialized():
        return False
    os.environ["XLA_FLAGS"] = wanted
    return True
