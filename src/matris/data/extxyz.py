"""Extended-XYZ reading and writing through ase.io (plain or compressed, e.g. .gz).

Label lookup per frame: an explicit key is searched in atoms.info, atoms.arrays, then the
calculator results ase attached; without a key, `REF_<name>` first, then the calculator result
(energy, forces, stress, magmoms).  Stress may be Voigt-6 (ASE order xx yy zz yz xz xy), 3x3 or
9 numbers.  `write_extxyz` writes REF_energy, REF_forces, REF_stress (9 numbers), REF_magmoms.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
from typing import Sequence

import ase
import ase.io
import numpy as np
from ase.io.formats import filetype, string2index

from .frames import Frame, make_frame

LABELS = ("energy", "forces", "stress", "magmoms")


def _lookup(atoms: ase.Atoms, key: str | None, name: str):
    """(value or None, key found or None) for label `name` under `key` or the defaults."""
    results = atoms.calc.results if atoms.calc is not None else {}
    if key is not None:
        for store in (atoms.info, atoms.arrays, results):
            if key in store:
                return store[key], key
        return None, None
    ref = f"REF_{name}"
    for store in (atoms.info, atoms.arrays):
        if ref in store:
            return store[ref], ref
    if name in results:
        return results[name], name
    return None, None


def frame_from_atoms(atoms: ase.Atoms, source: str, keys: dict | None = None,
                     validate: bool = True) -> Frame:
    """Frame from an ase.Atoms read from a file; keys maps label name -> key (or None)."""
    keys = keys or {}
    values, used = {}, set()
    for name in LABELS:
        values[name], key = _lookup(atoms, keys.get(name), name)
        used.add(key)
    info = {k: v for k, v in atoms.info.items() if k not in used}
    bare = atoms.copy()
    bare.calc = None
    for key in used - {None}:
        bare.info.pop(key, None)
        if key in bare.arrays and key not in ("numbers", "positions"):
            del bare.arrays[key]
    return make_frame(bare, **values, source=source, info=info, validate=validate)


def _selection(index):
    """(ase index for iread, function k -> file index or None if unknown)."""
    idx = string2index(index) if isinstance(index, str) else index
    if isinstance(idx, int):
        return idx, (lambda k: idx) if idx >= 0 else (lambda k: None)
    start, step = idx.start or 0, idx.step or 1
    if start >= 0 and step > 0:
        return idx, lambda k: start + k * step
    return idx, lambda k: None


def _text_source(path: str):
    """A compressed file decompressed into memory (ASE's reader seeks back for every frame,
    which restarts gzip decompression each time: minutes instead of a second); plain files
    are passed through by name."""
    openers = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
    opener = openers.get(os.path.splitext(path)[1])
    if opener is None:
        return path
    try:
        with opener(path, "rt") as handle:
            return io.StringIO(handle.read())
    except (OSError, EOFError, lzma.LZMAError) as err:
        raise ValueError(f"{path}: cannot decompress ({type(err).__name__}: {err})") from err


def read_extxyz(path, index=":", energy_key: str | None = None, forces_key: str | None = None,
                stress_key: str | None = None, magmoms_key: str | None = None,
                validate: bool = True) -> list[Frame]:
    """Read frames (ase index syntax: ":", "3", "0:10:2", int or slice) as Frames.

    Each Frame.source is "<path>:<file index>" (or "<path>:@<k>" for negative selections).
    Raises ValueError naming path and index for a malformed frame or bad content.
    """
    path = os.fspath(path)
    keys = {"energy": energy_key, "forces": forces_key, "stress": stress_key,
            "magmoms": magmoms_key}
    idx, file_index = _selection(index)
    frames = []
    reader = ase.io.iread(_text_source(path), index=idx, format="extxyz")
    k = 0
    while True:
        where = file_index(k)
        label = f"{path}:{where if where is not None else '@%d' % k}"
        try:
            atoms = next(reader)
        except StopIteration:
            break
        except Exception as err:  # ase raises many types for broken lines
            raise ValueError(f"{label}: malformed extxyz frame ({type(err).__name__}: {err})"
                             ) from err
        frames.append(frame_from_atoms(atoms, label, keys, validate))
        k += 1
    return frames


def read_structures(path, index=":") -> list[ase.Atoms]:
    """Structures of any format ase reads (index syntax as `read_extxyz`), for prediction,
    relaxation and MD.  Raises FileNotFoundError for a missing file and ValueError naming the
    file and the frame for unreadable content (ase itself raises many exception types)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    out, k = [], 0
    source, fmt = _text_source(path), None
    if not isinstance(source, str):  # compressed: ase cannot guess the format of a stream
        try:
            fmt = filetype(path)
        except Exception as err:  # noqa: BLE001 - unknown or unreadable format
            raise ValueError(f"{path}: cannot tell the file format ({type(err).__name__}: "
                             f"{err})") from err
    reader = ase.io.iread(source, index=index, format=fmt)
    while True:
        try:
            atoms = next(reader)
        except StopIteration:
            break
        except Exception as err:  # noqa: BLE001 - ase raises many types for broken files
            raise ValueError(f"{path}: cannot read structure {k} of the selection {index!r} "
                             f"({type(err).__name__}: {err})") from err
        out.append(atoms)
        k += 1
    if not out:
        raise ValueError(f"{path}: no structures (selection {index!r})")
    return out


def _jsonable(value) -> bool:
    return isinstance(value, (str, int, float, bool, np.integer, np.floating, np.ndarray,
                              list, tuple))


def frame_to_atoms(frame: Frame) -> ase.Atoms:
    """ase.Atoms carrying the frame's labels as REF_* info/arrays (no calculator)."""
    atoms = frame.atoms.copy()
    atoms.calc = None
    atoms.info = {k: v for k, v in frame.info.items() if _jsonable(v)}
    if frame.energy is not None:
        atoms.info["REF_energy"] = float(frame.energy)
    if frame.stress is not None:
        atoms.info["REF_stress"] = " ".join(repr(float(x)) for x in
                                            np.asarray(frame.stress).reshape(-1))
    if frame.forces is not None:
        atoms.arrays["REF_forces"] = np.asarray(frame.forces, np.float64).reshape(-1, 3)
    if frame.magmoms is not None:
        atoms.arrays["REF_magmoms"] = np.asarray(frame.magmoms, np.float64).reshape(-1)
    return atoms


def write_extxyz(path, frames: Sequence[Frame], append: bool = False) -> None:
    """Write frames with REF_* labels (stress as 9 numbers, eV/A^3, ASE sign)."""
    ase.io.write(os.fspath(path), [frame_to_atoms(f) for f in frames], format="extxyz",
                 append=append)
