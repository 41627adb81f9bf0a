"""Test-wide set-up: two forced CPU devices (multi-device tests) and float64 available.

XLA_FLAGS must be set before jax is imported anywhere, hence here.  x64 is enabled so float64
tests can run; the model casts every input to its configured dtype, so float32 paths stay
float32 (a test checks the output dtype).
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
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
