# The two set-up commands: `make train` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL := 2

# What .venv's JAX runs on: cpu, cuda12 or cuda13 (NVIDIA GPUs), tpu (TPU VMs).
# `make test` always uses cpu.
ACCEL ?= cpu
ACCELS := cpu cuda12 cuda13 tpu
ifeq ($(filter $(ACCEL),$(ACCELS)),)
$(error ACCEL=$(ACCEL): use one of $(ACCELS))
endif
ACCEL_STAMPS := $(ACCELS:%=$(VENV)/.installed-%)
requirements = $(if $(filter cpu,$(1)),requirements.txt,requirements-$(1).txt)

.PHONY: train test test-slow lint check-accel system-packages gpu-wheels clean

# One stamp per ACCEL. A switch starts .venv afresh: no other accelerator's plugin stays.
$(ACCEL_STAMPS): $(VENV)/.installed-%: requirements.txt | system-packages
	$(if $(wildcard $(filter-out $@,$(ACCEL_STAMPS))),rm -rf $(VENV))
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(call requirements,$*)
	touch $@

$(VENV)/.installed-cuda12: requirements-cuda12.txt
$(VENV)/.installed-cuda13: requirements-cuda13.txt
$(VENV)/.installed-tpu: requirements-tpu.txt

# Tests also need pytest, ruff and the PyTorch references (several GB): not `make train`.
$(VENV)/.installed-dev: $(VENV)/.installed-cpu requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# Debian's python3-venv and dataset-fashion-mnist, where missing.
system-packages:
	@PYTHON=$(PYTHON) sh tools/install_system_packages.sh \
	  'make $(strip $(MAKECMDGOALS) $(if $(filter-out cpu,$(ACCEL)),ACCEL=$(ACCEL)))'

DEFAULT_CONFIG := configs/resnet20_fashion_mnist.py
DEFAULT_WORKDIR := runs/default

train: $(VENV)/.installed-$(ACCEL)
	$(PY) -m resnet_jax.data.prepare fashion_mnist
	$(PY) train.py --config=$(DEFAULT_CONFIG) --workdir=$(DEFAULT_WORKDIR)
	$(PY) evaluate.py --workdir=$(DEFAULT_WORKDIR)

# Two pytest workers (one per core of the CI machine), each test file kept on one worker so
# that its module fixtures run once. On 2 Zen-1 cores: 20 min in one process, 15 min with
# two workers, 11 min with two workers and tests/conftest.py's compilation cache.
TEST_WORKERS ?= 2

test: $(VENV)/.installed-dev
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# The slow tests, spread test by test (17 of them: 7 min 21 s on 2 AMD EPYC Zen 4 cores).
test-slow: $(VENV)/.installed-dev
	$(PY) -m pytest -m slow -n $(TEST_WORKERS) --dist load

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

# Each requirements-ACCEL.txt resolves with pip (metadata only, no CUDA or TPU wheels).
check-accel: $(VENV)/.installed-dev
	$(PY) -m pytest tests/test_requirements.py

# The pure-Python wheels benchmarks/gpu_check.sh unpacks where a GPU machine lacks them
# (a GPU machine without internet gets the folder with the working tree: never committed).
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: -d benchmarks/gpu_wheels \
	  $$(grep -E '^(ml-collections|absl-py|flax|optax)==' requirements.txt)

clean:
	rm -rf $(VENV)
