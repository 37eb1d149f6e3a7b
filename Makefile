# `make test` and `make demo` work from a fresh clone: they create .venv and install the project first.
# CPU machines pin the CPU build of torch; on a GPU machine run `make install CONSTRAINTS=` to let pip choose.
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints-cpu.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: install test lint demo demo-quick clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev]'
	touch $@

install: $(STAMP)

lint: install
	$(BIN)/ruff check src tests benchmarks scripts

test: lint
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/ttsi demo $(ARGS)

demo-quick: install
	HF_HUB_OFFLINE=1 $(BIN)/ttsi demo --quick

clean:
	rm -rf $(VENV) .cache runs .pytest_cache .ruff_cache
