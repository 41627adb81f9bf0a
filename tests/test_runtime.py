"""Process settings of `matris.runtime`: huge pages, the re-execution of the command, and the
XLA flags chosen for narrow models."""

import os
import subprocess
import sys

import pytest

from matris.runtime import (
    MALLOC_TUNABLES,
    NARROW_FUSIONS,
    YNN_FUSION_FLAG,
    heap_kept,
    narrow_model_flags,
    with_tunables,
)


def test_command_reexecs_once_with_the_malloc_tunables_of_its_workload():
    """`matris` restarts itself with glibc's malloc tunables (Linux/glibc) exactly once: the
    heap-keeping set for inference commands, huge pages only for training; the user's own
    GLIBC_TUNABLES entries are kept and an explicit choice of a tunable is not overridden."""
    if with_tunables({}) is None:
        pytest.skip("not Linux with glibc")
    inference, training = MALLOC_TUNABLES["inference"], MALLOC_TUNABLES["training"]
    assert with_tunables({})["GLIBC_TUNABLES"] == inference
    assert heap_kept({"GLIBC_TUNABLES": inference}) and not heap_kept({"GLIBC_TUNABLES": training})
    assert with_tunables({}, "training")["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    assert with_tunables({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "training") is None
    assert with_tunables({"GLIBC_TUNABLES": inference}) is None
    mine = with_tunables({"GLIBC_TUNABLES": "glibc.pthread.rseq=0:glibc.malloc.arena_max=4"})
    assert mine["GLIBC_TUNABLES"] == "glibc.pthread.rseq=0:glibc.malloc.arena_max=4:" + ":".join(
        t for t in inference.split(":") if "arena_max" not in t)
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MATRIS_NO_REEXEC")}
    for argv, expected in ((["--help"], inference), (["train", "--help"], training)):
        code = (f"import os, sys; sys.argv = ['matris', *{argv!r}];"
                "print('TUNABLES=' + os.environ.get('GLIBC_TUNABLES', ''), flush=True);"
                "from matris.cli import main; main()")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env).stdout
        assert out.count("TUNABLES=") == 2  # the original process and one re-execution
        assert f"TUNABLES={expected}\n" in out and "usage" in out


def test_inference_tunables_keep_the_scratch_between_calls():
    """With the inference tunables a repeated force call page-faults nothing in most calls
    (XLA's scratch is reused from the heap; without huge pages the small allocations in
    between make some calls fault part of it in again: the median call faults nothing, and
    RSS stays flat); with glibc's defaults every call faults the whole scratch in again."""
    if with_tunables({}) is None:
        pytest.skip("not Linux with glibc")
    code = ("import resource, numpy as np, jax, jax.numpy as jnp;"
            "f = jax.jit(jax.grad(lambda x: jnp.sum(jnp.tanh(x @ x.T) ** 2)));"
            "x = jnp.ones((3000, 64)) / 64; [f(x).block_until_ready() for _ in range(10)];"
            "flt = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt; out = [];"
            "[(out.append(-flt()), f(x).block_until_ready(), out.append(out.pop() + flt()))"
            " for _ in range(9)];"
            "print(int(np.median(out)))")
    faults = {}
    for name, tunables in (("default", ""), ("inference", MALLOC_TUNABLES["inference"])):
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        if tunables:
            env["GLIBC_TUNABLES"] = tunables
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, check=True).stdout
        faults[name] = int(out.split()[-1])
    # a 36 MB scratch = ~9,000 faults of 4 KiB pages per call with glibc's defaults
    assert faults["default"] > 3000 and faults["inference"] < 0.1 * faults["default"], faults


def test_narrow_models_get_ynn_elementwise_fusions_unless_flags_choose():
    """Width <= 64 adds the YNNPACK fusion flag to whatever XLA_FLAGS hold; wider models and an
    explicit fusion choice leave the flags as they are.  In a fresh process
    `tune_xla_for_model` (what `matris train` calls first) sets it before JAX starts; once
    JAX has started it changes nothing and says so."""
    flag = f"{YNN_FUSION_FLAG}={NARROW_FUSIONS}"
    assert narrow_model_flags("", 64) == flag
    assert narrow_model_flags("--xla_force_host_platform_device_count=2", 32) == (
        "--xla_force_host_platform_device_count=2 " + flag)
    assert narrow_model_flags("--a=1", 128) == "--a=1"
    mine = f"{YNN_FUSION_FLAG}=dot"
    assert narrow_model_flags(mine, 32) == mine
    code = ("import os, jax; from matris.runtime import tune_xla_for_model;"
            "from matris.config import get_config;"
            "print(tune_xla_for_model(get_config('tiny')), os.environ['XLA_FLAGS']);"
            "jax.devices(); os.environ['XLA_FLAGS'] = '';"
            "print(tune_xla_for_model(get_config('tiny')), len(os.environ['XLA_FLAGS']))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout.split()
    assert out[:2] == ["True", flag]
    # once JAX has started, flags are no longer touched and the call says so
    assert out[2:] == ["False", "0"]


def test_older_jaxlib_keeps_xla_defaults(monkeypatch):
    """A jaxlib older than the one the fusion flag was verified with gets no new flag (XLA
    aborts on flags it does not know)."""
    import jaxlib

    from matris.config import get_config
    from matris.runtime import tune_xla_for_model

    monkeypatch.setattr(jaxlib, "__version__", "0.9rc2")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert tune_xla_for_model(get_config("tiny"))
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"


def test_memory_freed_into_a_kept_heap_is_given_back_before_sizing_a_call():
    """With the heap kept, a freed 200 MB block stays in the process (malloc holds it free,
    the RSS keeps it); `release_free_heap`, which `available_memory` calls first, gives it
    back to the OS, so it counts once as available memory and not as in use."""
    if with_tunables({}) is None:
        pytest.skip("not Linux with glibc")
    code = ("import os, numpy as np; from matris.runtime import heap_free_bytes, "
            "release_free_heap;\n"
            "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf("
            "'SC_PAGE_SIZE')\n"
            "x = np.ones(25_000_000); del x; kept, before = heap_free_bytes(), rss()\n"
            "release_free_heap(); print(kept, before - rss())")
    env = dict(os.environ, GLIBC_TUNABLES=MALLOC_TUNABLES["inference"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout
    kept, released = (int(v) for v in out.split()[-2:])
    assert kept >= 200_000_000  # held by malloc, not returned, while the heap is kept
    assert released >= 150_000_000


def test_keep_xla_flags_leaves_them_as_given(monkeypatch):
    """MATRIS_KEEP_XLA_FLAGS: a narrow model adds nothing to XLA_FLAGS (without it, it would)."""
    from matris.config import get_config
    from matris.runtime import KEEP_XLA_FLAGS, narrow_model_flags, tune_xla_for_model

    flags = "--xla_force_host_platform_device_count=2"
    assert narrow_model_flags(flags, 32) != flags
    monkeypatch.setenv("XLA_FLAGS", flags)
    monkeypatch.setenv(KEEP_XLA_FLAGS, "1")
    assert tune_xla_for_model(get_config("tiny"))
    assert os.environ["XLA_FLAGS"] == flags
