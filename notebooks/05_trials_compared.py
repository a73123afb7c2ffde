# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---


# %% [markdown]
# # Why these three trials
#
# The three trials are three answers to one trade-off: the L1 coefficient buys sparsity (low L0) with
# reconstruction error (MSE). Trial A (λ 3e-4, `mean` form) sits at the dense end, trial C (adaptive λ, fixed
# target L0) at the sparse end, and trial B (λ 8e-5, `sum` form: the paper's setting) between them. The
# authors chose these after pilot runs at λ = 1e-4, 2e-4 and 7e-4; set `pilots = True` to add the run's pilot
# trials to the figure (a run without them trains them first, which takes minutes). The box below names the
# model, layers and token budget of the run shown.

# %% tags=["parameters"]
trials = ["A", "B", "C"]  # the trials to compare
source = "local"  # local: the run folder below; hub: the published Pythia-410M checkpoints (needs the hub)
layers = None  # None for every layer, or a list of 0-based layer numbers
run = "results/exp2/embedded"  # run folder (given to kdsae run: relative to the current folder; the default is in the repository)
rerun = False  # True: train the SAEs again with the run's config instead of rendering the committed run
pilots = False  # True: add the pilot coefficients' points (1e-4, 2e-4, 7e-4)
out = ""  # folder for the figures and their data; "" means _build/figures/05_trials_compared

# %%
from kdsae_core.book.chapters import open_chapter, with_pilots

ch = open_chapter("05_trials_compared", source=source, layers=layers, run=run, rerun=rerun, out=out,
                  trials=None if pilots else trials)
ch = with_pilots(ch, pilots, rerun)
ch.header()

# %% [markdown]
# ## The sparsity-reconstruction frontier
# L0 against reconstruction MSE at the final snapshot, every layer of every trial; grey lines join one layer's
# points across trials (that layer's trade-off curve).

# %%
ch.figure("frontier")
