# The README's two commands: `make book` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
# glibc would hand multi-hundred-MB buffers back to the OS every step; keeping them is 1.2-1.45x faster.
export MALLOC_MMAP_MAX_ := 0
export MALLOC_TRIM_THRESHOLD_ := 68719476736

.PHONY: setup cuda-env saelens-env mathjax browser book lint format test test-unit test-book test-saelens results-exp2 results-toy \
        results-toy-direct results-toy-profiles results-figures bench publish clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

book: setup mathjax
	$(BIN)/kdsae book

test: setup saelens-env mathjax browser lint test-unit test-saelens
	$(BIN)/kdsae book --clean
	$(MAKE) test-book

# ruff: the code's format and lint (pyproject.toml [tool.ruff]); `make format` rewrites what `lint` would refuse.
lint: setup
	$(BIN)/ruff format --check --quiet .
	$(BIN)/ruff check --quiet .

format: setup
	$(BIN)/ruff format --quiet .
	$(BIN)/ruff check --quiet --fix .

test-unit: setup
	$(BIN)/python -m pytest -q tests --ignore=tests/book --ignore=tests/saelens

test-book: setup
	$(BIN)/python -m pytest -q tests/book

# SAELens 6.x pins transformer-lens < 4, so it gets its own environment (same torch CPU build).
SL_VENV  := .venv-saelens
SL_STAMP := $(SL_VENV)/.installed-$(shell cat requirements-saelens.txt | cksum | cut -d' ' -f1)
saelens-env: $(SL_STAMP)

$(SL_STAMP): requirements-saelens.txt
	test -x $(SL_VENV)/bin/python || $(PYTHON) -m venv $(SL_VENV)
	$(SL_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-saelens.txt
	rm -f $(SL_VENV)/.installed-*
	touch $@

# Tests that need SAELens run in .venv (pytest) and drive .venv-saelens/bin/python as a subprocess.
test-saelens: setup saelens-env
	KDSAE_SAELENS_PYTHON=$(CURDIR)/$(SL_VENV)/bin/python $(BIN)/python -m pytest -q tests/saelens

# A GPU machine: replace the CPU build of torch in .venv by the CUDA build of the same version (the torch line of
# requirements.txt) from the PyTorch index, then add the CUDA libraries it needs. CUDA_INDEX: match the driver.
TORCH      := $(shell grep '^torch==' requirements.txt)
CUDA_INDEX ?= https://download.pytorch.org/whl/cu128
cuda-env: setup
	$(BIN)/pip install -q --disable-pip-version-check --force-reinstall --no-deps --index-url $(CUDA_INDEX) "$(TORCH)"
	$(BIN)/pip install -q --disable-pip-version-check --index-url $(CUDA_INDEX) "$(TORCH)"
	$(BIN)/python -c "import torch; assert torch.version.cuda, 'torch is still a CPU build'; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'devices', torch.cuda.device_count())"

# Debian packages, installed when run as root: MathJax (served from the book itself, so formulas render
# offline; see book/_ext/offline_mathjax.py) and headless Chromium for the browser test of the built book.
mathjax:
	@if [ -f /usr/share/javascript/mathjax/MathJax.js ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjs-mathjax fonts-mathjax >/dev/null; \
	else echo "make: MathJax is not installed (apt-get install libjs-mathjax); the book's formulas will load it from its CDN"; fi

browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "make: headless Chromium is missing (apt-get install chromium chromium-driver); the browser test will be skipped"; fi

# Push the built book to the gh-pages branch of REMOTE (the Jupyter Book convention; see README).
REMOTE     ?= origin
BOOK_HTML  ?= _build/html
GHP_IMPORT ?= $(BIN)/ghp-import
publish:
	test -f $(BOOK_HTML)/index.html || { echo "make publish: no built book in $(BOOK_HTML): run make book first"; exit 2; }
	$(GHP_IMPORT) --no-jekyll --push --force --remote $(REMOTE) --branch gh-pages --message "Publish the book" $(BOOK_HTML)

# Regenerate the committed results the book renders (results/): Experiment 2's embedded run and Experiment 1's
# paper grid. Both resume where they stopped. One thread each, as the committed files were made: CPU results are
# bit-identical for the same thread count (and one-thread jobs do not stall each other on a shared machine).
# --sae-step dense: the committed embedded run was trained before the sparse step existed, every step dense; the
# default (auto) takes the sparse step in trial C's overshoot, which rounds differently (book/reproducibility.md).
results-exp2: setup
	OMP_NUM_THREADS=1 $(BIN)/kdsae train --profile embedded --sae-step dense --out runs/embedded --resume --measure
	$(BIN)/python -c "from kdsae_core.book.commit import commit_exp2_run as c; c('runs/embedded', 'results/exp2/embedded')"
	$(MAKE) results-figures

# Two processes of one thread (feature counts 40 | 10, 20; the same bytes as one process). wall.json: the wall time
# of this invocation (a resumed sweep records only its last part), for benchmarks/toy_sweep.py.
results-toy: setup
	start=$$(date +%s) && OMP_NUM_THREADS=1 $(BIN)/kdsae toy --profile paper --jobs 2 --out runs/toy-paper && \
	  echo "{\"wall_seconds\": $$(( $$(date +%s) - start )), \"threads\": 1, \"jobs\": 2, \"command\": \"make results-toy\"}" > runs/toy-paper/wall.json
	$(BIN)/python -c "from kdsae_core.book.commit import commit_toy_results as c; c('runs/toy-paper', 'results/toy/paper')"
	$(MAKE) results-figures

# The toy model's other committed sweeps (the claims ledger and the toy chapter's "why" section read them): the knee
# sweep in direct mode, and the paper grid under the other importance profiles (run side by side; fewer seeds than
# the paper grid's 20, as the committed files were made).
results-toy-direct: setup
	$(call toy_sweep,direct,--profile direct)
	$(MAKE) results-figures

results-toy-profiles: setup
	$(MAKE) -j2 toy-profile-geometric-0.9 toy-profile-uniform
	$(MAKE) results-figures

SEEDS_geometric-0.9 := 3
SEEDS_uniform := 5
toy-profile-%: setup
	$(call toy_sweep,paper-$*,--profile paper --importance $(subst -,:,$*) --seeds $(SEEDS_$*))

# $(1): the folder under runs/toy-* and results/toy/; $(2): the `kdsae toy` options. One thread, timed into wall.json.
define toy_sweep
	start=$$(date +%s) && OMP_NUM_THREADS=1 $(BIN)/kdsae toy $(2) --out runs/toy-$(1) && \
	  echo "{\"wall_seconds\": $$(( $$(date +%s) - start )), \"threads\": 1, \"jobs\": 1, \"command\": \"kdsae toy $(2)\"}" > runs/toy-$(1)/wall.json
	$(BIN)/python -c "from kdsae_core.book.commit import commit_toy_results as c; c('runs/toy-$(1)', 'results/toy/$(1)')"
endef

# The data of every figure drawn from the committed runs: what `kdsae verify --figures` compares against.
results-figures: setup
	$(BIN)/python -c "from kdsae_core.book.commit import commit_figure_data as c; c()"

bench: setup
	$(BIN)/python benchmarks/toy_sweep.py

clean:
	rm -rf _build
