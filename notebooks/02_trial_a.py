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
# # Trial A: λ 3e-4 fixed, the dense regime
#
# Trial A trains one sparse autoencoder per residual-stream layer with a fixed L1 coefficient λ = 3e-4 in the
# `mean` form (|z| averaged over tokens *and* latents, i.e. the paper's `sum` penalty divided by d_sae). The
# penalty is weak, so many latents fire on every token: the authors' Pythia-410M run of this trial averages
# L0 ≈ 6,184 active latents of 32,768. It shows what the theory's quantities look like when features are
# *not* sparse. The box below names the model, layers and token budget of the run this page renders; by
# default that is the embedded run (all-MiniLM-L6-v2), not Pythia-410M.

# %% tags=["parameters"]
trial = "A"  # which trial's measurements to draw (A, B, C)
source = "local"  # local: the run folder below; hub: the published Pythia-410M checkpoints (needs the hub)
layers = None  # None for every layer, or a list of 0-based layer numbers, e.g. [0, 3]
run = "results/exp2/embedded"  # run folder (given to kdsae run: relative to the current folder; the default is in the repository)
rerun = False  # True: train the SAEs again (minutes), with the run's config and the science settings below
out = ""  # folder for the figures and their data; "" means _build/figures/02_trial_a
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
l1_lambda = None  # trial A's λ (the paper's 3e-4)
l1_form = None  # trial A's L1 form, "mean" (the paper's) or "sum"

# %% tags=["hide-input"]
from kdsae_core.book.chapters import open_chapter

science = dict(model=model, d_sae=d_sae, expansion=expansion, tokens=tokens, batch_tokens=batch_tokens,
               n_snapshots=n_snapshots, lr=lr, seed=seed, dataset=dataset, measure_tokens=measure_tokens,
               l1_lambda=l1_lambda, l1_form=l1_form)
ch = open_chapter("02_trial_a", trial=trial, source=source, layers=layers, run=run, rerun=rerun, out=out,
                  settings=science)
ch.header()

# %% [markdown]
# ## Training curves
# Reconstruction MSE, the L1 penalty and their sum over training tokens, one line per layer.

# %%
ch.figure("training_curves")

# %% [markdown]
# ## Summary card
# One row per layer; each column is shaded relative to itself, with the numbers printed.

# %%
ch.figure("summary_card")

# %% [markdown]
# ## The three KD quantities
# Sparsity α = 1 − L0/F, capacity g(α) and critical width d*_S = F / g(α), per layer.

# %%
ch.figure("kd_quantities")

# %% [markdown]
# ## L0 vs reconstruction
# Each layer's place in the sparsity–reconstruction trade-off under this one λ.

# %%
ch.figure("l0_vs_mse")

# %% [markdown]
# ## Predicted floor vs student width
# The refined floor L*(d_S) = Σ_{i > F_S} E[z_i²] from each layer's measured importance, as a fraction of L∞;
# dots are the widths the measurement file predicts ({1/8 … 1} × d_model), dotted lines each layer's d*_S.

# %%
ch.figure("predicted_floors")
