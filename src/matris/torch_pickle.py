"""Read a PyTorch checkpoint (``torch.save`` zip format) into numpy without torch.

Only what model checkpoints contain is supported: tensors and parameters (rebuilt from their
storages), plain containers and ``collections.OrderedDict``.  Anything else in the pickle is
refused by name, so a crafted file cannot run code through this reader.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        if name == "BFloat16Storage":
            import ml_dtypes  # shipped with jax

            self.dtype = np.dtype(ml_dtypes.bfloat16)
        else:
            self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """numpy view of ``storage`` with torch's (offset, size, stride) in elements."""
    item = storage.dtype.itemsize
    if not size:
        return storage[offset].copy() if storage.size else np.zeros((), storage.dtype)
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride))
    return np.array(view)


def _rebuild_parameter(data, *unused):
    return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, handle, archive: zipfile.ZipFile, prefix: str, source: str):
        super().__init__(handle)
        self.archive, self.prefix, self.source = archive, prefix, source

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and (name in _STORAGE_DTYPES or name == "BFloat16Storage"):
            return _StorageType(name)
        if module == "torch" and name in ("float32", "float64", "int64"):
            return name
        raise pickle.UnpicklingError(f"{self.source}: refusing to load {module}.{name}")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"{self.source}: unknown persistent id {kind!r}")
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else np.dtype(
            np.float32)
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        return np.frombuffer(raw, dtype=dtype, count=numel)


def load_torch_checkpoint(path: str | Path) -> Any:
    """The object saved by ``torch.save`` (zip format), tensors as numpy arrays."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path}: not a PyTorch zip checkpoint ({exc})") from exc
    with archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if not pkl:
            raise ValueError(f"{path}: no data.pkl inside; not a PyTorch checkpoint")
        prefix = pkl[0][: -len("/data.pkl")]
        with archive.open(pkl[0]) as handle:
            try:
                return _Unpickler(handle, archive, prefix, str(path)).load()
            except (pickle.UnpicklingError, KeyError, EOFError, ValueError) as exc:
                raise ValueError(f"{path}: corrupt PyTorch checkpoint ({exc})") from exc
