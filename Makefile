# `make test` and `make demo` work from a fresh clone: they create .venv and install the project first.
# `make test` (what CI runs) is lint and every test; `make test-fast` is the quick tier for the edit-test loop:
# no test marked slow, data, subprocess or fuzz (markers in pyproject.toml), and no lint. `make fuzz` runs the
# property-based tests deeper. ARGS go to pytest (ARGS=-x).
# CPU machines pin the CPU build of torch; on a GPU machine run `make install CONSTRAINTS=` to let pip choose.
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints-cpu.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: install test test-fast fuzz lint demo demo-quick serve clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev,ray]'
	touch $@

install: $(STAMP)

lint: install
	$(BIN)/ruff check src tests perf scripts

PYTEST := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest

test: lint
	$(PYTEST) $(ARGS)

test-fast: install
	$(PYTEST) -m "not slow and not data and not subprocess and not fuzz" $(ARGS)

# The property-based tests with many more examples each (hypothesis profile "deep", see tests/conftest.py).
fuzz: install
	HYPOTHESIS_PROFILE=deep $(PYTEST) -m fuzz $(ARGS)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/ttsi demo $(ARGS)

demo-quick: install
	HF_HUB_OFFLINE=1 $(BIN)/ttsi demo --quick

# The embedded model behind an OpenAI-compatible endpoint on http://127.0.0.1:8000/v1 (ARGS: more `ttsi serve` options).
serve: install
	HF_HUB_OFFLINE=1 $(BIN)/ttsi serve $(ARGS)

clean:
	rm -rf $(VENV) .cache runs .pytest_cache .ruff_cache
