# MatRIS-JAX.  On a fresh clone `make train` and `make test` install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
REF_VENV := .venv-ref
REF_STAMP := $(REF_VENV)/.installed-stamp
# tests/conftest.py sets XLA_FLAGS (two forced CPU devices, fast compiles) unless already set
TEST_ENV := OPENBLAS_NUM_THREADS=1
CONFIG ?= experiments/default.yaml
# 2 MiB pages for XLA's large per-call buffers (src/matris/runtime.py): fewer page faults,
# 15-20 % faster force calls and training steps on CPU.  Harmless where unsupported.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: help venv ref-env test test-all train bench-scaling bench-train bench-train-ab bench-profile bench-graph lint clean-venv

help:
	@echo "make train          install (.venv), train the default model on data/, write a bundle"
	@echo "make test           install, then the default test suite (includes official-parity tests)"
	@echo "make test-all       the default suite plus the slow tests"
	@echo "make bench-scaling  cost vs atom count, JAX vs the official PyTorch model (benchmarks/)"
	@echo "                    BENCH_ARGS=--quick: the under-5-minute version"
	@echo "make bench-train    training throughput, default config and 10m, 1 vs 2 devices"
	@echo "make bench-train-ab two model variants' train steps, alternated in one process"
	@echo "make bench-profile  where one call's time goes: XLA thunk times by kind, dot FLOP rate"
	@echo "make lint           ruff"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The official PyTorch MatRIS (imports as `matris` too) lives in its own environment.
$(REF_STAMP): tests/reference/setup_ref_env.sh
	bash tests/reference/setup_ref_env.sh $(REF_VENV)
	touch $(REF_STAMP)

ref-env: $(REF_STAMP)

test: venv ref-env
	$(TEST_ENV) $(PY) -m pytest -m "not slow" -q --durations=15

test-all: venv ref-env
	$(TEST_ENV) $(PY) -m pytest -q

train: venv
	$(VENV)/bin/matris train $(CONFIG)

bench-scaling: venv ref-env
	$(PY) benchmarks/bench_scaling.py $(BENCH_ARGS)

bench-train: venv
	$(PY) benchmarks/bench_train.py $(BENCH_ARGS)

# glibc's 2 MiB pages for XLA's large buffers, as `matris train` runs (matris.runtime)
bench-train-ab: venv
	GLIBC_TUNABLES=glibc.malloc.hugetlb=1 $(PY) benchmarks/train_step_ab.py $(BENCH_ARGS)

bench-profile: venv
	$(PY) benchmarks/profile_call.py $(BENCH_ARGS)

bench-graph: venv
	$(PY) benchmarks/bench_graph.py

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks experiments

clean-venv:
	rm -rf $(VENV) $(REF_VENV)
