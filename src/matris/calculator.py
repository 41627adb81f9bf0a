"""ASE calculator for MatRIS models, plus the compiled-predictor cache shared by inference.

Compilation is what makes a jitted potential slow to start: XLA compiles one executable per
padded shape.  `CompiledPredictor` keeps one executable per `Budgets` (the padded shape) for a
(config, task) pair and counts how many it compiled; `compiled_predictor` shares one holder per
(config, task), so calculators and `matris.predict` on the same model reuse executables.
The calculator grows its budgets only when a structure no longer fits (with some headroom), so
MD and relaxations rebuild the neighbour list every step on the host but compile rarely.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import ase
import jax
import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from . import compile_cache
from .config import MatRISConfig
from .graph import Budgets, GraphBatch, StructureGraph, budgets_for, graph_for, pack
from .graph.batch import graph_sizes
from .potential import Model, check_task, make_predictor
from .runtime import heap_free_bytes, heap_kept

DEFAULT_HEADROOM = 0.1  # grow budgets to 10 % above the sizes that overflowed them


def batch_budgets(batch: GraphBatch) -> Budgets:
    """The padded sizes (atoms, edges, bonds, angles, graphs) a batch was packed with."""
    return Budgets(len(batch.node_mask), len(batch.edge_mask), len(batch.bond_mask),
                   len(batch.angle_mask), len(batch.graph_mask))


def fits(graphs: list[StructureGraph], budgets: Budgets | None) -> bool:
    """True if all `graphs` fit in one batch of `budgets` (each level with one row to spare)."""
    if budgets is None:
        return False
    total = graph_sizes(graphs).sum(axis=0)
    cap = np.array(budgets[:4]) - 1
    return bool(np.all(total <= cap) and len(graphs) <= budgets.graphs - 1)


def grow_budgets(graphs: list[StructureGraph], previous: Budgets | None,
                 headroom: float = DEFAULT_HEADROOM) -> Budgets:
    """`previous` if the graphs fit in it, else bucketed budgets for sizes * (1 + headroom),
    never below `previous` (budgets only grow, so compiled shapes are reused)."""
    if fits(graphs, previous):
        return previous
    total = graph_sizes(graphs).sum(axis=0)
    padded = np.ceil(total * (1.0 + headroom)).astype(np.int64)[None, :]
    return budgets_for(padded, minimum=previous, n_graphs=len(graphs))


def enable_x64_for(dtype: str) -> None:
    """float64 computation needs jax's x64 mode; switch it on when asked for float64."""
    if np.dtype(dtype) == np.float64 and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


# A force/stress call whose plain scratch would pass PLAIN_SCRATCH_LIMIT or half the available
# memory runs its sub-layers in chunks of CHUNK_ROWS rows (``chunk_rows``, `matris.nn.chunked`;
# same numbers), and when even that executable's scratch (XLA's memory analysis) passes
# LEAN_MEMORY_FRACTION of the available memory, also rematerialises each block (``remat``).
# The plain scratch grows with padded angles x angle width x blocks: 207 (official shape) to
# 257 (default model) bytes per (angle, feature, block) in float32.  Measured on the 2-core VM,
# official shape, bcc Fe-Cr, E+F+S (runs interleaved in one process):
#   per angle (XLA temp):  plain 188 KB, chunked 52 KB, chunked + remat 15 KB
#                          (remat alone 37 KB, remat keeping the products 70 KB)
#   128 atoms: plain 2.08-2.28 s, chunked 2.55 s;  256 atoms (8.8 GB plain): chunked 4.5-4.8 s,
#   chunked + remat 6.0-6.9 s, remat alone 6.5 s, remat keeping the products 6.1 s.
# Chunks of 4,096 rows beat 2,048 (4.55 vs 4.76 s) and 16,384 (8.1 s, cache misses).
# Large plain buffers are also slow to fault in on CPU (hence the fixed limit there).
PLAIN_BYTES_PER_ANGLE_FEATURE = 64  # per (angle, feature, block) and byte of the dtype
PLAIN_SCRATCH_LIMIT = 6e9  # CPU only; on an accelerator the memory fraction alone decides
CHUNK_ROWS = 4096
LEAN_MEMORY_FRACTION = 0.5


def available_memory() -> int:
    """Bytes free for a new executable's scratch: the accelerator's free memory, or on CPU
    Linux's MemAvailable (all physical memory where that is not readable) plus what malloc
    holds free for reuse when the heap is kept (`matris.runtime.heap_kept`)."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    kept = heap_free_bytes() if heap_kept() else 0
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 + kept
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def plain_scratch_estimate(config: MatRISConfig, num_angles: int) -> float:
    """Bytes of scratch a plain (not rematerialised) force call needs, roughly."""
    per_angle = config.angle_dim * config.num_layers * np.dtype(config.dtype).itemsize
    return PLAIN_BYTES_PER_ANGLE_FEATURE * per_angle * num_angles


def needs_low_memory(config: MatRISConfig, task: str, num_angles: int) -> bool:
    """Whether a call of ``task`` on a batch with ``num_angles`` padded angles should compile
    a low-memory variant (chunked, then also rematerialised): gradient tasks whose plain
    scratch estimate passes LEAN_MEMORY_FRACTION of the available memory or, on CPU (where
    very large per-call buffers are slow to fault in), PLAIN_SCRATCH_LIMIT; unless the config
    already chooses (``remat`` or ``chunk_rows`` set)."""
    if "f" not in task or config.remat or config.chunk_rows:
        return False
    limit = LEAN_MEMORY_FRACTION * available_memory()
    if jax.devices()[0].platform == "cpu":
        limit = min(PLAIN_SCRATCH_LIMIT, limit)
    return plain_scratch_estimate(config, num_angles) > limit


def lean_config(config: MatRISConfig) -> MatRISConfig:
    """The least-memory variant of ``config`` (what the calculator falls back to last)."""
    return config.replace(chunk_rows=CHUNK_ROWS, remat=True)


class CompiledPredictor:
    """One model configuration and task, compiled ahead of time once per padded shape.

    ``holder(params, batch)`` -> dict of numpy outputs (see `make_predictor`).  Executables are
    keyed by (task, dtype, budgets); ``compilations`` counts the executables compiled so far.
    Shapes for which `needs_low_memory` holds compile with ``chunk_rows=CHUNK_ROWS`` (the
    sub-layers in chunks of rows), and when that executable's scratch passes
    LEAN_MEMORY_FRACTION of the available memory, again with ``remat=True`` as well (then two
    compilations for that shape).  ``chosen[key]`` is the config an executable runs.
    """

    def __init__(self, config: MatRISConfig, task: str):
        compile_cache.enable()  # a shape compiled once on this machine loads from disk later
        self.config, self.task = config, check_task(task)
        self.dtype = np.dtype(config.dtype)
        self._configs = {"_jitted": config,
                         "_jitted_chunked": config.replace(chunk_rows=CHUNK_ROWS),
                         "_jitted_lean": lean_config(config)}
        for name, cfg in self._configs.items():
            setattr(self, name, jax.jit(make_predictor(cfg, task)))
        self.chosen: dict[tuple, MatRISConfig] = {}  # key -> the config its executable runs
        self._executables: dict[tuple, Any] = {}
        self.compilations = 0

    def key(self, batch: GraphBatch) -> tuple:
        return (self.task, self.dtype.name, batch_budgets(batch))

    def executable(self, params, batch: GraphBatch):
        """The compiled executable for this batch's shape (compiled on first use)."""
        key = self.key(batch)
        if key not in self._executables:
            if not needs_low_memory(self.config, self.task, batch.angle_center.shape[0]):
                exe = self._compile("_jitted", key, params, batch)
            else:
                exe = self._compile("_jitted_chunked", key, params, batch)
                scratch = exe.memory_analysis().temp_size_in_bytes
                if scratch > LEAN_MEMORY_FRACTION * available_memory():
                    exe = self._compile("_jitted_lean", key, params, batch)
            self._executables[key] = exe
        return self._executables[key]

    def _compile(self, name: str, key: tuple, params, batch):
        self.compilations += 1
        self.chosen[key] = self._configs[name]
        return getattr(self, name).lower(params, batch).compile()

    def __call__(self, params, batch: GraphBatch) -> dict[str, np.ndarray]:
        out = self.executable(params, batch)(params, batch)
        return {k: np.asarray(v) for k, v in out.items()}


@functools.lru_cache(maxsize=32)
def compiled_predictor(config: MatRISConfig, task: str) -> CompiledPredictor:
    """The shared `CompiledPredictor` of (config, task); the config carries the dtype."""
    return CompiledPredictor(config, task)


def resolve_model(model: Model | str | os.PathLike | None, dtype: str | None = None) -> Model:
    """A Model from a Model, a bundle path, a shipped model name, an official checkpoint, or
    None (the model shipped in the repository), cast to `dtype` if given."""
    if dtype is not None:
        enable_x64_for(dtype)
    if isinstance(model, Model):
        resolved = model.astype(dtype) if dtype and dtype != model.config.dtype else model
    else:
        from .bundle import load

        resolved = load(model, dtype=dtype)
    enable_x64_for(resolved.config.dtype)  # a float64 model given as such needs x64 too
    return resolved


def device_params(model: Model):
    """The model's parameters as device arrays (transferred once, not at every call)."""
    return jax.device_put(model.params)


def structure_results(out: dict[str, np.ndarray], graph: int, atoms: slice,
                      periodic: bool) -> dict[str, Any]:
    """Results of structure `graph` (atom rows `atoms`) from batched outputs, as float64.

    energy, free_energy, energy_per_atom: float; energies [n]; forces [n,3]; stress [3,3]
    eV/A^3 (ASE sign), only for fully periodic structures; magmoms [n].
    """
    res: dict[str, Any] = {"energy": float(out["energy"][graph])}
    res["free_energy"] = res["energy"]
    res["energy_per_atom"] = float(out["energy_per_atom"][graph])
    res["energies"] = np.asarray(out["energies"][atoms], np.float64)
    if "forces" in out:
        res["forces"] = np.asarray(out["forces"][atoms], np.float64)
    if "stress" in out and periodic:
        res["stress"] = np.asarray(out["stress"][graph], np.float64)
    if "magmoms" in out:
        res["magmoms"] = np.asarray(out["magmoms"][atoms], np.float64)
    return res


class MatRISCalculator(Calculator):
    """ASE calculator: energy, free_energy, energies (per atom), forces, stress, magmoms.

    model: a `matris.Model`, a bundle path, the name of a model shipped in the repository, an
    official PyTorch checkpoint (converted on load), or None for the shipped default model.
    task: "e" | "ef" | "efs" | "efsm" (also "em", "efm"); properties outside the task raise
    ase's PropertyNotImplementedError.  dtype: "float32" | "float64" | None (the model's own);
    "float64" switches on jax's x64 mode (``jax_enable_x64``) for the whole process.
    budgets: an optional floor for the padded sizes, e.g. to share one compiled shape between
    many different structures; headroom: fractional slack added when the budgets must grow.

    Units: eV, eV/A, stress in eV/A^3 with ASE's sign (positive = tensile), magmoms in muB.
    Stress is defined only for fully periodic structures: for molecules and mixed periodicity
    it is not computed and ``get_stress`` raises PropertyNotImplementedError.
    Bad input (NaN positions, atoms closer than 0.1 A, unknown elements, empty structure,
    singular periodic cell) raises ValueError naming the problem before any model call.
    ``compilations`` counts the executables this calculator compiled (0 if shared ones fit).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress",
                              "magmoms"]

    def __init__(self, model: Model | str | os.PathLike | None = None, task: str = "efsm",
                 dtype: str | None = None, budgets: Budgets | None = None,
                 headroom: float = DEFAULT_HEADROOM, **kwargs):
        super().__init__(**kwargs)
        self.model = resolve_model(model, dtype)
        self.task = check_task(task)
        self.predictor = compiled_predictor(self.model.config, self.task)
        self.params = device_params(self.model)
        self.budgets = budgets
        self.headroom = headroom
        self.compilations = 0

    @property
    def dtype(self) -> str:
        return self.model.config.dtype

    def graph(self, atoms: ase.Atoms) -> StructureGraph:
        cfg = self.model.config
        return graph_for(atoms, cfg, label="MatRISCalculator")

    def predict_graph(self, graph: StructureGraph) -> dict[str, np.ndarray]:
        """Batched outputs for one structure, growing the budgets if it does not fit."""
        self.budgets = grow_budgets([graph], self.budgets, self.headroom)
        batch, _ = pack([graph], self.budgets, dtype=self.predictor.dtype)
        before = self.predictor.compilations
        out = self.predictor(self.params, batch)
        self.compilations += self.predictor.compilations - before
        return out

    def calculate(self, atoms: ase.Atoms | None = None, properties=("energy",),
                  system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        graph = self.graph(self.atoms)
        out = self.predict_graph(graph)
        n = len(self.atoms)
        res = structure_results(out, 0, slice(0, n), bool(np.all(self.atoms.pbc)))
        res.pop("energy_per_atom")
        if "stress" in res:
            res["stress"] = full_3x3_to_voigt_6_stress(res["stress"])
        self.results = res
