"""Process settings that make XLA faster on CPU: glibc malloc tunables for its large
per-call buffers, and YNNPACK fusions of elementwise work for narrow models.

XLA's CPU runtime allocates each call's scratch buffer (GBs for a force call on a few hundred
atoms) fresh and frees it afterwards.  glibc serves such blocks from worker threads with
mmap and returns them with munmap, so every call page-faults and zeroes the whole buffer again:
measured on the 2-core dev VM, 1.1 M page faults and 1.6 s of kernel time in a 2.7 s call
(official shape, 128 Fe atoms).  Two remedies, read by glibc at process start:

- ``glibc.malloc.hugetlb=1`` backs large blocks with 2 MiB pages (fewer, cheaper faults):
  official shape 2.7 s -> 2.2 s, a training step of the default model 0.91 s -> 0.76 s.
  `matris train` uses this (for training steps one arena, below, is slower: 0.53-0.57 ->
  0.62-0.65 s, the worker threads then share one malloc lock).
- For inference (predict, relax, MD) one arena, no mmap and no trimming
  (``arena_max=1:mmap_max=0:trim_threshold=64 GiB``): the scratch then stays in the heap
  between calls and is reused, in most calls without a page fault.  Default model, 1,024
  Fe-Cr atoms, forces: 1.9 s per call (0.72 M faults) -> 1.2-1.5 s (none); official shape at 128 atoms
  2.27 -> 1.95-2.2 s.  The process keeps its peak memory until the calculator sizes a new
  force-call shape (`release_free_heap`; the old shape's next call faults its pages in
  again).  Without huge pages here: with them the heap's first growth cost 7.5-15 s instead
  of 5.1-5.6 s (1,024 atoms; kernel time compacting memory for 2 MiB pages; official shape
  at 128 atoms 12-28 s vs 8-11 s), and in 3 of 10 runs a later call grew the heap a second
  time (RSS 3.6 -> 6.9 GB, one 6.5 s call), never in 10 runs without; steady calls are
  0-7 % faster with them (1.29-1.36 vs 1.31-1.52 s at 1,024 atoms, 1.96-2.08 vs 2.11-2.19 s
  official shape at 128 atoms).

The ``matris`` command re-executes itself once with the tunables of its workload; library
users can export them before starting Python (``MALLOC_TUNABLES["inference"]``).

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

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
NARROW_FUSIONS = "individual_dot,eltwise"
NARROW_WIDTH = 64
# XLA aborts on flags it does not know; the fusion-type flag is verified with jaxlib 0.10.
YNN_MIN_JAXLIB = (0, 10)
NO_REEXEC = "MATRIS_NO_REEXEC"  # set to any value to keep the process as started
KEEP_XLA_FLAGS = "MATRIS_KEEP_XLA_FLAGS"  # set to any value: XLA_FLAGS used exactly as given
_KEEP_HEAP = ("glibc.malloc.arena_max=1", "glibc.malloc.mmap_max=0",
              "glibc.malloc.trim_threshold=68719476736")
MALLOC_TUNABLES = {
    "training": "glibc.malloc.hugetlb=1",
    "inference": ":".join(_KEEP_HEAP),
}


def heap_kept(env: dict[str, str] | None = None) -> bool:
    """Whether this process runs with glibc keeping freed scratch in the heap (one arena, no
    mmap), i.e. repeated large calls mostly cost no page faults (GLIBC_TUNABLES as started)."""
    tunables = (os.environ if env is None else env).get("GLIBC_TUNABLES", "").split(":")
    return all(t in tunables for t in _KEEP_HEAP[:2])


def heap_free_bytes() -> int:
    """Bytes that glibc holds free in its heap for reuse (mallinfo2 fordblks; 0 where that is
    not available).  With the heap kept, a finished call's scratch sits there."""
    try:
        import ctypes

        class _MallInfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                "uordblks", "fordblks", "keepcost")]

        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        return int(libc.mallinfo2().fordblks)
    except (OSError, AttributeError):
        return 0


def release_free_heap() -> bool:
    """Give the pages malloc holds free back to the OS (glibc ``malloc_trim(0)``: the top of
    the heap is cut and free pages inside it are dropped), so that they count as available
    memory again; the heap keeps its address range.  False where that is not available.
    With the heap kept, freed scratch can only be reused by calls whose buffers fit in the
    free blocks: a bigger call needs new memory on top of what the heap holds."""
    try:
        import ctypes

        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):
        return False


def with_tunables(env: dict[str, str], workload: str = "inference") -> dict[str, str] | None:
    """``env`` with the malloc tunables of ``workload`` ("inference" | "training") added to
    GLIBC_TUNABLES, each unless the user's value already sets that tunable (an explicit choice
    is kept); None when there is nothing to add or the platform is not Linux with glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    tunables = env.get("GLIBC_TUNABLES", "")
    mine = {item.split("=")[0] for item in tunables.split(":") if item}
    add = [t for t in MALLOC_TUNABLES[workload].split(":") if t.split("=")[0] not in mine]
    if not add:
        return None
    out = dict(env)
    out["GLIBC_TUNABLES"] = ":".join(([tunables] if tunables else []) + add)
    return out


def reexec_with_tunables(workload: str = "inference") -> None:
    """Replace this process by the same command with the malloc tunables of ``workload`` set
    (no-op when they are set, when MATRIS_NO_REEXEC is set, or off Linux/glibc).  Call it
    first thing in a command's entry point, before any work."""
    if os.environ.get(NO_REEXEC):
        return
    env = with_tunables(dict(os.environ), workload)
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
    Returns whether the flags now in effect are the ones this model asks for.  With
    MATRIS_KEEP_XLA_FLAGS set, XLA_FLAGS stay as given (e.g. to compile exactly as another
    process did) and this returns True."""
    import jaxlib
    from jax._src import xla_bridge

    if os.environ.get(KEEP_XLA_FLAGS):
        return True
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
