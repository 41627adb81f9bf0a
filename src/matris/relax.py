"""Structure relaxation: one structure with ASE optimizers, or many at once (`BatchRelaxer`).

    result = relax(atoms, calc, fmax=0.05, steps=500)            # FIRE + FrechetCellFilter
    result.atoms, result.trajectory.energies, result.converged

    results = BatchRelaxer(model, fmax=0.05).relax(structures)  # padded batches, numpy FIRE

With ``relax_cell=True`` the cell relaxes along its periodic axes only (`cell_mask`): all of
it for a crystal, the in-plane components for a slab with pbc (T, T, F) and a cell with
vacuum, the axial one for a wire.  Molecules, and structures without a cell of their own,
are relaxed at fixed cell.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any, Sequence

import ase
import ase.optimize
import numpy as np
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter
from tqdm.auto import tqdm

from . import fire
from .calculator import (
    DEFAULT_HEADROOM,
    MatRISCalculator,
    compiled_predictor,
    device_params,
    fits,
    grow_budgets,
    resolve_model,
    structure_results,
    warn_unseen_elements,
)
from .graph import Budgets, as_atoms, graph_for, pack
from .graph.batch import graph_sizes
from .graph.neighbors import has_own_cell
from .potential import Model
from .predict import inference_budgets

OPTIMIZERS = ("FIRE", "BFGS", "LBFGS", "BFGSLineSearch", "LBFGSLineSearch", "MDMin", "GPMin")


@dataclasses.dataclass
class Trajectory:
    """What a relaxation visited, one entry per force evaluation (eV, eV/A, eV/A^3, A)."""

    energies: list = dataclasses.field(default_factory=list)
    forces: list = dataclasses.field(default_factory=list)
    stresses: list = dataclasses.field(default_factory=list)
    magmoms: list = dataclasses.field(default_factory=list)
    positions: list = dataclasses.field(default_factory=list)
    cells: list = dataclasses.field(default_factory=list)

    def record(self, atoms: ase.Atoms, results: dict[str, Any]) -> None:
        """Append one step; results holds energy and optionally forces, stress [3,3], magmoms."""
        self.energies.append(float(results["energy"]))
        for name, key in (("forces", "forces"), ("stresses", "stress"), ("magmoms", "magmoms")):
            if results.get(key) is not None:
                getattr(self, name).append(np.array(results[key]))
        self.positions.append(atoms.get_positions())
        self.cells.append(atoms.cell.array.copy())

    def __len__(self) -> int:
        return len(self.energies)


@dataclasses.dataclass
class RelaxResult:
    """Final structure (with its results as a SinglePointCalculator) and the path to it.

    error: set (and converged False) when BatchRelaxer had to stop this structure because its
    geometry became invalid; atoms is then that geometry, without results.
    """

    atoms: ase.Atoms
    trajectory: Trajectory
    converged: bool
    steps: int
    error: str | None = None

    @property
    def energy(self) -> float:
        """Energy (eV) of the last evaluated geometry."""
        return self.trajectory.energies[-1]


class Observer:
    """Records the calculator results of `atoms` into a Trajectory (attach to an optimizer)."""

    def __init__(self, atoms: ase.Atoms):
        self.atoms, self.trajectory = atoms, Trajectory()

    def __call__(self) -> None:
        results = dict(self.atoms.calc.results)
        if "stress" in results:
            results["stress"] = self.atoms.get_stress(voigt=False)
        self.trajectory.record(self.atoms, results)


def optimizer_class(name: str):
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    return getattr(ase.optimize, name)


def as_calculator(calculator, **kwargs) -> Calculator:
    """An ASE calculator as given, or a MatRISCalculator for a model / path / name / None."""
    return calculator if isinstance(calculator, Calculator) else MatRISCalculator(calculator,
                                                                                  **kwargs)


def cell_mask(atoms: ase.Atoms, relax_cell: bool = True) -> np.ndarray | None:
    """[3,3] bool: the cell components that relax (both axes periodic), or None when the cell
    stays fixed (relax_cell False, no periodic axis, or no non-singular cell of its own)."""
    pbc = np.asarray(atoms.pbc, bool)
    if not relax_cell or not pbc.any() or not has_own_cell(atoms.cell.array):
        return None
    return np.outer(pbc, pbc)


def relax(atoms, calculator: Calculator | Model | str | None = None, optimizer: str = "FIRE",
          fmax: float = 0.05, steps: int = 500, relax_cell: bool = True,
          trajectory: str | os.PathLike | None = None, logfile: str | None = None,
          loginterval: int = 1, scalar_pressure: float = 0.0) -> RelaxResult:
    """Relax one structure with an ASE optimizer (FrechetCellFilter when the cell relaxes).

    calculator: an ASE calculator, or a model / bundle path / shipped name / None (shipped
    default) for a MatRISCalculator.  fmax: eV/A (cell rows included); steps: optimizer steps.
    trajectory: ASE .traj file to write; logfile: optimizer log ("-" for stdout, None silent).
    scalar_pressure: eV/A^3.  Returns RelaxResult (final atoms with results attached; the
    trajectory holds energies, forces, stresses, magmoms, positions, cells every
    ``loginterval`` steps).
    """
    atoms = as_atoms(atoms)
    atoms.calc = as_calculator(calculator)
    mask = cell_mask(atoms, relax_cell)
    target = atoms if mask is None else FrechetCellFilter(
        atoms, mask=None if mask.all() else mask, scalar_pressure=scalar_pressure)
    traj = None if trajectory is None else os.fspath(trajectory)
    opt = optimizer_class(optimizer)(target, logfile=logfile, trajectory=traj)
    observer = Observer(atoms)
    opt.attach(observer, interval=loginterval)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    final = atoms.copy()
    final.calc = SinglePointCalculator(final, **atoms.calc.results)
    return RelaxResult(final, observer.trajectory, converged, opt.nsteps)


@dataclasses.dataclass
class _Job:
    """One structure being relaxed by BatchRelaxer (reference positions u, cell dofs x)."""

    index: int
    atoms: ase.Atoms
    cell0: np.ndarray
    u: np.ndarray
    x: np.ndarray
    mask: np.ndarray | None  # cell components that relax (`cell_mask`), None: fixed cell
    factor: float
    trajectory: Trajectory
    v: np.ndarray
    dt: float
    alpha: float
    steps: int = 0
    n_pos: int = 0

    def current(self) -> ase.Atoms:
        F = fire.deformation(self.x, self.factor)
        atoms = self.atoms.copy()
        atoms.set_cell(self.cell0 @ F.T, scale_atoms=False)
        atoms.positions = self.u @ F.T
        return atoms


class BatchRelaxer:
    """Relax many structures together in padded batches with FIRE (numpy), dropping converged
    ones and admitting waiting ones as room frees up.

    model: as for MatRISCalculator.  fmax (eV/A, over atom and cell rows, like ASE's filter
    test), steps (per structure), relax_cell (along the periodic axes, `cell_mask`; Frechet-style
    log-strain cell with cell factor = number of atoms, as FrechetCellFilter's default),
    scalar_pressure (eV/A^3), batch_size (structures per batch), keep_trajectory (False: only
    energies per step are kept, enough for screening thousands of structures).  budgets: an
    optional floor for the padded sizes (default: bucketed from the structures; grown, never
    shrunk, when relaxing structures outgrow them).
    """

    def __init__(self, model: Model | str | None = None, dtype: str | None = None,
                 fmax: float = 0.05, steps: int = 500, relax_cell: bool = True,
                 scalar_pressure: float = 0.0, batch_size: int = 16,
                 keep_trajectory: bool = False, fire_params: fire.FireParams = fire.FIRE_DEFAULTS,
                 budgets: Budgets | None = None, progress: bool = False):
        self.model = resolve_model(model, dtype)
        self.predictor = compiled_predictor(self.model.config, "efsm")
        self.params = device_params(self.model)
        self.fmax, self.steps, self.relax_cell = fmax, steps, relax_cell
        self.pressure, self.batch_size = scalar_pressure, batch_size
        self.keep_trajectory, self.progress = keep_trajectory, progress
        self.fire_params = fire_params
        self.budgets = budgets

    def _initial_budgets(self, graphs) -> Budgets:
        """The floor given (grown until every structure fits alone) or bucketed budgets."""
        if self.budgets is None:
            return inference_budgets(graphs, self.batch_size)
        budgets = self.budgets
        for g in graphs:
            budgets = grow_budgets([g], budgets, DEFAULT_HEADROOM)
        return budgets

    def _job(self, index: int, atoms: ase.Atoms) -> _Job:
        atoms = atoms.copy()
        atoms.calc = None
        p = self.fire_params
        return _Job(index, atoms, atoms.cell.array.copy(), atoms.get_positions(), np.zeros((3, 3)),
                    cell_mask(atoms, self.relax_cell), float(len(atoms)), Trajectory(),
                    v=np.zeros((len(atoms) + 3, 3)), dt=p.dt, alpha=p.astart)

    def _admit(self, queue: collections.deque, active: list[_Job], jobs: dict[int, _Job],
               sizes: np.ndarray) -> None:
        """Move waiting jobs into `active` while their initial sizes fit the budgets."""
        while queue and len(active) < self.batch_size:
            rows = [j.index for j in active] + [queue[0]]
            if active and not fits(sizes[rows], self.budgets):
                break
            active.append(jobs[queue.popleft()])

    def _graph(self, job: _Job, atoms: ase.Atoms):
        """(graph, None), or (None, message) if the geometry became invalid (e.g. two atoms
        pulled closer than 0.1 A): that structure stops, the others go on."""
        cfg = self.model.config
        try:
            return graph_for(atoms, cfg, f"structure {job.index}"), None
        except ValueError as err:
            return None, str(err)

    def _evaluate(self, active: list[_Job]):
        """(evaluated [(job, results, atoms)], failed [(job, atoms, message)]) at the current
        geometries; budgets grow if the batch no longer fits."""
        current = [(job, job.current()) for job in active]
        built = [(job, atoms, *self._graph(job, atoms)) for job, atoms in current]
        failed = [(job, atoms, err) for job, atoms, _, err in built if err is not None]
        good = [(job, atoms, g) for job, atoms, g, err in built if err is None]
        if not good:
            return [], failed
        graphs = [g for _, _, g in good]
        if not fits(graphs, self.budgets):
            self.budgets = grow_budgets(graphs, self.budgets, DEFAULT_HEADROOM)
        batch, _ = pack(graphs, self.budgets, dtype=self.predictor.dtype)
        out = self.predictor(self.params, batch)
        starts = np.cumsum([0] + [g.n_atoms for g in graphs])
        evaluated = []
        for k, (job, atoms, g) in enumerate(good):
            res = structure_results(out, k, slice(starts[k], starts[k + 1]), g.own_cell)
            if self.keep_trajectory:
                job.trajectory.record(atoms, res)
            else:
                job.trajectory.energies.append(res["energy"])
            evaluated.append((job, res, atoms))
        return evaluated, failed

    def _dof_forces(self, job: _Job, res: dict, atoms: ase.Atoms) -> np.ndarray:
        """[n+3,3] generalized forces: atom rows, then cell rows (zero at fixed cell)."""
        F = fire.deformation(job.x, job.factor)
        cell_rows = np.zeros((3, 3))
        if job.mask is not None:
            cell_rows = fire.cell_dof_forces(job.x, job.factor, res["stress"],
                                             abs(atoms.get_volume()), self.pressure, job.mask)
        return np.concatenate([fire.atom_dof_forces(res["forces"], F), cell_rows])

    def _finish(self, job: _Job, res: dict, atoms: ase.Atoms, converged: bool) -> RelaxResult:
        final = atoms.copy()
        keys = ("energy", "free_energy", "energies", "forces", "stress", "magmoms")
        final.calc = SinglePointCalculator(final, **{k: res[k] for k in keys if k in res})
        return RelaxResult(final, job.trajectory, converged, job.steps)

    def _step(self, active: list[_Job], forces: list[np.ndarray]) -> None:
        """One vectorised FIRE step over all still-running jobs."""
        owner = np.concatenate([np.full(len(f), k) for k, f in enumerate(forces)])
        state = fire.FireState(np.concatenate([j.v for j in active]),
                               np.array([j.dt for j in active]),
                               np.array([j.alpha for j in active]),
                               np.array([j.n_pos for j in active]))
        dx, state = fire.fire_step(state, np.concatenate(forces), owner, self.fire_params)
        start = 0
        for k, job in enumerate(active):
            rows = slice(start, start + len(forces[k]))
            n = len(job.u)
            job.u = job.u + dx[rows][:n]
            job.x = job.x + dx[rows][n:]
            job.v, job.dt = state.v[rows], float(state.dt[k])
            job.alpha, job.n_pos = float(state.alpha[k]), int(state.n_pos[k])
            job.steps += 1
            start = rows.stop

    def relax(self, structures: Sequence) -> list[RelaxResult]:
        """Relax all structures; results in input order.  Every structure is validated first."""
        atoms_list = [as_atoms(s) for s in structures]
        cfg = self.model.config
        graphs = [graph_for(a, cfg, f"structure {k}") for k, a in enumerate(atoms_list)]
        warn_unseen_elements(self.model, [(f"structure {k}", a.numbers)
                                          for k, a in enumerate(atoms_list)])
        if not graphs:
            return []
        sizes = graph_sizes(graphs)
        self.budgets = self._initial_budgets(graphs)
        jobs = {k: self._job(k, a) for k, a in enumerate(atoms_list)}
        queue, active = collections.deque(range(len(graphs))), []
        done: dict[int, RelaxResult] = {}
        with tqdm(total=len(graphs), disable=not self.progress, desc="matris relax") as bar:
            while queue or active:
                self._admit(queue, active, jobs, sizes)
                running, forces = [], []
                evaluated, failed = self._evaluate(active)
                for job, atoms, err in failed:
                    done[job.index] = RelaxResult(atoms, job.trajectory, False, job.steps, err)
                    bar.update(1)
                for job, res, atoms in evaluated:
                    f = self._dof_forces(job, res, atoms)
                    converged = bool(np.linalg.norm(f, axis=1).max() < self.fmax)
                    if converged or job.steps >= self.steps:
                        done[job.index] = self._finish(job, res, atoms, converged)
                        bar.update(1)
                    else:
                        running.append(job)
                        forces.append(f)
                if running:
                    self._step(running, forces)
                active = running
        return [done[k] for k in range(len(graphs))]
