#!/usr/bin/env bash
# The scaling benchmark on a lent GPU machine (H100 / H200; Python 3.12 with jax+CUDA, flax,
# optax, orbax, numpy, scipy, matplotlib, psutil, pyyaml and tqdm already installed there).
# ase, matscipy and jraph travel as wheels in .whl/ (ignored by git, so name it in `carry`).
# Make them once, here, in the repository root:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       --platform manylinux1_x86_64 -d .whl \
#       ase==3.29.0 matscipy==1.3.1 jraph==0.0.6.dev0 pyyaml==6.0.4 tqdm==4.70.1
#
# Then on the device (run tool): command "bash benchmarks/gpu_bench.sh", carry [".whl"],
# timeout_s 420.  Results (JSON, Markdown, two PNGs, the log, nvidia-smi) land in $OUT
# (default benchmarks/results).  The whole script stays under about 6 minutes: the benchmark
# itself has a 4-minute budget (--budget-min) and a hard timeout of 5 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
LOG="$OUT/gpu_bench.log"

if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl 2>&1 | tee -a "$LOG" || exit 1
    export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1
python3 - <<'EOF' 2>&1 | tee -a "$LOG"
import jax, flax, optax, ase, matscipy, jraph, matris
print("jax", jax.__version__, "flax", flax.__version__, "devices", jax.devices())
EOF

# The GPU plan (chosen automatically when JAX sees a GPU): small (+ dense baseline) and 10m
# (plain and remat+scan), each up to the first size that runs out of device memory or its
# time budget.
timeout 300 python3 benchmarks/bench_scaling.py --gpu-plan --budget-min "${BUDGET_MIN:-4}" \
    --out "$OUT" 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
echo "bench_scaling exit status $status" | tee -a "$LOG"
exit "$status"
