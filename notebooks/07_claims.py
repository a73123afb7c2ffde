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
# # Claims ledger
#
# Each quantitative claim of the paper (and of the lab's write-up), the check that tests it, what this
# build measured, and a verdict: **reproduced** (green), **not reproduced** (red) or **not testable here**
# (grey, with why). The toy-model verdicts come from the committed paper-grid sweep
# (`results/toy/paper/toy_results.json`, written by `kdsae toy --profile paper`) when it is there, else
# from a sweep run fresh during this build (`rerun` always runs one); a claim about "the paper's 48
# configurations" gets a verdict only from results whose settings equal the paper grid (checked from the
# file's own settings). The same ledger prints from the command line: `kdsae verify` (`--profile paper`
# for the full toy grid run fresh, `--toy-results FILE` for a finished one, `--source hub` to measure the
# published checkpoints).

# %% tags=["parameters"]
rerun = False  # True: run the toy sweep of `profile` now instead of reading the committed paper-grid results
profile = "quick"  # toy sweep run fresh (with rerun, or when no committed results exist): quick or paper
source = "local"  # local, or hub to measure the published paper-scale checkpoints
toy_results = ""  # path to an existing toy_results.json instead of a fresh sweep (its settings are checked)

# %%
import warnings
from pathlib import Path

from IPython.display import HTML, display
from tqdm import TqdmWarning

warnings.filterwarnings("ignore", category=TqdmWarning)  # no ipywidgets here; nothing on this page shows a bar

from kdsae_core import verify
from kdsae_core.commands.verify import hub_measurements
from kdsae_core.paths import RESULTS, toy_results_file
from kdsae_core.toy_sweep import ToyConfig, load_results, run_sweep

committed_toy = toy_results_file("paper")
if toy_results:
    toy, toy_source = load_results(Path(toy_results)), f"the toy results {toy_results}"
elif committed_toy.exists() and not rerun:
    toy, toy_source = load_results(committed_toy), f"the committed results {committed_toy.relative_to(RESULTS.parent)}"
else:
    toy, toy_source = run_sweep(ToyConfig.from_profile(profile), progress=False), f"a {profile} sweep run now"
print(f"Toy-model claims from {toy_source} ({len(toy['configs'])} configurations, "
      f"{toy['settings']['seeds']} seeds, {toy['settings']['steps']} steps; paper grid: "
      f"{'yes' if toy['settings'].get('matches_paper_grid') else 'no'}).")
ledger = verify.build_ledger(toy, source, RESULTS / "exp2" / "embedded", hub_measurements)
counts = ledger.counts()
display(HTML(verify.render_html(ledger)))
print(", ".join(f"{v} {k}" for k, v in counts.items()))

# %% [markdown]
# ## Known deviations from the paper
#
# What we could not know, or chose differently, and why:
#
# - **The paper's text is not available to us.** The toy-model setup (DESIGN.md section 3) is the reading of
#   an independent re-implementation: importance `zipf:1` by default; the toy chapter shows `geometric:0.9`
#   beside it. Which of the two accuracy definitions (`accuracy_rel`, `accuracy_norm`) the paper's "93%"
#   uses is unknown, so both are always reported and the verdict uses `accuracy_rel`.
# - **Shared data batches.** Toy models that share (n, α) see the same data batches; seeds differ only in
#   initialisation. With 10,000 steps of 1,024 samples, the data variance this removes is negligible.
# - **Knee width.** "Where the loss bottoms out" is read as the first width whose seed-median floor is
#   within 2% of L∞ of the best floor of that configuration.
# - **Experiment 2 at paper scale needs a GPU and the hub.** The book's own runs are the embedded default:
#   all-MiniLM-L6-v2 (6 layers, d_model 384) on English text that installs from PyPI, with a few thousand
#   latents and a few hundred thousand tokens, not Pythia-410M with 32,768 latents and 300M Pile tokens.
#   They exercise the same code, not the same numbers.
# - **The alive threshold** (fire rate > 1e-5) is measured over ≥ 1e5 fresh tokens here, 50M in the paper.
# - **Layer 8, 12 and 16 values** quoted in the abstract come from an earlier run (λ 8e-4 in the `sum`
#   form, one layer at a time); the three Hugging Face trials are later runs with other coefficients.
