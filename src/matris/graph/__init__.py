"""Graph construction (atom graph, bonds, angles) and host-side padded batching."""

from .batch import (
    FINE_BUCKETS_FROM,
    bucket,
    budgets_for,
    check_fits,
    graph_sizes,
    iterate_batches,
    pack,
    pack_targets,
    training_budgets,
)
from .linegraph import angle_cosines, angle_pairs, angle_rows, pair_reverse_edges
from .neighbors import (
    MAX_Z,
    MIN_DISTANCE,
    StructureGraph,
    as_atoms,
    atom_graph,
    build_graph,
    check_image_count,
    check_min_distance,
    edge_vectors,
    graph_for,
    model_cell,
    validate_atoms,
)
from .types import Budgets, GraphBatch, Targets

__all__ = [
    "Budgets", "FINE_BUCKETS_FROM", "GraphBatch", "MAX_Z", "MIN_DISTANCE", "StructureGraph", "Targets",
    "angle_cosines", "angle_pairs", "angle_rows", "as_atoms", "atom_graph", "bucket",
    "budgets_for", "build_graph", "graph_for", "check_fits", "check_image_count",
    "check_min_distance", "edge_vectors", "graph_sizes",
    "iterate_batches", "model_cell", "pack", "pack_targets", "pair_reverse_edges",
    "training_budgets", "validate_atoms",
]
