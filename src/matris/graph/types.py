"""Array containers shared by graph building, batching, the model and training.

Shapes: N atoms, E directed edges, U undirected bonds, A angles, G graphs (structures),
each a padded budget.  Padding rules (written once here, relied on everywhere):

* Every budget is at least one larger than the real count, so there is always one padding
  atom, edge, bond, angle and graph.  The padding graph is the last graph (index G-1) and owns
  every padding atom.
* Padding atoms: number 0, position 0, ``node_graph = G-1``.
* Padding edges: centre = neighbour = N-1 (a padding atom), shift (1, 0, 0) so their length is
  the padding cell's first vector (never zero), bond = U-1 (a padding bond).
* Padding bonds: ``bond_edge = E-1`` (a padding edge).
* Padding angles: centre N-1, bonds U-1, edges E-1.
* Padding graph cell: identity (unit volume).
Padded rows therefore only ever point at padding rows, and the masks say which rows are real.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jraph
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class GraphBatch:
    """A padded batch of structures: a ``jraph.GraphsTuple`` plus bond and angle indices.

    graphs.nodes   : {"positions": [N,3] float, "numbers": [N] int32}
    graphs.edges   : {"shift": [E,3] float  integer image vector n of the neighbour,
                      "bond": [E] int32       d2u: undirected bond of each directed edge}
    graphs.receivers : [E] int32 centre atom i of edge e = (i <- j, n)
    graphs.senders   : [E] int32 neighbour atom j
    graphs.globals : {"cell": [G,3,3] float, lattice vectors as rows}
    graphs.n_node, graphs.n_edge : [G] int32
    node_graph  : [N] int32  structure index of every atom
    bond_edge   : [U] int32  u2d: representative (smaller-index) directed edge of each bond
    angle_center: [A] int32  centre atom c
    angle_bond_t: [A] int32  bond of the first edge (d <= r3): line-graph target T(a)
    angle_bond_s: [A] int32  bond of the second edge (d < r3): line-graph source S(a)
    angle_edge_1, angle_edge_2: [A] int32 the two directed edges
    n_bond, n_angle : [G] int32
    *_mask : bool, True for real rows.
    symmetric_angles : static (part of the pytree structure, not an array): the angle rows
                      are unordered pairs (edge_1 < edge_2) instead of ordered ones.  A model
                      refuses a batch whose rows are not the kind it was built for.
    Edge vector: x_e = pos[receiver] - (pos[sender] + shift @ cell[graph]).
    """

    graphs: jraph.GraphsTuple
    node_graph: np.ndarray
    bond_edge: np.ndarray
    angle_center: np.ndarray
    angle_bond_t: np.ndarray
    angle_bond_s: np.ndarray
    angle_edge_1: np.ndarray
    angle_edge_2: np.ndarray
    n_bond: np.ndarray
    n_angle: np.ndarray
    node_mask: np.ndarray
    edge_mask: np.ndarray
    bond_mask: np.ndarray
    angle_mask: np.ndarray
    graph_mask: np.ndarray
    symmetric_angles: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @property
    def positions(self):
        return self.graphs.nodes["positions"]

    @property
    def numbers(self):
        return self.graphs.nodes["numbers"]

    @property
    def cell(self):
        return self.graphs.globals["cell"]

    @property
    def centers(self):
        return self.graphs.receivers

    @property
    def neighbors(self):
        return self.graphs.senders

    @property
    def edge_bond(self):
        return self.graphs.edges["bond"]

    @property
    def shifts(self):
        return self.graphs.edges["shift"]


class Targets(NamedTuple):
    """Padded training labels aligned with a GraphBatch (zeros where absent or padded).

    energy  : [G]     total energy, eV
    forces  : [N,3]   eV/A
    stress  : [G,3,3] eV/A^3, ASE sign (positive = tensile)
    magmoms : [N]     muB
    has_energy, has_forces, has_stress, has_magmoms : [G] bool, per structure
    """

    energy: np.ndarray
    forces: np.ndarray
    stress: np.ndarray
    magmoms: np.ndarray
    has_energy: np.ndarray
    has_forces: np.ndarray
    has_stress: np.ndarray
    has_magmoms: np.ndarray


class Budgets(NamedTuple):
    """Padded sizes of a batch; each must exceed the real count by at least one."""

    atoms: int
    edges: int
    bonds: int
    angles: int
    graphs: int
