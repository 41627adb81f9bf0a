"""Process statistics shared by every benchmark worker (standard library only, so the official
and teacher environments can import it too).

Peak memory of one measurement: ``reset_peak()`` before the calls, ``peak_rss()`` after (Linux
VmHWM, reset by writing 5 to /proc/self/clear_refs).  ``cap_memory`` sets RLIMIT_AS so that a
run that outgrows the host fails inside the process (MemoryError / RESOURCE_EXHAUSTED) instead
of waking the kernel's OOM killer.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import sys
import time

GIB = 1024**3


def _status_kib(field: str, pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            match = re.search(rf"^{field}:\s+(\d+)\s+kB", fh.read(), re.MULTILINE)
    except OSError:
        return 0
    return int(match.group(1)) if match else 0


def rss_of(pid: int) -> int:
    """Resident set size of another process, bytes (0 if it is gone)."""
    return _status_kib("VmRSS", pid) * 1024


def meminfo() -> dict:
    """/proc/meminfo in bytes: MemTotal, MemAvailable, ..."""
    out = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0]) * 1024
    return out


def rss() -> int:
    """Current resident set size, bytes."""
    return _status_kib("VmRSS") * 1024


def peak_rss() -> int:
    """Peak resident set size since the last ``reset_peak`` (or process start), bytes."""
    return _status_kib("VmHWM") * 1024


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def cap_memory(limit_bytes: int | None) -> None:
    """Limit this process's address space (no-op for None or 0)."""
    if limit_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (int(limit_bytes), int(limit_bytes)))


def pin_threads(threads: int) -> list[int]:
    """Restrict this process to ``threads`` CPUs (the least busy ones first would need
    sampling; the last CPUs are used, CPU 0 takes most interrupts).  Call before importing
    jax/torch so their thread pools are sized from the affinity mask."""
    cpus = sorted(os.sched_getaffinity(0))
    if 0 < threads < len(cpus):
        os.sched_setaffinity(0, set(cpus[-threads:]))
    return sorted(os.sched_getaffinity(0))


def load() -> list[float]:
    """1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def timed_calls(fn, repeats: int, warmup: int = 1) -> dict:
    """Run ``fn`` warmup + repeats times; statistics of the timed calls (seconds)."""
    first = None
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "n": len(times),
            "warmup_s": first}


def repeats_for(call_s: float, max_repeats: int, target_s: float = 20.0) -> int:
    """How many timed calls fit in about ``target_s`` (at least 1, at most max_repeats)."""
    return int(max(1, min(max_repeats, target_s // max(call_s, 1e-6))))


def emit(path: str | None, record: dict) -> None:
    """Append one JSON line to ``path`` (or stdout) and flush."""
    line = json.dumps(record, default=float)
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")
    else:
        print(line, flush=True)
    print(f"[{record.get('label', '?')}] {summary(record)}", file=sys.stderr, flush=True)


def summary(record: dict) -> str:
    """One human line for the log."""
    keys = ("system", "atoms", "threads", "status", "efs_s", "e_s", "compile_s", "peak_mb")
    return " ".join(f"{k}={record[k]:.4g}" if isinstance(record.get(k), float)
                    else f"{k}={record[k]}" for k in keys if k in record)
