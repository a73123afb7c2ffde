# The README's two commands: `make book` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
# glibc would hand multi-hundred-MB buffers back to the OS every step; keeping them is 1.2-1.45x faster.
export MALLOC_MMAP_MAX_ := 0
export MALLOC_TRIM_THRESHOLD_ := 68719476736

.PHONY: setup book test test-unit test-book bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

book: setup
	$(BIN)/kdsae book

test: setup test-unit
	$(BIN)/kdsae book --clean
	$(MAKE) test-book

test-unit: setup
	$(BIN)/python -m pytest -q tests --ignore=tests/book

test-book: setup
	$(BIN)/python -m pytest -q tests/book

bench: setup
	$(BIN)/python benchmarks/toy_sweep.py

clean:
	rm -rf _build
