"""Process settings of `matris.runtime`: huge pages and the re-execution of the command."""

import os
import subprocess
import sys

import pytest

from matris.runtime import with_hugepages


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
