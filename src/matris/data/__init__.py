"""Labelled structures and their readers/writers (extended XYZ, streamed MPtrj), datasets."""

from .dataset import (
    Dataset,
    DatasetStats,
    composition_fractions,
    fit_reference_energies,
    read_frames,
)
from .extxyz import (
    frame_from_atoms,
    frame_to_atoms,
    read_extxyz,
    read_structures,
    write_extxyz,
)
from .frames import EV_PER_A3_IN_GPA, Frame, make_frame, stress_3x3
from .mptrj import (
    KBAR_TO_EV_A3,
    iter_json_object,
    iter_mptrj,
    mptrj_frame,
    read_mptrj,
    structure_dict_to_atoms,
)

__all__ = [
    "Dataset", "DatasetStats", "EV_PER_A3_IN_GPA", "Frame", "KBAR_TO_EV_A3",
    "composition_fractions", "fit_reference_energies", "frame_from_atoms", "frame_to_atoms",
    "iter_json_object", "iter_mptrj", "make_frame", "mptrj_frame", "read_extxyz", "read_frames",
    "read_mptrj", "read_structures", "stress_3x3", "structure_dict_to_atoms", "write_extxyz",
]
