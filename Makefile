# Two entry points on a fresh machine: `make bench` (the main job: `sslreg bench quick`;
# benchmarks/ holds measurement scripts, not this) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA := /usr/share/datasets/fashion-mnist

.PHONY: setup bench test data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch 2.14.1 / torchvision 0.29.1 are the pair pip finds on this project's machines;
# pyproject.toml keeps wide ranges so other machines resolve their own builds.
$(VENV)/.installed: $(BIN)/python pyproject.toml plugins/*/pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.14.1" "torchvision==0.29.1" || \
		$(BIN)/pip install --quiet "torch>=2.4" "torchvision>=0.19"
	$(BIN)/pip install --quiet -e ".[test]" $(foreach p,$(wildcard plugins/*),-e $(p))
	touch $@

data:
	@test -d $(DATA) || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; }

setup: $(VENV)/.installed data

bench: setup
	$(BIN)/sslreg bench quick

test: setup
	$(BIN)/python -m pytest -q
