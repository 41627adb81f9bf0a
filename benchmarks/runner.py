"""Run one worker curve in a subprocess with a memory watchdog and a wall-clock limit.

The worker appends one JSON line per size to ``spec["out"]``; this module starts it, samples
its RSS (killing it above the memory cap, before the kernel's OOM killer would act on the
whole machine), and returns the records plus a final record describing how it ended when the
process did not end normally (killed by the cap, crashed, timed out).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import procstats

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MB = 1024**2


def python_for(kind: str) -> str | None:
    """Interpreter of the environment a worker kind runs in (None if it is missing).
    MATRIS_REF_PYTHON names another interpreter for the official model (a GPU machine's own
    torch, with MATRIS_REF_PYTHONPATH holding the official package and its dependencies)."""
    if kind == "torch" and os.environ.get("MATRIS_REF_PYTHON"):
        return os.environ["MATRIS_REF_PYTHON"]
    path = {"jax": sys.executable, "torch": str(ROOT / ".venv-ref" / "bin" / "python"),
            "teacher": str(ROOT / ".venv-teacher" / "bin" / "python")}[kind]
    return path if os.path.exists(path) else None


def worker_script(kind: str) -> str:
    return str(HERE / {"jax": "worker_jax.py", "torch": "worker_official.py",
                       "teacher": "worker_teacher.py"}[kind])


def clean_env(extra: dict | None = None) -> dict:
    """The parent environment minus settings that would distort a single-process benchmark
    (the Makefile's forced host device count), plus ``extra``."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_MMAP_MAX_",
                "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        env.pop(key, None)
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def env_for(kind: str, extra: dict | None = None) -> dict:
    """``clean_env(extra)``; for the official model with MATRIS_REF_PYTHONPATH set, that path
    alone as PYTHONPATH (its package also imports as `matris`: this project's must not show)."""
    env = clean_env(extra)
    if kind == "torch" and os.environ.get("MATRIS_REF_PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["MATRIS_REF_PYTHONPATH"]
    return env


def read_records(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def watch(popen: subprocess.Popen, mem_cap: int, timeout_s: float) -> tuple[str | None, int]:
    """Wait for the process; kill it above ``mem_cap`` bytes RSS or after ``timeout_s``.
    Returns (reason it was killed or None, peak RSS sampled in bytes)."""
    t0, peak = time.monotonic(), 0
    while popen.poll() is None:
        rss = procstats.rss_of(popen.pid)
        peak = max(peak, rss)
        if mem_cap and rss > mem_cap:
            popen.kill()
            popen.wait()
            return f"killed: RSS {rss / MB:.0f} MB above the cap {mem_cap / MB:.0f} MB", peak
        if time.monotonic() - t0 > timeout_s:
            popen.kill()
            popen.wait()
            return f"killed: wall-clock limit {timeout_s:.0f} s", peak
        time.sleep(0.2)
    return None, peak


def run_curve(kind: str, spec: dict, workdir: Path, env: dict | None = None,
              timeout_s: float = 3600.0) -> list[dict]:
    """Run one curve; returns its records (the worker's lines plus, if it did not finish
    normally, a record with the failure for the size it was working on)."""
    python = python_for(kind)
    if python is None:
        return [{"label": spec["label"], "system": spec["system"], "status": "skipped: "
                 f"no environment for {kind}"}]
    name = f"{spec['label'].replace(':', '_').replace('/', '_')}-{spec['system']}-t{spec.get('threads')}"
    spec = dict(spec, out=str(workdir / f"{name}.jsonl"))
    Path(spec["out"]).unlink(missing_ok=True)
    spec_path = workdir / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    log = open(workdir / f"{name}.log", "w")
    print(f"== {kind} {spec['label']} {spec['system']} threads={spec.get('threads')} "
          f"sizes={spec['sizes'][0]}..{spec['sizes'][-1]}", flush=True)
    t0 = time.monotonic()
    popen = subprocess.Popen([python, worker_script(kind), str(spec_path)], cwd=ROOT,
                             env=env_for(kind, env), stdout=log, stderr=subprocess.STDOUT)
    killed, sampled_peak = watch(popen, spec.get("mem_cap", 0), timeout_s)
    log.close()
    records = read_records(spec["out"])
    done = {r.get("atoms") for r in records}
    if killed or popen.returncode:
        todo = [n for n in spec["sizes"] if n not in done]
        tail = (workdir / f"{name}.log").read_text()[-600:]
        records.append({"label": spec["label"], "system": spec["system"],
                        "threads": spec.get("threads"), "atoms": todo[0] if todo else None,
                        "status": killed or f"crashed (exit {popen.returncode})",
                        "log_tail": tail})
    for r in records:
        r.setdefault("kind", kind)
        r["curve_wall_s"] = time.monotonic() - t0
        r["sampled_peak_mb"] = sampled_peak / MB
    for r in records:
        print(f"   {r.get('atoms')}: {r.get('status')}"
              + (f"  efs {r['efs']['median_s']:.3g} s" if isinstance(r.get("efs"), dict)
                 and "median_s" in r["efs"] else ""), flush=True)
    return records
