"""Process settings of `matris.runtime`: huge pages, the re-execution of the command, and the
XLA flags chosen for narrow models."""

import os
import subprocess
import sys

import pytest

from matris.runtime import NARROW_FUSIONS, YNN_FUSION_FLAG, narrow_model_flags, with_hugepages


def test_command_reexecs_once_with_huge_pages():
    """`matris` restarts itself with glibc's huge-page tunable (Linux/glibc) exactly once,
    keeps the user's own GLIBC_TUNABLES entries, and leaves an explicit choice alone."""
    if with_hugepages({}) is None:
        pytest.skip("not Linux with glibc")
    assert with_hugepages({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
    assert with_hugepages({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"})["GLIBC_TUNABLES"] == (
        "glibc.pthread.rseq=0:glibc.malloc.hugetlb=1")
    code = ("import os, sys; sys.argv = ['matris', '--help'];"
            "print('TUNABLES=' + os.environ.get('GLIBC_TUNABLES', ''), flush=True);"
            "from matris.cli import main; main()")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MATRIS_NO_REEXEC")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout
    assert out.count("TUNABLES=") == 2  # the original process and one re-execution
    assert "TUNABLES=glibc.malloc.hugetlb=1" in out and "predict" in out


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
