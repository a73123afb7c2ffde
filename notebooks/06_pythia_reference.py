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
# # Pythia-410M reference measurements
#
# The authors released, for their Pythia-410M SAEs (32,768 latents, 300M tokens of the Pile), the measured
# numbers behind the paper's Experiment 2 at layers 8, 12 and 16 (0-based, as in
# `blocks.{l}.hook_resid_post`), and for layers 12 and 16 the full sorted importance E[z²] of every alive
# latent. This page reads them from a configurable folder (`KDSAE_REFERENCE_DIR`; `kdsae fetch-reference`
# downloads them from the public repository Dawar13/COLM_ERDOS_labs, `results/exp2_sae/`). They are not
# part of this repository and none of this page's numbers come from the companion's own runs.
#
# **Which run the paper's numbers come from: the sources disagree.** The lab's write-up says trial B's numbers
# (λ 8e-5, `sum` form, the Hugging Face repository `nileshsarkar-ai/colm-run-exp-2-t2`) go into the paper's main
# tables. The per-layer values the co-author's repository publishes and releases (this page) come from an earlier
# run with λ 8e-4 in the `sum` form, one layer at a time. Both statements are quoted as their sources make them;
# we cannot tell which run produced the paper's tables.

# %% tags=["parameters"]
reference_dir = ""  # folder with the authors' files; "" means KDSAE_REFERENCE_DIR or the default locations
out = ""  # folder for the figures and their data; "" means _build/figures/06_pythia_reference

# %%
from IPython.display import display

from kdsae_core.book.chapters import ReferenceChapter, reference_sentence

ref = ReferenceChapter(reference_dir, out)
ref.header()

# %% [markdown]
# ## Published per-layer values
# As printed in the co-author's repository README: SAEs trained one layer at a time with λ 8e-4 in the `sum`
# form on 300M tokens, an earlier run than the three Hugging Face trials and the one behind the abstract's
# numbers. α = 1 − L0/F, g(α) = 1/((1 − α) ln(1/(1 − α))), d*_S = F/g(α).

# %%
display(ref.published().style.format({"F_alive": "{:,}", "L0": "{:.1f}", "alpha": "{:.5g}", "g_alpha": "{:.2f}",
                                      "d_star_S": "{:,.1f}"}).hide(axis="index"))
if not ref.available:
    ref.say(ref.missing_sentence())

# %% [markdown]
# ## Recomputed from the released files
# F and L0 as released; α, g(α) and d*_S recomputed with the unrounded α (α = 0.992 instead of 0.99238 would
# give d*_S ≈ 1,107 at layer 12).

# %%
if ref.available:
    display(ref.recomputed().style.format(precision=5, thousands=",").hide(axis="index"))

# %% [markdown]
# ## Importance distribution
# Sorted E[z²] of the alive latents on log–log axes, and the share of L∞ that the F_S = ⌊d_S·g(α)⌋ most
# important latents hold.

# %%
if ref.available:
    ref.show("pythia410m_importance")
    ref.say(reference_sentence("pythia410m_importance", ref))

# %% [markdown]
# ## Predicted floors vs width
# The refined floor Σ_{i > F_S} E[z_i²] and the naive floor L∞·max(0, 1 − d_S·g(α)/F), as fractions of L∞.

# %%
if ref.available:
    ref.show("pythia410m_floors")
    ref.say(reference_sentence("pythia410m_floors", ref))

# %% [markdown]
# ## SAE training curves
# The released training logs of layers 8, 12 and 16.

# %%
if ref.available:
    ref.show("pythia410m_training")
    ref.say(reference_sentence("pythia410m_training", ref))
