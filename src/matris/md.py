"""Molecular dynamics on ASE's integrators: NVE, NVT and NPT, with trajectory, log and a trace.

    summary = run_md(atoms, MatRISCalculator(model), ensemble="nvt", thermostat="langevin",
                     temperature=1500, timestep=2.0, steps=1000, trajectory="md.traj")

Thermostats and barostats are those the installed ASE provides (`available_integrators`).
Units at this interface: temperature K, timestep fs, pressure GPa, taut / taup fs,
friction 1/fs.  The returned summary reports timing (s/step, ns/day) and total-energy drift.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import ase
import ase.md
import numpy as np
from ase import units
from ase.md import velocitydistribution as vd

ENSEMBLES = ("nve", "nvt", "npt")
DEFAULT_THERMOSTAT = {"nvt": "langevin", "npt": "mtk"}


def _ase_class(module: str, name: str):
    """ase.md.<module>.<name>, or None if the installed ASE lacks it."""
    try:
        return getattr(__import__(f"ase.md.{module}", fromlist=[name]), name)
    except (ImportError, AttributeError):
        return None


def _nvt_builders(p: dict) -> dict[str, Callable]:
    """Thermostat name -> constructor(atoms, timestep); only those the installed ASE offers."""
    T, taut, rng = p["temperature"], p["taut"] * units.fs, p["rng"]
    found = {
        "langevin": (_ase_class("langevin", "Langevin"),
                     lambda c, a, dt: c(a, dt, temperature_K=T, friction=p["friction"] / units.fs,
                                        rng=rng, fixcm=False)),
        "nose-hoover": (_ase_class("nose_hoover_chain", "NoseHooverChainNVT"),
                        lambda c, a, dt: c(a, dt, temperature_K=T, tdamp=taut)),
        "bussi": (_ase_class("bussi", "Bussi"),
                  lambda c, a, dt: c(a, dt, temperature_K=T, taut=taut, rng=rng)),
        "berendsen": (_ase_class("nvtberendsen", "NVTBerendsen"),
                      lambda c, a, dt: c(a, dt, temperature_K=T, taut=taut)),
        "andersen": (_ase_class("andersen", "Andersen"),
                     lambda c, a, dt: c(a, dt, temperature_K=T,
                                        andersen_prob=p["friction"] * p["timestep"], rng=rng)),
    }
    return {k: (lambda a, dt, c=c, make=make: make(c, a, dt))
            for k, (c, make) in found.items() if c is not None}


def _npt_builders(p: dict) -> dict[str, Callable]:
    """Barostat name -> constructor(atoms, timestep); only those the installed ASE offers."""
    T, P = p["temperature"], p["pressure"] * units.GPa
    taut, taup = p["taut"] * units.fs, p["taup"] * units.fs
    found = {
        "mtk": (_ase_class("nose_hoover_chain", "MTKNPT"),
                lambda c, a, dt: c(a, dt, temperature_K=T, pressure_au=P, tdamp=taut, pdamp=taup)),
        "mtk-isotropic": (_ase_class("nose_hoover_chain", "IsotropicMTKNPT"),
                          lambda c, a, dt: c(a, dt, temperature_K=T, pressure_au=P, tdamp=taut,
                                             pdamp=taup)),
        "berendsen": (_ase_class("nptberendsen", "NPTBerendsen"),
                      lambda c, a, dt: c(a, dt, temperature_K=T, pressure_au=P, taut=taut,
                                         taup=taup, compressibility_au=4.57e-5 / units.bar)),
    }
    return {k: (lambda a, dt, c=c, make=make: make(c, a, dt))
            for k, (c, make) in found.items() if c is not None}


def available_integrators() -> dict[str, list[str]]:
    """Thermostat / barostat names usable here: {"nve": ["verlet"], "nvt": [...], "npt": [...]}."""
    p = dict(temperature=300.0, pressure=0.0, taut=100.0, taup=1000.0, friction=0.01,
             timestep=1.0, rng=None)
    return {"nve": ["verlet"], "nvt": sorted(_nvt_builders(p)), "npt": sorted(_npt_builders(p))}


def integrator(atoms: ase.Atoms, ensemble: str, thermostat: str | None, params: dict):
    """Constructor (atoms, timestep) -> ASE dynamics for `ensemble` and the named thermostat
    (or barostat); raises ValueError before anything runs if the choice is not possible."""
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    if ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet
    builders = (_nvt_builders if ensemble == "nvt" else _npt_builders)(params)
    name = thermostat or DEFAULT_THERMOSTAT[ensemble]
    if name not in builders:
        raise ValueError(f"{ensemble} thermostat {name!r} not available with this ASE; "
                         f"choose from {sorted(builders)}")
    if ensemble == "npt" and not np.all(atoms.pbc):
        raise ValueError("NPT needs a fully periodic structure")
    return builders[name]


@dataclasses.dataclass
class MDSummary:
    """Trace (every loginterval steps) and totals of a run.

    time_ps, temperature (K), potential / kinetic / total energy (eV), volume (A^3) per sample;
    wall_s, s_per_step, ns_per_day: the steps only; setup_s: the first force call before them
    (graph, compilation), not in wall_s; drift_mev_atom_ps: slope of the total energy (NVE
    check).
    """

    steps: int
    n_atoms: int
    timestep_fs: float
    time_ps: list = dataclasses.field(default_factory=list)
    temperature: list = dataclasses.field(default_factory=list)
    epot: list = dataclasses.field(default_factory=list)
    ekin: list = dataclasses.field(default_factory=list)
    volume: list = dataclasses.field(default_factory=list)
    wall_s: float = 0.0
    setup_s: float = 0.0

    @property
    def etot(self) -> np.ndarray:
        return np.asarray(self.epot) + np.asarray(self.ekin)

    @property
    def s_per_step(self) -> float:
        return self.wall_s / max(self.steps, 1)

    @property
    def ns_per_day(self) -> float:
        return self.timestep_fs * 1e-6 * 86400.0 / max(self.s_per_step, 1e-300)

    @property
    def drift_mev_atom_ps(self) -> float:
        return energy_drift(self.time_ps, self.etot, self.n_atoms)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(s_per_step=self.s_per_step, ns_per_day=self.ns_per_day,
                   drift_mev_atom_ps=self.drift_mev_atom_ps)
        return out


def energy_drift(time_ps, etot, n_atoms: int) -> float:
    """Least-squares slope of total energy vs time, meV/atom/ps (nan with < 2 samples)."""
    t, e = np.asarray(time_ps, np.float64), np.asarray(etot, np.float64)
    if len(t) < 2 or np.ptp(t) == 0:
        return float("nan")
    return float(np.polyfit(t, e, 1)[0] * 1000.0 / n_atoms)


def init_velocities(atoms: ase.Atoms, temperature: float, seed: int) -> None:
    """Maxwell-Boltzmann velocities at `temperature` K, no net momentum (or rotation, if not
    periodic), deterministic for `seed`."""
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    if len(atoms) > 1:
        vd.Stationary(atoms)
    if not np.any(atoms.pbc) and np.all(atoms.get_moments_of_inertia() > 1e-6):
        vd.ZeroRotation(atoms)


def _sampler(atoms: ase.Atoms, dyn, summary: MDSummary):
    def sample():
        summary.time_ps.append(dyn.get_time() / (1000.0 * units.fs))
        summary.temperature.append(float(atoms.get_temperature()))
        summary.epot.append(float(atoms.get_potential_energy()))
        summary.ekin.append(float(atoms.get_kinetic_energy()))
        summary.volume.append(float(abs(atoms.get_volume())) if np.all(atoms.pbc) else np.nan)
    return sample


def run_md(atoms: ase.Atoms, calculator=None, ensemble: str = "nve",
           thermostat: str | None = None, temperature: float = 300.0, timestep: float = 1.0,
           steps: int = 1000, pressure: float = 0.0, taut: float = 100.0, taup: float = 1000.0,
           friction: float = 0.01, trajectory: str | os.PathLike | None = None,
           logfile: str | None = None, loginterval: int = 10, seed: int = 0,
           velocities: bool = True, max_wall_s: float | None = None) -> MDSummary:
    """Run MD on `atoms` (modified in place) and return an MDSummary.

    calculator: an ASE calculator, or a model / path / name / None for a MatRISCalculator
    (kept if `atoms` already has one and calculator is None).  ensemble "nve" | "nvt" | "npt";
    thermostat: see `available_integrators()` (nvt default "langevin", npt default "mtk").
    velocities: draw Maxwell-Boltzmann velocities at `temperature` (seeded) unless the atoms
    already move.  trajectory: ASE .traj written every loginterval steps; logfile: ASE MD log
    ("-" = stdout).  max_wall_s: stop early (at a loginterval boundary) after this many seconds.
    """
    from .relax import as_calculator

    if calculator is not None or atoms.calc is None:
        atoms.calc = as_calculator(calculator)
    params = dict(temperature=temperature, pressure=pressure, taut=taut, taup=taup,
                  friction=friction, timestep=timestep, rng=np.random.default_rng(seed + 1))
    make = integrator(atoms, ensemble, thermostat, params)
    if velocities and not np.any(atoms.get_momenta()):
        init_velocities(atoms, temperature, seed)
    dyn = make(atoms, timestep * units.fs)
    summary = MDSummary(steps=0, n_atoms=len(atoms), timestep_fs=timestep)
    _attach_outputs(dyn, atoms, trajectory, logfile, loginterval)
    dyn.attach(_sampler(atoms, dyn, summary), interval=loginterval)
    # The first force call compiles (seconds); ASE caches its results, so the first step
    # reuses them and the per-step time below is the steady-state one.
    start = time.perf_counter()
    atoms.get_forces()
    summary.setup_s = time.perf_counter() - start
    start = time.perf_counter()
    while summary.steps < steps:
        chunk = min(loginterval, steps - summary.steps)
        dyn.run(chunk)
        summary.steps += chunk
        if max_wall_s is not None and time.perf_counter() - start > max_wall_s:
            break
    summary.wall_s = time.perf_counter() - start
    dyn.close()
    return summary


def _attach_outputs(dyn, atoms, trajectory, logfile, loginterval: int) -> None:
    if trajectory is not None:
        from ase.io.trajectory import Trajectory

        traj = Trajectory(os.fspath(trajectory), "w", atoms)
        dyn.attach(traj.write, interval=loginterval)
        dyn.closelater(traj)
    if logfile is not None:
        from ase.md import MDLogger

        logger = MDLogger(dyn, atoms, logfile, stress=False, peratom=True, mode="w")
        dyn.attach(logger, interval=loginterval)
        dyn.closelater(logger)
