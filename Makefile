# Sparana: `make demo` runs the main job, `make test` runs the tests. Both create the
# virtual environment (.venv) and install what they need when it is missing.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The GPU check runs with the machine's own Python (CuPy, NumPy... already there), from the source tree.
GPU_PY ?= python3

.PHONY: demo test train bench gpu-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $@

# The distributed experiment on an embedded Ray on this machine's CPUs (a few minutes on 2 cores).
demo: $(VENV)/.installed
	$(PY) jobs/distributed_mnist.py --local-mode

# The original documentation's MNIST model in one process.
train: $(VENV)/.installed
	$(PY) jobs/train_mnist.py

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/dense_epoch.py
	$(PY) benchmarks/sparse_training.py
	$(PY) benchmarks/cluster_rounds.py
	$(PY) benchmarks/vulcanize_accuracy.py

# The GPU tests, then the GPU benchmark (figures in $$OUT/gpu_bench.json on the device machine, else
# results/), with the machine's own Python from the source tree: well under 8 minutes on one GPU.
gpu-check:
	PYTHONPATH=$(CURDIR) $(GPU_PY) -m pytest -q -p no:cacheprovider tests/gpu
	PYTHONPATH=$(CURDIR) $(GPU_PY) benchmarks/gpu_bench.py --json $${OUT:-results}/gpu_bench.json

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis
