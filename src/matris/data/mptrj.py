"""Streaming reader for the MPtrj JSON (about 11 GB: never loaded whole).

Layout: {material_id: {frame_id: {"structure": pymatgen Structure dict,
"uncorrected_total_energy", "corrected_total_energy", "energy_per_atom", "force" [n,3] eV/A,
"stress" [3,3] kBar (VASP sign), "magmom" [n] or null, ...}}}.
The top-level object is decoded one material at a time with json.JSONDecoder.raw_decode over a
growing text buffer; pymatgen is not needed (lattice.matrix + sites[*].xyz/abc + element).
Stress: kBar * -0.1 = GPa with ASE sign, / 160.2177 = eV/A^3.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from typing import Iterator

import ase
import numpy as np
from ase.data import atomic_numbers

from .frames import EV_PER_A3_IN_GPA, Frame, make_frame

KBAR_TO_EV_A3 = -0.1 / EV_PER_A3_IN_GPA  # VASP kBar (compressive positive) -> eV/A^3 ASE sign
_ENERGY_KEYS = {"uncorrected": "uncorrected_total_energy", "corrected": "corrected_total_energy"}
_WS = re.compile(r"[\s,]*")


def _open_text(path: str):
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(
        path, encoding="utf-8")


def iter_json_object(path, chunk_size: int = 1 << 20) -> Iterator[tuple[str, object]]:
    """Yield (key, value) of a top-level JSON object one member at a time.

    Only one member (plus one chunk) is held in memory.  Raises ValueError naming the path and
    the member number for malformed input.
    """
    path = os.fspath(path)
    decoder = json.JSONDecoder()
    with _open_text(path) as fh:
        buf, pos, eof, member = "", 0, False, 0

        def more(size: int) -> bool:
            nonlocal buf, pos, eof
            text = fh.read(size)
            buf, pos, eof = buf[pos:] + text, 0, text == ""
            return not eof

        def skip_ws():
            nonlocal pos
            while True:
                pos = _WS.match(buf, pos).end()
                if pos < len(buf) or not more(chunk_size):
                    return

        def decode():
            nonlocal pos
            size = chunk_size
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                    if end < len(buf) or eof:  # a number may continue past the buffer end
                        pos = end
                        return value
                except json.JSONDecodeError as err:
                    if eof:
                        raise ValueError(f"{path}: member {member}: malformed JSON ({err.msg})"
                                         ) from err
                more(size)
                size *= 2

        skip_ws()
        if buf[pos:pos + 1] != "{":
            raise ValueError(f"{path}: expected a JSON object at the top level")
        pos += 1
        while True:
            skip_ws()
            if buf[pos:pos + 1] == "}":
                return
            if eof:
                raise ValueError(f"{path}: member {member}: unexpected end of file")
            key = decode()
            skip_ws()
            if buf[pos:pos + 1] != ":" or not isinstance(key, str):
                raise ValueError(f"{path}: member {member}: expected 'key: value'")
            pos += 1
            skip_ws()
            yield key, decode()
            member += 1


def structure_dict_to_atoms(struct: dict, label: str = "") -> ase.Atoms:
    """ase.Atoms from a pymatgen Structure.as_dict() (ordered sites only; xyz or abc)."""
    try:
        cell = np.asarray(struct["lattice"]["matrix"], np.float64).reshape(3, 3)
        pbc = struct["lattice"].get("pbc", (True, True, True))
        numbers, xyz = [], []
        for k, site in enumerate(struct["sites"]):
            species = site["species"]
            if len(species) != 1 or abs(float(species[0].get("occu", 1.0)) - 1.0) > 1e-6:
                raise ValueError(f"site {k} is disordered ({species})")
            element = re.match(r"[A-Z][a-z]?", str(species[0]["element"]))
            if element is None or element.group(0) not in atomic_numbers:
                raise ValueError(f"site {k}: unknown element {species[0]['element']!r}")
            numbers.append(atomic_numbers[element.group(0)])
            xyz.append(site["xyz"] if "xyz" in site else np.asarray(site["abc"]) @ cell)
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{label}: malformed structure dict ({type(err).__name__}: {err})"
                         ) from err
    except ValueError as err:
        raise ValueError(f"{label}: {err}") from err
    return ase.Atoms(numbers=numbers, positions=np.asarray(xyz, np.float64).reshape(-1, 3),
                     cell=cell, pbc=pbc)


def mptrj_frame(material_id: str, frame_id: str, entry: dict, source: str,
                energy: str = "uncorrected", validate: bool = True) -> Frame:
    """Frame from one MPtrj entry; info gets material_id, frame_id, family=material_id."""
    if not isinstance(entry, dict) or "structure" not in entry:
        raise ValueError(f"{source}: entry has no 'structure'")
    atoms = structure_dict_to_atoms(entry["structure"], source)
    stress = entry.get("stress")
    info = {"material_id": material_id, "frame_id": frame_id, "family": material_id}
    for key in ("mp_id", "bandgap", "energy_per_atom", "ef_per_atom", "uncorrected_total_energy",
                "corrected_total_energy"):
        if entry.get(key) is not None:
            info[key] = entry[key]
    return make_frame(
        atoms, energy=entry.get(_ENERGY_KEYS[energy]), forces=entry.get("force"),
        stress=None if stress is None else np.asarray(stress, np.float64) * KBAR_TO_EV_A3,
        magmoms=entry.get("magmom"), source=source, info=info, validate=validate)


def iter_mptrj(path, energy: str = "uncorrected", limit: int | None = None,
               validate: bool = True) -> Iterator[Frame]:
    """Stream Frames from an MPtrj JSON (plain or .gz); source "<path>:<material>/<frame>".

    energy: "uncorrected" (uncorrected_total_energy) or "corrected" (corrected_total_energy).
    limit: stop after this many frames.
    """
    if energy not in _ENERGY_KEYS:
        raise ValueError(f"energy must be one of {sorted(_ENERGY_KEYS)}, got {energy!r}")
    path, count = os.fspath(path), 0
    for material_id, frames in iter_json_object(path):
        if not isinstance(frames, dict):
            raise ValueError(f"{path}:{material_id}: expected an object of frames")
        for frame_id, entry in frames.items():
            if limit is not None and count >= limit:
                return
            source = f"{path}:{material_id}/{frame_id}"
            yield mptrj_frame(material_id, frame_id, entry, source, energy, validate)
            count += 1


def read_mptrj(path, energy: str = "uncorrected", limit: int | None = None,
               validate: bool = True) -> list[Frame]:
    """All (or the first `limit`) frames of an MPtrj JSON as a list."""
    return list(iter_mptrj(path, energy, limit, validate))
