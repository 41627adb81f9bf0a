"""The persistent compilation cache: a shape compiled once loads from disk in a new process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax

from matris import compile_cache

ROOT = Path(__file__).resolve().parents[1]

RUN = """
import json, jax, numpy as np
from ase.build import bulk
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name.endswith("cache_hits") else None)
import matris
atoms = bulk("Fe", "bcc", a=2.86, cubic=True) * (2, 1, 1)
atoms.rattle(0.05, seed=1)
atoms.calc = matris.MatRISCalculator(task="efs")  # (energy alone compiles in < 1 s: not cached)
f = atoms.get_forces()
print(json.dumps({"dir": jax.config.jax_compilation_cache_dir, "hits": len(hits),
                  "e": float(atoms.get_potential_energy()), "f": f.tolist()}))
"""


def run(env_update: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(env_update, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-c", RUN], env=env, capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_compiled_shape_from_disk(tmp_path):
    """First process: compiles and writes entries; second: reads them back (cache hits) and
    gives the same energy and forces; entries cut short are compiled again, with the same
    results.  MATRIS_XLA_CACHE=off leaves JAX's cache off."""
    cache = tmp_path / "xla"
    first = run({"MATRIS_XLA_CACHE": str(cache)})
    assert first["dir"] == str(cache) and first["hits"] == 0
    assert any(cache.iterdir()), "nothing was written to the cache"
    second = run({"MATRIS_XLA_CACHE": str(cache)})
    assert second["hits"] >= 1
    assert second["e"] == first["e"] and second["f"] == first["f"]
    for entry in cache.iterdir():  # entries cut short (a process killed while writing)
        if entry.is_file():
            entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 3])
    cut = run({"MATRIS_XLA_CACHE": str(cache)})
    assert cut["e"] == first["e"] and cut["f"] == first["f"]  # compiled again, same results
    code = ("import jax, matris; from matris.calculator import compiled_predictor; "
            "compiled_predictor(matris.load().config, 'efs'); "
            "print(jax.config.jax_compilation_cache_dir)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(MATRIS_XLA_CACHE="off", XDG_CACHE_HOME=str(tmp_path / "home"),
               PYTHONPATH=str(ROOT / "src"))
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert off == ["None"] and not (tmp_path / "home").exists()


def test_settings_and_an_unwritable_folder(tmp_path):
    """Default under XDG_CACHE_HOME; a folder JAX already uses is kept; a folder that cannot be
    created disables the cache instead of failing the calculation."""
    assert compile_cache.cache_dir_setting({"XDG_CACHE_HOME": "/x"}) == Path("/x/matris/xla")
    assert compile_cache.cache_dir_setting({"MATRIS_XLA_CACHE": "OFF"}) is None
    assert compile_cache.cache_dir_setting({"MATRIS_XLA_CACHE": str(tmp_path)}) == tmp_path
    assert compile_cache.enable(tmp_path / "other") == jax.config.jax_compilation_cache_dir
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = ("import jax; from matris import compile_cache as c; "
            f"print(c.enable({str(blocker / 'sub')!r}), jax.config.jax_compilation_cache_dir)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, PYTHONPATH=str(ROOT / "src")),
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["None", "None"]
