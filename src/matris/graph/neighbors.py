"""Input validation, the model cell and the directed atom graph (design spec 1.1).

Conventions: a directed edge e = (i <- j, n) has centre i, neighbour j and integer image n;
its vector is x_e = r_i - (r_j + n @ cell) with lattice vectors as rows.  Edges are kept when
0 < |x_e| <= cutoff, the decision taken in float64 from the positions as given (not wrapped).
"""

from __future__ import annotations

from dataclasses import dataclass

import ase
import numpy as np
from matscipy.neighbours import neighbour_list

from .linegraph import angle_rows, pair_reverse_edges

MIN_DISTANCE = 0.1  # A: closer atoms (also through images) are rejected
MAX_Z = 94
_SCREEN_CUTOFF = 1.0  # A: neighbour search radius of the stand-alone distance check
_SEARCH_PAD = 1e-6  # A: matscipy keeps d < cutoff; search a little further, then filter d <= rc
_SINGULAR_TOL = 1e-6  # |det| / prod(lengths) (a sine) below which a set of vectors is singular
_MAX_SELF_IMAGES = 1e5  # more periodic images of one atom within the cutoff = absurd cell


@dataclass(frozen=True, eq=False)
class StructureGraph:
    """Host-side graphs of one structure (numpy).

    numbers [n] int32, positions [n,3] float64, cell [3,3] float64 (rows; the model cell, see
    `model_cell`), pbc [3] bool.
    centers, neighbors [e] int32; shifts [e,3] int32 (x_e = r_i - (r_j + n @ cell));
    edge_bond [e] int32 (d2u); bond_edge [u] int32 (u2d, the smaller directed index of a pair).
    angle_center, angle_bond_t, angle_bond_s, angle_edge_1, angle_edge_2 [a] int32 with
    d(edge_1) <= r3 and d(edge_2) < r3 (symmetric_angles: edge_1 < edge_2, both < r3).
    Edges sorted by (centre, neighbour, shift); angles by (centre, edge_1, edge_2).
    own_cell: the structure's own cell is non-singular and is the model cell (fully periodic,
    or a slab / wire / molecule in a box): stress is defined over its volume.  False when
    `model_cell` had to complete a singular cell (a molecule without cell): no stress.
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    centers: np.ndarray
    neighbors: np.ndarray
    shifts: np.ndarray
    edge_bond: np.ndarray
    bond_edge: np.ndarray
    angle_center: np.ndarray
    angle_bond_t: np.ndarray
    angle_bond_s: np.ndarray
    angle_edge_1: np.ndarray
    angle_edge_2: np.ndarray
    cutoff: float = 6.0
    three_body_cutoff: float = 4.0
    label: str = ""
    symmetric_angles: bool = False
    own_cell: bool = True

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def n_edges(self) -> int:
        return len(self.centers)

    @property
    def n_bonds(self) -> int:
        return len(self.bond_edge)

    @property
    def n_angles(self) -> int:
        return len(self.angle_center)

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        """(atoms, edges, bonds, angles)."""
        return self.n_atoms, self.n_edges, self.n_bonds, self.n_angles

    @property
    def angles_per_atom(self) -> np.ndarray:
        """[n] int: number of angles centred on each atom (k3 (k3 - 1) away from ties)."""
        return np.bincount(self.angle_center, minlength=self.n_atoms)

    def edge_vectors(self) -> np.ndarray:
        """[e,3] float64 x_e = r_i - (r_j + n @ cell)."""
        return edge_vectors(self.positions, self.cell, self.centers, self.neighbors, self.shifts)


def edge_vectors(positions, cell, centers, neighbors, shifts) -> np.ndarray:
    """[e,3] float64 edge vectors x_e = r_i - (r_j + n @ cell)."""
    pos = np.asarray(positions, np.float64)
    return pos[centers] - (pos[neighbors] + np.asarray(shifts, np.float64) @ cell)


def as_atoms(structure) -> ase.Atoms:
    """ase.Atoms from ase.Atoms (copied) or pymatgen Structure/Molecule (if pymatgen is present)."""
    if isinstance(structure, ase.Atoms):
        return structure.copy()
    if type(structure).__module__.startswith("pymatgen"):
        from pymatgen.io.ase import AseAtomsAdaptor  # optional dependency

        return AseAtomsAdaptor.get_atoms(structure)
    raise TypeError(f"expected ase.Atoms or a pymatgen structure, got {type(structure).__name__}")


def _fail(label: str, problem: str):
    raise ValueError(f"{label or 'structure'}: {problem}")


def _sine(vectors: np.ndarray) -> float:
    """sqrt(det Gram) / prod(lengths) of k row vectors [k,3]; 0 if any is zero, 1 if k = 0."""
    if len(vectors) == 0:
        return 1.0
    lengths = np.linalg.norm(vectors, axis=1)
    if np.any(lengths <= 1e-12):
        return 0.0
    unit = vectors / lengths[:, None]
    return float(np.sqrt(max(np.linalg.det(unit @ unit.T), 0.0)))


def has_own_cell(cell) -> bool:
    """Whether a [3,3] cell is non-singular, so that it is the model cell as given and stress
    is defined over its volume (`StructureGraph.own_cell`)."""
    return _sine(np.asarray(cell, np.float64)) >= _SINGULAR_TOL


def validate_atoms(atoms: ase.Atoms, label: str = "", check_distances: bool = True) -> None:
    """Raise ValueError '<label>: <problem>' for inputs the graph builder must not accept.

    Checks: empty, Z outside 1..MAX_Z, non-finite positions or cell, singular/degenerate cell on
    the periodic axes, and (if check_distances) two atoms closer than MIN_DISTANCE, also through
    periodic images (an atom and its own image included).
    """
    if len(atoms) == 0:
        _fail(label, "empty structure (no atoms)")
    numbers = atoms.numbers
    bad = np.nonzero((numbers < 1) | (numbers > MAX_Z))[0]
    if len(bad):
        _fail(label, f"atomic number {numbers[bad[0]]} of atom {bad[0]} outside 1..{MAX_Z}")
    pos = np.asarray(atoms.positions, np.float64)
    bad = np.nonzero(~np.all(np.isfinite(pos), axis=1))[0]
    if len(bad):
        _fail(label, f"non-finite position of atom {bad[0]}: {pos[bad[0]]}")
    cell = np.asarray(atoms.cell.array, np.float64)
    if not np.all(np.isfinite(cell)):
        _fail(label, f"non-finite cell {cell.tolist()}")
    pbc = np.asarray(atoms.pbc, bool)
    if _sine(cell[pbc]) < _SINGULAR_TOL:
        _fail(label, f"singular or degenerate cell on periodic axes {pbc.tolist()}: "
              f"{cell.tolist()}")
    if check_distances:
        mcell = model_cell(cell, pbc, pos)
        check_image_count(mcell, pbc, _SCREEN_CUTOFF, label)
        i, j, s = neighbour_list("ijS", positions=pos, cell=mcell, pbc=pbc,
                                 cutoff=max(_SCREEN_CUTOFF, MIN_DISTANCE))
        check_min_distance(edge_vectors(pos, mcell, i, j, s), i, j, s, label)


def check_min_distance(vectors, centers, neighbors, shifts, label: str = "") -> None:
    """Raise if any edge of [e,3] float64 vectors is shorter than MIN_DISTANCE."""
    d = np.linalg.norm(vectors, axis=1)
    bad = np.nonzero(d < MIN_DISTANCE)[0]
    if len(bad):
        e = bad[np.argmin(d[bad])]
        image = np.asarray(shifts[e]).tolist()
        _fail(label, f"atoms {centers[e]} and {neighbors[e]} (image {image}) are {d[e]:.4g} A "
              f"apart, closer than {MIN_DISTANCE} A")


def check_image_count(cell, pbc, cutoff: float, label: str = "") -> None:
    """Raise before the neighbour search if the periodic cell is so small that one atom would
    have more than _MAX_SELF_IMAGES images within the cutoff (k-ball volume / cell measure)."""
    periodic = np.asarray(cell, np.float64)[np.asarray(pbc, bool)]
    k = len(periodic)
    if k == 0:
        return
    measure = np.sqrt(max(np.linalg.det(periodic @ periodic.T), 0.0))
    ball = {1: 2.0 * cutoff, 2: np.pi * cutoff**2, 3: 4.0 / 3.0 * np.pi * cutoff**3}[k]
    if ball > _MAX_SELF_IMAGES * measure:
        _fail(label, f"periodic cell too small (measure {measure:.3g} A^{k}): about "
              f"{ball / max(measure, 1e-300):.3g} images of each atom within {cutoff} A")


def model_cell(cell, pbc, positions, cutoff: float = 6.0) -> np.ndarray:
    """[3,3] float64 cell for the graph and the model (stress volume); periodic rows untouched.

    If the given cell is non-singular it is kept.  Otherwise (a molecule without cell, a slab
    with a zero vector on its open axis, ...) every non-periodic row is replaced by an
    orthonormal completion of the periodic rows scaled to L = 2 (max_i |r_i - centroid| +
    cutoff), orientation chosen so det > 0.  Non-periodic rows carry no images, so they only
    enter the volume: stress on open axes is a placeholder.
    """
    cell = np.array(cell, np.float64)
    pbc = np.asarray(pbc, bool)
    if _sine(cell) >= _SINGULAR_TOL:
        return cell
    pos = np.asarray(positions, np.float64)
    size = 2.0 * (np.linalg.norm(pos - pos.mean(axis=0), axis=1).max() + cutoff)
    periodic = cell[pbc]
    if len(periodic):
        complement = np.linalg.svd(periodic)[2][len(periodic):]
    else:
        complement = np.eye(3)
    cell[~pbc] = complement * size
    if np.linalg.det(cell) < 0:
        cell[np.nonzero(~pbc)[0][-1]] *= -1.0
    return cell


def atom_graph(positions, cell, pbc, cutoff: float):
    """Directed edges within the cutoff, sorted by (centre, neighbour, shift).

    positions [n,3], cell [3,3] non-singular (see `model_cell`), pbc [3] bool.
    Returns centers [e] int32, neighbors [e] int32, shifts [e,3] int32, vectors [e,3] float64.
    matscipy handles cells smaller than the cutoff (many images, self-images) and unwrapped
    positions; its strict '<' is widened by _SEARCH_PAD and refiltered with '<=' here.
    """
    pos = np.asarray(positions, np.float64)
    i, j, s = neighbour_list("ijS", positions=pos, cell=np.asarray(cell, np.float64),
                             pbc=np.asarray(pbc, bool), cutoff=cutoff + _SEARCH_PAD)
    vec = edge_vectors(pos, cell, i, j, s)
    d = np.linalg.norm(vec, axis=1)
    # Drop only an atom paired with itself (no shift): two distinct atoms at the same point
    # stay, so that `check_min_distance` rejects them instead of silently ignoring the pair.
    self_pair = (i == j) & np.all(s == 0, axis=1)
    keep = np.nonzero(~self_pair & (d <= cutoff))[0]
    order = keep[np.lexsort((s[keep, 2], s[keep, 1], s[keep, 0], j[keep], i[keep]))]
    return (i[order].astype(np.int32), j[order].astype(np.int32),
            s[order].astype(np.int32), vec[order])


def build_graph(structure, cutoff: float = 6.0, three_body_cutoff: float = 4.0,
                label: str = "", symmetric_angles: bool = False) -> StructureGraph:
    """Validate a structure and build its atom graph, bonds and angles (spec 1.1-1.2).

    structure: ase.Atoms (periodic, mixed PBC or molecule) or pymatgen Structure/Molecule.
    label names the structure in error messages (e.g. "data/train.extxyz:17").
    symmetric_angles: one angle row per unordered pair of edges (`angle_pairs`).
    """
    if not 0.0 < three_body_cutoff <= cutoff:
        raise ValueError(f"need 0 < three_body_cutoff ({three_body_cutoff}) <= cutoff ({cutoff})")
    atoms = as_atoms(structure)
    validate_atoms(atoms, label, check_distances=cutoff < MIN_DISTANCE)
    pos = np.asarray(atoms.positions, np.float64)
    pbc = np.asarray(atoms.pbc, bool)
    own_cell = has_own_cell(atoms.cell.array)
    cell = model_cell(atoms.cell.array, pbc, pos, cutoff)
    check_image_count(cell, pbc, cutoff, label)
    centers, neighbors, shifts, vec = atom_graph(pos, cell, pbc, cutoff)
    check_min_distance(vec, centers, neighbors, shifts, label)
    edge_bond, bond_edge = pair_reverse_edges(centers, neighbors, shifts, label)
    rows = angle_rows(centers, np.linalg.norm(vec, axis=1), edge_bond, len(atoms),
                      three_body_cutoff, symmetric_angles)
    return StructureGraph(
        numbers=atoms.numbers.astype(np.int32), positions=pos, cell=cell, pbc=pbc,
        centers=centers, neighbors=neighbors, shifts=shifts, edge_bond=edge_bond,
        bond_edge=bond_edge, **rows, cutoff=float(cutoff),
        three_body_cutoff=float(three_body_cutoff), label=label,
        symmetric_angles=bool(symmetric_angles), own_cell=bool(own_cell))


def graph_for(structure, config, label: str = "") -> StructureGraph:
    """`build_graph` with a model config's graph settings (cutoff, three_body_cutoff,
    symmetric_angles): the one way a model's input graph is built."""
    return build_graph(structure, config.cutoff, config.three_body_cutoff, label,
                       getattr(config, "symmetric_angles", False))
