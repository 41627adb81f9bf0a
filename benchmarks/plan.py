"""What `make bench-scaling` measures: the curves, their sizes and their time budgets.

A JAX curve without a variant runs as the calculator does (each force/stress shape in the
fastest variant whose scratch fits: ``matris.calculator.variants_for``); a variant fixes the
setting for every size.  A curve is one model (JAX preset or variant, the official PyTorch
model, or a teacher) on one system, doubling from 16 atoms; each worker stops by itself at
the first size that does not fit in memory or would overrun the curve's time budget.
Budgets are seconds per (curve, system, thread count).  The full plan is sized for about 60
minutes on the 2-core development VM; the quick plan for under 5 minutes; the GPU plan for
about 6 minutes on one H100/H200.
"""

from __future__ import annotations

import dataclasses

from matris.runtime import MALLOC_TUNABLES

# The official package's constructor kwargs of the two shapes we compare (same as the parity
# tests); the JAX side reads the same weights from the checkpoint through the converter.
OFFICIAL_CONFIGS = {
    "official": {},
    "10m": {"num_layers": 10, "norm_type": "layer", "three_body_expansion": "fourier",
            "three_body_cutoff": 4.5, "mlp_hidden_dims": [256, 128, 128],
            "reference_energy": "mptrj"},
}
VARIANTS = {"": {}, "remat": {"remat": True}, "scan": {"scan_blocks": True},
            "remat+scan": {"remat": True, "scan_blocks": True}}
FAST_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "-1"}
# 2 MiB pages for glibc's large blocks (torch's thp variant); JAX runs with what the `matris`
# command sets for inference (matris.runtime: huge pages, one arena, the heap kept).
HUGEPAGES = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
JAX_MALLOC = {"GLIBC_TUNABLES": MALLOC_TUNABLES["inference"]}


@dataclasses.dataclass(frozen=True)
class Curve:
    kind: str                 # "jax" | "torch" | "teacher"
    model: str                # JAX preset / official config name / teacher name
    variant: str = ""         # JAX: "", remat, scan, remat+scan, dense; torch: "", mmap0, thp
    systems: tuple = ("fecr", "mgo")
    max_atoms: int = 1 << 16
    min_atoms: int = 16
    budget_s: float = 120.0   # per system and thread count
    tasks: tuple = ("efs", "e")
    threads: tuple = (2, 1)
    probe: bool = False       # JAX: compile-only memory probes past the timed sizes
    max_call_s: float = 90.0
    max_repeats: int = 5
    step: int = 2             # size factor between points (a power of 2)

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.model}" + (f"/{self.variant}" if self.variant else "")

    @property
    def env(self) -> dict:
        """Allocator settings: JAX always runs as the `matris` command does for inference;
        torch with what its variant names (mmap0: memory kept; thp: huge pages)."""
        if self.kind == "jax":
            return dict(JAX_MALLOC)
        env = dict(HUGEPAGES) if "thp" in self.variant else {}
        return {**env, **FAST_MALLOC} if "mmap0" in self.variant else env

    def overrides(self) -> dict:
        return dict(VARIANTS.get(self.variant.replace("dense", "").strip("+"), {}))


def full_plan() -> list[Curve]:
    """About 60 minutes on 2 cores; most important curves first (a global deadline skips the
    tail).  10m variants and the dense baseline on Fe-Cr only."""
    fe = ("fecr",)
    return [
        Curve("jax", "official", budget_s=240, probe=True),
        Curve("torch", "official", "mmap0+thp", max_atoms=1024, budget_s=420, max_call_s=100,
              max_repeats=3),
        Curve("jax", "official", "remat", systems=fe, tasks=("efs",), threads=(2,),
              budget_s=240, probe=True),
        Curve("jax", "10m", budget_s=300, probe=True),
        Curve("torch", "10m", "mmap0+thp", max_atoms=512, budget_s=300, max_call_s=100,
              max_repeats=3),
        Curve("jax", "small", budget_s=120, probe=True),
        Curve("jax", "tiny", systems=fe, budget_s=90, probe=True),
        Curve("jax", "small", "dense", systems=fe, budget_s=120, max_atoms=1 << 15),
        Curve("jax", "10m", "remat", systems=fe, tasks=("efs",), threads=(2,), budget_s=180,
              probe=True),
        Curve("jax", "10m", "scan", systems=fe, tasks=("efs",), threads=(2,), budget_s=120),
        Curve("jax", "10m", "remat+scan", systems=fe, tasks=("efs",), threads=(2,),
              budget_s=120, probe=True),
        Curve("torch", "official", systems=fe, max_atoms=1024, budget_s=200, max_call_s=100,
              max_repeats=2, threads=(1,)),
        Curve("torch", "10m", systems=fe, max_atoms=256, budget_s=150, max_call_s=100,
              max_repeats=2, threads=(1,)),
        Curve("teacher", "sevennet-0", systems=fe, tasks=("efs",), budget_s=60),
        Curve("teacher", "chgnet-0.3.0", systems=fe, tasks=("efs",), budget_s=60),
    ]


def quick_plan() -> list[Curve]:
    """Under 5 minutes: small sizes, the tiny preset, one official comparison."""
    fe = ("fecr",)
    return [
        Curve("jax", "tiny", max_atoms=64, budget_s=40),
        Curve("jax", "tiny", "dense", systems=fe, max_atoms=64, tasks=("efs",), budget_s=30,
              threads=(2,)),
        Curve("jax", "official", systems=fe, max_atoms=32, tasks=("efs",), budget_s=60,
              threads=(2,)),
        Curve("torch", "official", "mmap0+thp", systems=fe, max_atoms=32, tasks=("efs",),
              budget_s=30, max_repeats=2),
        Curve("teacher", "sevennet-0", systems=fe, max_atoms=32, tasks=("efs",), budget_s=15,
              threads=(1,)),
    ]


def gpu_plan(max_atoms: int = 1 << 17) -> list[Curve]:
    """One GPU, about 6 minutes: no thread settings, no teachers.  The official model runs on
    the GPU too when MATRIS_REF_PYTHON / MATRIS_REF_PYTHONPATH name an interpreter with torch
    and the official package (benchmarks/gpu_bench.sh).  Energy+forces+stress only.  Each
    JAX size is a fresh XLA compilation, and on the H100 one took 142 s (official shape, 128
    atoms; 17 s on the CPU VM), so the JAX curves take every 8th size (128, 1,024, 8,192)
    with budgets for about three compilations, and the official curve the same sizes.
    Side-by-side pair first, so a short budget still gives the ratios."""
    one, fe, efs = (0,), ("fecr",), ("efs",)
    gpu = dict(threads=one, tasks=efs, max_call_s=10, systems=fe, max_atoms=max_atoms, step=8)
    return [
        Curve("jax", "official", min_atoms=128, budget_s=330, **gpu),
        Curve("torch", "official", min_atoms=128, budget_s=40, **gpu),
        Curve("jax", "10m", min_atoms=128, budget_s=200, **gpu),
        Curve("torch", "10m", min_atoms=128, budget_s=40, **gpu),
        Curve("jax", "small", "dense", min_atoms=256, budget_s=60, **gpu),
    ]
