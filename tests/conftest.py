"""Test-wide set-up: two forced CPU devices (multi-device tests), fast XLA compiles, float64.

XLA_FLAGS must be set before jax is imported anywhere, hence here.  x64 is enabled so float64
tests can run; the model casts every input to its configured dtype, so float32 paths stay
float32 (a test checks the output dtype).
"""

import os
import sys
from pathlib import Path

# Two forced CPU devices, and XLA compiling for speed of compilation: the suite is dominated
# by XLA compiling small programs (measured on the 2-core dev VM, jaxlib 0.10.2: the training
# step of a 1-block model 31 s -> 11 s, a force call 8.2 s -> 1.8 s).  The flags change how
# fast the compiled code runs, not what it computes.  XLA aborts on flags it does not know,
# so they are set only for the jaxlib minor version they were checked with.  An XLA_FLAGS
# already in the environment is kept.
DEVICES_FLAG = "--xla_force_host_platform_device_count=2"
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false",
                      "--xla_cpu_parallel_codegen_split_count=1")
FAST_COMPILE_JAXLIB = "0.10."


def xla_flags_for_tests() -> str:
    """XLA_FLAGS for the test run (see above)."""
    import jaxlib  # does not initialise XLA

    fast = jaxlib.__version__.startswith(FAST_COMPILE_JAXLIB)
    return " ".join((DEVICES_FLAG,) + (FAST_COMPILE_FLAGS if fast else ()))


os.environ.setdefault("XLA_FLAGS", xla_flags_for_tests())
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # BLAS threads fight XLA's for 2 cores

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parents[1]
# XLA's persistent compilation cache: identical programs built in different tests (or in the
# subprocesses of the resume test, which inherit the variables) compile once per session.
CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".pytest_cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
