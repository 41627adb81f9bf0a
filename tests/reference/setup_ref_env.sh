#!/usr/bin/env bash
# Create the reference environment that holds the official PyTorch MatRIS (PyPI `matris==0.1.0`).
#
# Usage:  bash tests/reference/setup_ref_env.sh [VENV_DIR]
#         VENV_DIR defaults to `.venv-ref` relative to the repository root.
#
# The official package imports as `matris`, exactly like this project, so it must never be
# installed into the project's own .venv: it lives in its own Python 3.11 virtual environment.
#
# torch is pinned to exactly 2.13.0. On this project's machines a CPU build of that release
# lies on disk (pip's configured find-links, normally /opt/wheels); it is used when found
# (or when $TORCH_WHEEL names a wheel file). Otherwise pip asks the index for torch==2.13.0,
# which on PyPI is a CUDA build of several GB: it still works, it is just big.
#
# Idempotent: when VENV_DIR already imports matris 0.1.0 and torch 2.13.0 nothing is done.
# Environment knobs: PYTHON (interpreter, default python3.11), TORCH_WHEEL (path to a wheel).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
VENV_ARG="${1:-.venv-ref}"
case "${VENV_ARG}" in
  /*) VENV_DIR="${VENV_ARG}" ;;
  *) VENV_DIR="${REPO_ROOT}/${VENV_ARG}" ;;
esac
PYTHON_BIN="${PYTHON:-python3.11}"

TORCH_VERSION="2.13.0"
MATRIS_VERSION="0.1.0"
# Versions of the official package's run-time dependencies, pinned so that the reference
# numbers (pymatgen's neighbour list in particular) do not drift between machines. These are
# the versions pip resolved (2026-11) for Python 3.11 next to torch 2.13.0.
PINNED_DEPS=(
  "numpy==2.4.6"
  "scipy==1.17.1"
  "ase==3.29.0"
  "pymatgen==2026.10.24"
  "pymatgen-core==2026.10.16"
)

fail() {
  echo "setup_ref_env.sh: ERROR: $*" >&2
  exit 1
}
trap 'rc=$?; echo "setup_ref_env.sh: FAILED (line ${LINENO}, exit ${rc}); the reference env at ${VENV_DIR} is incomplete" >&2' ERR

check_env() {
  # Exit 0 when the venv imports torch 2.13.0 (any local build label) and matris 0.1.0.
  [ -x "${VENV_DIR}/bin/python" ] || return 1
  "${VENV_DIR}/bin/python" - "${TORCH_VERSION}" "${MATRIS_VERSION}" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
import torch  # noqa: F401
import matris  # noqa: F401
from matris.model import MatRIS  # noqa: F401
tv, mv = sys.argv[1], sys.argv[2]
ok = torch.__version__.split("+")[0] == tv and version("matris") == mv
sys.exit(0 if ok else 1)
PY
}

if check_env; then
  echo "setup_ref_env.sh: ${VENV_DIR} already has torch ${TORCH_VERSION} and matris ${MATRIS_VERSION}; nothing to do."
  exit 0
fi

command -v "${PYTHON_BIN}" >/dev/null 2>&1 || fail "${PYTHON_BIN} not found (set PYTHON=/path/to/python3.11)"
PYVER="$("${PYTHON_BIN}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "${PYVER}" = "3.11" ] || fail "${PYTHON_BIN} is Python ${PYVER}; the reference env needs Python 3.11"

if [ ! -x "${VENV_DIR}/bin/python" ]; then
  echo "setup_ref_env.sh: creating ${VENV_DIR} with ${PYTHON_BIN}"
  "${PYTHON_BIN}" -m venv "${VENV_DIR}" || fail "could not create venv at ${VENV_DIR}"
fi
VPY="${VENV_DIR}/bin/python"

# A constraints file keeps every later resolution on torch==2.13.0, so nothing can pull a
# different (multi-GB) torch build as a side effect.
CONSTRAINTS="$(mktemp)"
trap 'rm -f "${CONSTRAINTS}"' EXIT
printf 'torch==%s\n' "${TORCH_VERSION}" >"${CONSTRAINTS}"
for dep in "${PINNED_DEPS[@]}"; do printf '%s\n' "${dep}" >>"${CONSTRAINTS}"; done

# 1. torch: prefer the CPU wheel on disk.
TORCH_SPEC="torch==${TORCH_VERSION}"
if [ -n "${TORCH_WHEEL:-}" ]; then
  [ -f "${TORCH_WHEEL}" ] || fail "TORCH_WHEEL=${TORCH_WHEEL} does not exist"
  TORCH_SPEC="${TORCH_WHEEL}"
else
  for d in ${PIP_FIND_LINKS:-} /opt/wheels; do
    for w in "${d}"/torch-"${TORCH_VERSION}"+cpu-cp311-cp311-*.whl; do
      if [ -f "${w}" ]; then TORCH_SPEC="${w}"; break 2; fi
    done
  done
fi
if [ "${TORCH_SPEC}" = "torch==${TORCH_VERSION}" ]; then
  echo "setup_ref_env.sh: WARNING: no local CPU wheel of torch ${TORCH_VERSION} found;" \
       "asking the index for torch==${TORCH_VERSION} (may be a multi-GB CUDA build)" >&2
fi
echo "setup_ref_env.sh: installing torch from ${TORCH_SPEC}"
"${VPY}" -m pip install -q --disable-pip-version-check -c "${CONSTRAINTS}" "${TORCH_SPEC}" \
  || fail "pip could not install torch ${TORCH_VERSION}"

# 2. The official package's other run-time deps (metadata: ase>=3.23, numpy>=2, pymatgen>=2024.9.10,
#    torch>=2.6). Installed explicitly and pinned; Cython is NOT needed (the wheel ships no
#    cygraph extension, so the package uses its pure-Python graph builder).
echo "setup_ref_env.sh: installing ${PINNED_DEPS[*]}"
"${VPY}" -m pip install -q --disable-pip-version-check -c "${CONSTRAINTS}" "${PINNED_DEPS[@]}" \
  || fail "pip could not install the official package's dependencies"

# 3. matris itself, without letting its metadata touch torch (all its deps are in place now).
echo "setup_ref_env.sh: installing matris==${MATRIS_VERSION} (--no-deps)"
"${VPY}" -m pip install -q --disable-pip-version-check --no-deps "matris==${MATRIS_VERSION}" \
  || fail "pip could not install matris==${MATRIS_VERSION}"
"${VPY}" -m pip check >/dev/null 2>&1 || {
  "${VPY}" -m pip check >&2 || true
  fail "pip check reports broken requirements in ${VENV_DIR}"
}

if check_env; then
  "${VPY}" - <<'PY'
import torch, numpy, ase, pymatgen.core
from importlib.metadata import version
print(f"setup_ref_env.sh: OK: torch {torch.__version__}, matris {version('matris')}, "
      f"numpy {numpy.__version__}, ase {ase.__version__}, pymatgen {version('pymatgen')}")
PY
else
  fail "the env at ${VENV_DIR} still does not import torch ${TORCH_VERSION} + matris ${MATRIS_VERSION}"
fi
