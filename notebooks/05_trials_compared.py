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
rerun = False  # True: train the SAEs again (minutes), with the run's config and the science settings below
pilots = False  # True: add the pilot coefficients' points (1e-4, 2e-4, 7e-4)
out = ""  # folder for the figures and their data; "" means _build/figures/05_trials_compared
# Science settings, used when rerun is True (None: the run's own). `kdsae run --list` gives each one's range.
model = None  # language model: a hub id, a local model folder, or "embedded"
d_sae = None  # latents per SAE
expansion = None  # latents per SAE as a multiple of d_model (instead of d_sae)
tokens = None  # training tokens
batch_tokens = None  # tokens per step
n_snapshots = None  # evenly spaced snapshots (the last is `final`)
lr = None  # learning rate
seed = None  # seed of the SAEs' initial weights
dataset = None  # training text: "embedded", a Hugging Face dataset, or a local .txt/.jsonl file or folder
measure_tokens = None  # fresh tokens the measurement reads
pilot_lambdas = None  # the pilots' λ (mean form) when pilots and rerun are True; None: 1e-4, 2e-4, 7e-4

# %% tags=["hide-input"]
from kdsae_core.book.chapters import open_chapter, with_pilots

science = dict(model=model, d_sae=d_sae, expansion=expansion, tokens=tokens, batch_tokens=batch_tokens,
               n_snapshots=n_snapshots, lr=lr, seed=seed, dataset=dataset, measure_tokens=measure_tokens)
ch = open_chapter("05_trials_compared", source=source, layers=layers, run=run, rerun=rerun, out=out,
                  trials=None if pilots else trials, settings=science)
ch = with_pilots(ch, pilots, rerun, lambdas=pilot_lambdas, settings=science)
ch.header()

# %% [markdown]
# ## The sparsity-reconstruction frontier
# L0 against reconstruction MSE at the final snapshot, every layer of every trial; grey lines join one layer's
# points across trials (that layer's trade-off curve).

# %%
ch.figure("frontier")
