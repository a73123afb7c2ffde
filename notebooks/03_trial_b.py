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
rerun = False  # True: train the SAEs again with the run's config instead of rendering the committed run
out = ""  # folder for the figures and their data; "" means _build/figures/03_trial_b

# %%
from kdsae_core.book.chapters import open_chapter

ch = open_chapter("03_trial_b", trial=trial, source=source, layers=layers, run=run, rerun=rerun, out=out)
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
