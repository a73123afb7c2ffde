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
# # Experiment 1: the toy model
#
# Teachers of width $d_T$ are trained on the toy task of Elhage et al. (2022): $n$ features
# $x_i = u_i b_i$ with $b_i \sim \mathrm{Bernoulli}(1-\alpha)$ and $u_i \sim U[0, 1]$, reconstructed as
# $\hat x = \mathrm{ReLU}(W^\top W x + b)$ under an importance-weighted squared error. Students of every width
# $d_S = 1 \dots d_T$ are then distilled from each teacher on fresh samples. A student's **measured floor**
# is its loss against the ground truth $x$ on a fixed set of fresh samples after training; the theory
# predicts it from $n$, $\alpha$ and the importances alone ([the theory](../book/theory.md)).
#
# - All models of a sweep (seeds × widths × configurations) train together as one batched tensor program
#   (`kdsae_core.toy.model`). **Models that share $(n, \alpha)$ share data batches**; seeds differ only in their
#   initialisation, so the seed ranges drawn below show initialisation variance only, not data variance.
# - **The paper's text is not available to us.** Importance `zipf:1` ($I_i = 1/i$) is the reading of its
#   setup by an independent re-implementation, not a quotation; the live check at the end of this page runs
#   `geometric:0.9` ($I_i = 0.9^{i-1}$) beside it.
# - Both accuracy definitions of the design are reported: `accuracy_rel`, that is
#   $\max(0, 1 - |L_\text{pred} - L_\text{meas}| / L_\text{meas})$ over (configuration, width) pairs below
#   $d^*_S$, and `accuracy_norm`, that is $1 - |L_\text{pred} - L_\text{meas}| / L_\infty$ over all pairs; a
#   pair's measured value is the median over seeds ([definitions](../book/theory.md)).

# %% tags=["parameters"]
profile = "paper"  # committed results to render (paper or quick); with rerun, the profile to train
rerun = False  # True: train the sweep now with the settings below instead of rendering committed results
source = "local"  # local only: Experiment 1 has no results on the hub
results_file = ""  # a toy_results.json to render instead of results/toy/<profile>/ (relative to the current folder)
n = None  # feature counts, e.g. [10, 20, 40] (rerun only; None: the profile's)
alpha = None  # sparsity levels in (0, 1), probability a feature is inactive, e.g. [0.8, 0.9] (rerun only)
d_teacher = None  # teacher widths, none above min(n), e.g. [3, 5] (rerun only)
widths = None  # student widths, e.g. [1, 2, 3] (rerun only; None: 1..d_T for each teacher)
importance = None  # zipf:S, geometric:R or uniform (rerun only; None: zipf:1)
mode = None  # distill (students learn the teacher's output) or direct (students learn the task) (rerun only)
steps = None  # optimizer steps per phase (rerun only; None: the profile's)
batch = None  # samples per step (rerun only; None: 1024)
lr = None  # Adam learning rate, cosine decay (rerun only; None: 3e-3)
seeds = None  # seeds per model (rerun only; None: the profile's)
eval_samples = None  # fresh samples the measured floor is computed on (rerun only; None: the profile's)
seed = None  # base seed of the sweep (rerun only; None: 0)
live_check = True  # also train the quick profile now (zipf:1 and geometric:0.9), as every book build does
out = ""  # folder for the figures and their data; "" means _build/figures/01_toy_validation

# %% tags=["hide-input"]
import time
import warnings

from IPython.display import HTML, Image, Markdown, display
from tqdm import TqdmWarning

warnings.filterwarnings("ignore", category=TqdmWarning)  # no ipywidgets here; the sweeps run without bars

from kdsae_core.book import param_rules
from kdsae_core.book import params as notebook_params
from kdsae_core.common import paths
from kdsae_core.figures import catalog, style
from kdsae_core.figures import toy as toy_figures
from kdsae_core.figures import toy_why
from kdsae_core.figures import toy_sentences
from kdsae_core.toy import evidence as toy_evidence
from kdsae_core.toy.profiles import paper_grid_time, wall_time
from kdsae_core.toy.config import ToyConfig
from kdsae_core.toy.results import load_results
from kdsae_core.toy.sweep import run_sweep

settings = dict(profile=profile, rerun=rerun, source=source, results_file=results_file, n=n, alpha=alpha,
                d_teacher=d_teacher, widths=widths, importance=importance, mode=mode, steps=steps, batch=batch,
                lr=lr, seeds=seeds, eval_samples=eval_samples, seed=seed)
cfg = param_rules.toy_chapter_config(settings)  # the same check `kdsae run` makes before executing
figures = notebook_params.figure_folder(out, "01_toy_validation")


def live_sweep(importance: str) -> tuple[dict, float]:
    start = time.perf_counter()
    res = run_sweep(ToyConfig.from_profile("quick", importance=importance), progress=False)
    return res, time.perf_counter() - start


live = {}
if live_check:
    live["zipf:1"] = live_sweep("zipf:1")

committed = notebook_params.resolve(results_file) if results_file else paths.toy_results_file(profile)
if rerun:
    reuse = "zipf:1" in live and cfg == ToyConfig.from_profile("quick")
    results = live["zipf:1"][0] if reuse else run_sweep(cfg, progress=False)
    source_line = short = f"a sweep trained while this page was built (profile {profile}, this run's parameters)"
elif committed.exists():
    results = load_results(committed)
    short = paths.display_path(committed)
    source_line = f"the {'committed ' if not results_file else ''}results `{short}`"
    wall = wall_time(committed.parent)  # recorded beside them by `make results-toy`
    if wall:
        source_line += f", trained in {wall}"
else:
    if "zipf:1" not in live:
        live["zipf:1"] = live_sweep("zipf:1")
    results, short = live["zipf:1"][0], "a live quick run (the committed results are missing)"
    source_line = (f"**a live quick run**, because the committed results `{paths.display_path(committed)}` are not in this checkout "
                   f"(`make results-toy` makes the paper profile's: {paper_grid_time()})")
display(Markdown(f"> **Shown below:** {source_line}. {toy_figures.describe(results)}. Figures and their data "
                 f"are written to `{paths.display_path(figures)}`."))
drawn = catalog.draw_toy(results, figures)


def show(name: str) -> None:
    display(Image(filename=str(drawn[name]["png"])))  # exactly the saved file
    draw = catalog.spec(name).draw
    display(HTML(style.provenance_html(f"{draw.__module__}.{draw.__name__}", drawn[name], short)))


# %% [markdown]
# ## Loss floor vs student width
# One panel per $(\alpha, F = n)$, one line per teacher width $d_T$: the measured floor (median over seeds,
# bars the seed range), the predicted refined floor $L^*(d_S)$ (dashed), the naive floor (dotted) and the
# critical width $d^*_S = F / g(\alpha)$ (red triangle). Losses are fractions of $L_\infty$, the loss of
# predicting zero, so every panel has the same scale.

# %%
show("toy_loss_vs_width")
display(Markdown(toy_sentences.loss_sentence(results)))

# %% [markdown]
# ## How closely measured matches predicted, per $(\alpha, F)$
# Cell colour and number: the median accuracy over the cell's (teacher, width) pairs; the last column is the
# median over every pair of that sparsity level, the number the paper's claim is about. Left `accuracy_rel`
# (pairs below $d^*_S$ only; grey "no pairs" where $d^*_S$ is below every student width), right
# `accuracy_norm` (all pairs).

# %%
show("toy_accuracy_grid")

# %% [markdown]
# ## Measured vs predicted, and where the loss bottoms out
# Left: every trained student, measured against predicted floor (both as fractions of $L_\infty$), with the
# diagonal $y = x$. Right: per configuration, the measured knee (the first width whose floor is within 2% of
# $L_\infty$ of the best one) against the theoretical $d^*_S$; hollow markers are configurations whose
# $d^*_S$ lies beyond their widest student, so the knee cannot reach it.

# %%
show("toy_measured_vs_predicted")
display(Markdown(toy_sentences.knee_sentence(results)))

# %% [markdown]
# ## The paper's accuracy claim, checked on these results

# %%
display(Markdown(toy_sentences.accuracy_sentence(results)))

# %% [markdown]
# ## Why the toy model misses 93%
# The theory's floor counts one thing: the importance of the features a student has no room for. The figures below
# take the measured floor apart to see what else is in it. Every quantity is defined on the
# [methods page](../book/methods.md); every sentence under a figure is computed from the data saved beside it.
# With `rerun`, the first two figures and the affine reading use the re-run grid, the others the committed sweeps.

# %% tags=["hide-input"]
evidence = toy_evidence.evidence_with_grid(results, short)
why = catalog.draw_why(evidence, figures)


def show_why(name: str) -> None:
    """A figure of the 'why' section with its provenance and the sentence computed from its data, or why it is absent."""
    draw, sentence = catalog.spec(name).draw, catalog.spec(name).sentence
    if name not in why:
        display(Markdown(f"*{toy_why.missing(evidence)[name]}*"))
        return
    display(Image(filename=str(why[name]["png"])))
    display(HTML(style.provenance_html(f"{draw.__module__}.{draw.__name__}", why[name], short)))
    display(Markdown(sentence(evidence)))


# %% [markdown]
# ### The teachers already miss the prediction
# Left: each configuration's teachers (trained on the task, no distillation) against the floor the theory predicts
# for a student of the teacher's own width. Right: the widest student ($d_S = d_T$) against its teacher.

# %%
show_why("toy_why_teachers")

# %% [markdown]
# ### Represented features against the budget, and what the floor is made of
# A feature counts as represented when its column of $W$ has norm $\lVert W_i \rVert \ge 0.5$ (0.3 and 0.7 shown
# beside it). Left: represented features against the theory's budget $F_S = \min(n, \lfloor d_S\, g(\alpha)
# \rfloor)$. Right: each student's measured floor split into the loss on the features it drops (what the theory
# counts) and the loss on the features it represents, interference and shrinkage (what the theory sets to zero).

# %%
show_why("toy_why_represented")

# %% [markdown]
# ### The importance profile
# The paper's text, as far as we have it, does not state the importance profile of its toy model. The same grid
# was trained under `geometric:0.9` and `uniform` as well (with fewer seeds, stated in the legend).

# %%
show_why("toy_why_profiles")

# %% [markdown]
# ### The abstract's affine decomposition, read onto the toy model
# The abstract describes the measured floor as an affine function of the predicted one. Fitted per sparsity level
# on $n \in \{10, 20\}$ and judged on the held-out $n = 40$, this is a calibrated reading with two fitted constants
# per level, not the paper's parameter-free prediction.

# %%
show_why("toy_why_affine")

# %% [markdown]
# ### Where the loss bottoms out, without a teacher
# A distilled student cannot do better than its teacher, so its floor keeps falling up to $d_S = d_T$ and the
# "knee" measures the teacher's width. Students trained on the task itself, at widths from 1 to
# $\lceil 1.5\, d^*_S \rceil + 1$, show where the loss bottoms out (`kdsae toy --profile direct`).

# %%
show_why("toy_why_knee")

# %% [markdown]
# ## Live check: the quick profile, trained while this page was built
# Every build trains the quick profile from scratch, so the code path behind the numbers above runs each
# time; beside it, the same grid with the geometric importance profile. The quick profile is smaller than
# the paper grid (fewer features, teachers, seeds and steps), so its accuracies are not the paper's numbers.

# %%
if live_check:
    live["geometric:0.9"] = live_sweep("geometric:0.9")
    table = {"shown above": results} if results is not live["zipf:1"][0] else {}
    table.update({f"live quick, {imp} ({secs:.0f} s)": res for imp, (res, secs) in live.items()})
    display(HTML(toy_sentences.accuracy_table_html(table)))
else:
    display(Markdown("*Live check skipped (`live_check = False`).*"))
