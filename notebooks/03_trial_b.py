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
# # Trial B: λ 8e-5 fixed, paper-exact
#
# Trial B uses the paper's penalty exactly: λ = 8e-5 on Σ_latents |z| averaged over tokens (the `sum` form).
# Its per-layer measurements are the numbers behind the paper's main tables. This page draws the *same*
# final-snapshot measurements seven ways, each for a purpose; the gallery page says which one
# the paper uses and why. The box below names the model, layers and token budget of the run shown.

# %% tags=["parameters"]
trial = "B"  # which trial's measurements to draw (A, B, C)
source = "local"  # local: the run folder below; hub: the published Pythia-410M checkpoints (needs the hub)
layers = None  # None for every layer, or a list of 0-based layer numbers
run = "results/exp2/embedded"  # run folder (given to kdsae run: relative to the current folder; the default is in the repository)
rerun = False  # True: train the SAEs again (minutes), with the run's config and the science settings below
out = ""  # folder for the figures and their data; "" means _build/figures/03_trial_b
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
l1_lambda = None  # trial B's λ (the paper's 8e-5)
l1_form = None  # trial B's L1 form, "sum" (the paper's) or "mean"

# %% tags=["hide-input"]
from kdsae_core.book.chapters import open_chapter

science = dict(model=model, d_sae=d_sae, expansion=expansion, tokens=tokens, batch_tokens=batch_tokens,
               n_snapshots=n_snapshots, lr=lr, seed=seed, dataset=dataset, measure_tokens=measure_tokens,
               l1_lambda=l1_lambda, l1_form=l1_form)
ch = open_chapter("03_trial_b", trial=trial, source=source, layers=layers, run=run, rerun=rerun, out=out,
                  settings=science)
ch.header()

# %% [markdown]
# ## Variant 1 paper heatmap
# Annotated, one sequential palette (no metric here has a meaningful midpoint), readable in greyscale; saved
# as PNG and SVG for print.

# %%
ch.figure("paper_heatmap")

# %% [markdown]
# ## Variant 2 compact slide palette
# Four metrics, large numbers, grey shades that survive a projector.

# %%
ch.figure("slides_heatmap")

# %% [markdown]
# ## Variant 3 heatmap with sidecar
# The appendix table, with per-layer statistics of the importance distribution beside it.

# %%
ch.figure("appendix_sidecar")

# %% [markdown]
# ## Variant 4 small multiples
# Every layer's metric vector on one page.

# %%
ch.figure("small_multiples")

# %% [markdown]
# ## Variant 5 smooth gradient
# Trends through depth; colour between measured layers is linear interpolation (labelled on the figure).

# %%
ch.figure("smooth_depth")

# %% [markdown]
# ## Variant 6 metric correlations
# Pearson correlation of the per-layer metrics across layers (e.g. α against the dead-latent count).

# %%
ch.figure("correlation")

# %% [markdown]
# ## Variant 7 headline card
# Mean α, mean L0 and the total number of dead latents.

# %%
ch.figure("headline")
