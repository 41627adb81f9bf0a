"""Release bundles: one ``.npz`` file with the config JSON and the parameters.

Readable with numpy alone (no orbax, no pickle).  Written atomically (temporary file in the
same folder, then ``os.replace``), so a crash never leaves a half-written bundle.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .config import MatRISConfig
from .potential import Model, init_params

FORMAT = "matris-jax-bundle-v1"
MODELS_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL = "matris-jax-default"
OFFICIAL_SUFFIXES = (".pth.tar", ".pth", ".pt", ".tar")


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested dict of leaves -> {"a/b/c": leaf}."""
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def unflatten(flat: dict[str, Any]) -> dict:
    """{"a/b/c": array} -> nested dict."""
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _text(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def save(model: Model, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` (a ``.npz`` bundle), atomically.  Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"params/{k}": np.asarray(v) for k, v in flatten(jax.device_get(model.params)).items()}
    arrays["__format__"] = _text(FORMAT)
    arrays["__config__"] = _text(json.dumps(model.config.to_dict()))
    arrays["__metadata__"] = _text(json.dumps(model.metadata, default=str))
    # A fresh name created at 0666 (the umask applies, as for any new file; mkstemp would
    # make it 0600, readable by its owner only).
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def expected_shapes(config: MatRISConfig) -> dict[str, tuple[int, ...]]:
    """Flat parameter names and shapes that ``config`` defines (traced, nothing computed)."""
    from ase.build import bulk

    from .graph import budgets_for, graph_for, pack

    graph = graph_for(bulk("Si", "diamond", a=5.43), config)
    batch, _ = pack([graph], budgets_for([graph]))
    shapes = jax.eval_shape(lambda: init_params(config, batch))
    return {k: tuple(v.shape) for k, v in flatten(shapes).items()}


def check_params(config: MatRISConfig, params: dict, source: str) -> None:
    """Raise ValueError naming ``source`` if ``params`` do not match ``config``'s shapes."""
    want = expected_shapes(config)
    have = {k: tuple(np.shape(v)) for k, v in flatten(params).items()}
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or extra or wrong:
        detail = [f"missing {missing[:5]}" if missing else "", f"unexpected {extra[:5]}" if extra else "",
                  ", ".join(f"{k}: {have[k]} != {want[k]}" for k in wrong[:5])]
        raise ValueError(f"{source}: parameters do not match the model config ("
                         + "; ".join(d for d in detail if d) + ")")


def read_bundle(path: str | os.PathLike) -> Model:
    """Load a ``.npz`` bundle written by :func:`save`, checking it against its config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model bundle")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, EOFError ...
        raise ValueError(f"{path}: not a readable MatRIS-JAX bundle ({type(exc).__name__}: {exc})") from exc
    if "__format__" not in arrays or bytes(arrays["__format__"]).decode() != FORMAT:
        raise ValueError(f"{path}: not a MatRIS-JAX bundle (missing or unknown __format__)")
    try:
        config = MatRISConfig.from_dict(json.loads(bytes(arrays["__config__"]).decode()))
        metadata = json.loads(bytes(arrays.get("__metadata__", _text("{}"))).decode())
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: corrupt bundle config ({exc})") from exc
    params = unflatten({k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")})
    check_params(config, params, str(path))
    dtype = np.dtype(config.dtype)
    params = jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), params)
    return Model(config, params, metadata)


def resolve(name_or_path: str | os.PathLike | None) -> Path:
    """A bundle path from a path, the name of a shipped model, or None (the default model)."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = MODELS_DIR / f"{name_or_path}.npz"
    if shipped.exists():
        return shipped
    known = sorted(p.stem for p in MODELS_DIR.glob("*.npz")) if MODELS_DIR.exists() else []
    raise FileNotFoundError(f"{name_or_path}: no such file or shipped model (shipped: {known})")


def load(name_or_path: str | os.PathLike | None = None, dtype: str | None = None) -> Model:
    """A ready model from a bundle, a shipped model name, or an official PyTorch checkpoint.

    With no argument, the model shipped in the repository.  ``dtype`` ("float32" |
    "float64") overrides the stored compute dtype.
    """
    path = resolve(name_or_path)
    if str(path).endswith(OFFICIAL_SUFFIXES):
        from .convert import load_official

        model = load_official(path)
    else:
        model = read_bundle(path)
    return model.astype(dtype) if dtype else model
