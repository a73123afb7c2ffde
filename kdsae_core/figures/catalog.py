"""Every figure of the book in one catalog, both experiments: for each, the chapter that shows it, the
function that computes the exact data it plots, the function that draws that data, and the function that
says one sentence about it. `kdsae figures`, the chapter notebooks, the gallery and the figure regression
all draw through this module, so a figure's PNG, its data file, its sentence and its gallery card can
never disagree.

A figure's functions take what its family is drawn from:

  family             data(...)                   draw(...)               sentence(...)
  TOY_FIGURES        toy results dict            toy results dict        toy results dict
  WHY_FIGURES        ToyEvidence                 ToyEvidence             ToyEvidence
  RUN_FIGURES        (RunData, trial, layers)    (data, header)          data
  REFERENCE_FIGURES  (measurements, stats)       (data, header)          (measurements, stats)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib
import pandas as pd
from docutils.nodes import make_id
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from kdsae_core.common.errors import MissingData
from kdsae_core.figures import exp2_compare, reference, toy, toy_why
from kdsae_core.figures import exp2_trial_a as trial_a
from kdsae_core.figures import exp2_trial_b as trial_b
from kdsae_core.figures import exp2_trial_c as trial_c
from kdsae_core.figures.style import save_figure
from kdsae_core.runs import reference as reference_data
from kdsae_core.runs import tables as run_data
from kdsae_core.runs.tables import RunData
from kdsae_core.toy import analysis as toy_analysis

TOY_CHAPTER = "01_toy_validation"


@dataclass(frozen=True)
class FigureSpec:
    key: str  # file stem (for a per-trial figure, after the trial prefix), e.g. "training_curves"
    chapter: str  # notebook stem, e.g. "02_trial_a"
    heading: str  # the heading above the figure (the gallery links to it)
    rationale: str  # why this figure / variant, for the gallery
    data: Callable  # the exact table(s) it plots (arguments: see the module docstring)
    draw: Callable[..., Figure]
    sentence: Callable[..., str]  # one sentence of interpretation, computed from the same numbers
    trial: str | None = None  # the trial its chapter draws it for (None: all trials, or not a run figure)
    formats: tuple[str, ...] = ("png",)
    in_paper: bool = False  # the variant the paper uses

    @property
    def anchor(self) -> str:
        return make_id(self.heading)  # the id the book gives the heading, so the gallery can link to it

    def stem(self, trial: str | None = None) -> str:
        trial = trial or self.trial
        return f"trial{trial}_{self.key}" if trial else self.key


TOY_FIGURES: list[FigureSpec] = [
    FigureSpec(
        "toy_loss_vs_width",
        TOY_CHAPTER,
        "Loss floor vs student width",
        "The central test of the theory: measured floors (seed median and range) against the predicted refined "
        "and naive floors, with d*_S marked.",
        toy.loss_vs_width_data,
        toy.loss_vs_width,
        toy.loss_sentence,
    ),
    FigureSpec(
        "toy_accuracy_grid",
        TOY_CHAPTER,
        "Accuracy per (alpha, F)",
        "How closely measured matches predicted in each cell of the grid: where the closed form can be trusted.",
        toy.accuracy_grid_data,
        toy.accuracy_grid,
        toy.accuracy_sentence,
    ),
    FigureSpec(
        "toy_measured_vs_predicted",
        TOY_CHAPTER,
        "Measured vs predicted",
        "Every (configuration, width) pair against the diagonal, and the measured knee against d*_S.",
        toy.measured_vs_predicted_data,
        toy.measured_vs_predicted,
        toy.knee_sentence,
    ),
]

WHY_FIGURES: list[FigureSpec] = [
    FigureSpec(
        "toy_why_teachers",
        TOY_CHAPTER,
        "The teachers already miss the prediction",
        "Teachers trained on the task against the floor predicted for their own width, and the widest "
        "student against its teacher: the gap exists before distillation.",
        toy_why.teachers_data,
        toy_why.teachers,
        toy_why.teachers_sentence,
    ),
    FigureSpec(
        "toy_why_represented",
        TOY_CHAPTER,
        "Represented features against the budget, and what the floor is made of",
        "Features a student represents against its budget F_S, and its floor split into the loss the theory "
        "counts (dropped features) and the loss it sets to zero (interference, shrinkage).",
        toy_why.represented_data,
        toy_why.represented,
        toy_why.represented_sentence,
    ),
    FigureSpec(
        "toy_why_profiles",
        TOY_CHAPTER,
        "The importance profile",
        "The paper grid under each importance profile: whether any reaches 93%.",
        toy_why.profiles_data,
        toy_why.profiles,
        toy_why.profiles_sentence,
    ),
    FigureSpec(
        "toy_why_affine",
        TOY_CHAPTER,
        "The abstract's affine decomposition, read onto the toy model",
        "A calibration fitted per sparsity on n = 10, 20 and judged on the held-out n = 40.",
        toy_why.affine_data,
        toy_why.affine,
        toy_why.affine_sentence,
    ),
    FigureSpec(
        "toy_why_knee",
        TOY_CHAPTER,
        "Where the loss bottoms out, without a teacher",
        "Students trained on the task past the predicted knee: where the loss stops falling.",
        toy_why.knee_data,
        toy_why.knee,
        toy_why.knee_sentence,
    ),
]


def _frontier_of_every_trial(run: RunData, trial: str | None, layers=None) -> pd.DataFrame:
    return exp2_compare.frontier_data(run, None, layers)  # the chapter compares all trials, whichever is asked


RUN_FIGURES: list[FigureSpec] = [
    # ---- trial A
    FigureSpec(
        "training_curves",
        "02_trial_a",
        "Training curves",
        "MSE, L1 and the combined loss over training tokens, every layer on each panel (log y): shows "
        "whether each layer's SAE has converged before it is measured.",
        trial_a.training_curves_data,
        trial_a.training_curves,
        trial_a.training_curves_sentence,
        "A",
    ),
    FigureSpec(
        "summary_card",
        "02_trial_a",
        "Summary card",
        "One row per layer with the numbers printed; shading is per column, so it ranks layers within a "
        "metric without implying that different metrics share a scale.",
        trial_a.summary_card_data,
        trial_a.summary_card,
        trial_a.summary_card_sentence,
        "A",
    ),
    FigureSpec(
        "kd_quantities",
        "02_trial_a",
        "The three KD quantities",
        "alpha, g(alpha) and d*_S side by side: the chain from sparsity to critical width, with the "
        "teacher's width drawn on the d*_S panel.",
        trial_a.kd_quantities_data,
        trial_a.kd_quantities,
        trial_a.kd_quantities_sentence,
        "A",
    ),
    FigureSpec(
        "l0_vs_mse",
        "02_trial_a",
        "L0 vs reconstruction",
        "Where each layer sits in the sparsity-reconstruction trade-off under one fixed lambda.",
        trial_a.l0_vs_mse_data,
        trial_a.l0_vs_mse,
        trial_a.l0_vs_mse_sentence,
        "A",
    ),
    FigureSpec(
        "predicted_floors",
        "02_trial_a",
        "Predicted floor vs student width",
        "The refined floor L*(d_S) from each layer's measured importance, with the widths the measurement "
        "file predicts as dots and d*_S dotted: the theorem's prediction for a distilled student.",
        trial_a.predicted_floors_data,
        trial_a.predicted_floors,
        trial_a.predicted_floors_sentence,
        "A",
    ),
    # ---- trial B: seven renderings of the same measurements
    FigureSpec(
        "paper_heatmap",
        "03_trial_b",
        "Variant 1 paper heatmap",
        "The paper's choice: annotated, one sequential palette (no diverging colours: no metric has a "
        "meaningful midpoint), readable in greyscale; also saved as SVG for print.",
        trial_b.metrics_data,
        trial_b.paper_heatmap,
        trial_a.summary_card_sentence,
        "B",
        ("png", "svg"),
        in_paper=True,
    ),
    FigureSpec(
        "slides_heatmap",
        "03_trial_b",
        "Variant 2 compact slide palette",
        "For slides: four metrics, large numbers, a conservative grey palette that survives projectors.",
        trial_b.metrics_data,
        trial_b.slides_heatmap,
        trial_b.slides_heatmap_sentence,
        "B",
    ),
    FigureSpec(
        "appendix_sidecar",
        "03_trial_b",
        "Variant 3 heatmap with sidecar",
        "For the appendix: the full table plus per-layer mini statistics from the importance "
        "distribution (top-10% share, features kept and floor at d_S = d_model).",
        trial_b.appendix_sidecar_data,
        trial_b.appendix_sidecar,
        trial_b.appendix_sidecar_sentence,
        "B",
    ),
    FigureSpec(
        "small_multiples",
        "03_trial_b",
        "Variant 4 small multiples",
        "Every layer's metric vector on one page: compares the shape of layers rather than one metric.",
        trial_b.small_multiples_data,
        trial_b.small_multiples,
        trial_b.small_multiples_sentence,
        "B",
    ),
    FigureSpec(
        "smooth_depth",
        "03_trial_b",
        "Variant 5 smooth gradient",
        "Trends through depth at a glance; colour between layers is linear interpolation, labelled as such "
        "(not used for numbers).",
        trial_b.smooth_depth_data,
        trial_b.smooth_depth,
        trial_b.smooth_depth_sentence,
        "B",
    ),
    FigureSpec(
        "correlation",
        "03_trial_b",
        "Variant 6 metric correlations",
        "Which per-layer quantities move together across depth (e.g. alpha vs dead latents); Pearson r over "
        "few layers, so read signs, not decimals. A diverging palette here because r has a midpoint (0).",
        trial_b.correlation_data,
        trial_b.correlation,
        trial_b.correlation_sentence,
        "B",
    ),
    FigureSpec(
        "headline",
        "03_trial_b",
        "Variant 7 headline card",
        "The three numbers a talk opens with: mean alpha, mean L0, total dead latents.",
        trial_b.headline_data,
        trial_b.headline,
        trial_b.headline_sentence,
        "B",
    ),
    # ---- trial C
    FigureSpec(
        "dashboard",
        "04_trial_c",
        "Dashboard",
        "Layer by metric with the numbers: L0 against its target, alpha, g(alpha), MSE and dead latents.",
        trial_c.dashboard_data,
        trial_c.dashboard,
        trial_c.dashboard_sentence,
        "C",
    ),
    FigureSpec(
        "depth_landscape",
        "04_trial_c",
        "Depth landscape",
        "Every per-layer property as a profile through depth, one panel each (own units and scale).",
        trial_c.depth_landscape_data,
        trial_c.depth_landscape,
        trial_c.depth_landscape_sentence,
        "C",
    ),
    FigureSpec(
        "controller",
        "04_trial_c",
        "Controller trajectories",
        "The evidence that the adaptive controller reached its target: lambda and L0 per layer over "
        "training, with the target line.",
        trial_c.controller_data,
        trial_c.controller,
        trial_c.controller_sentence,
        "C",
    ),
    # ---- all trials
    FigureSpec(
        "frontier",
        "05_trials_compared",
        "The sparsity-reconstruction frontier",
        "Every layer of every trial in the L0-MSE plane: the three trials are corners of one trade-off "
        "(dense A, paper-exact B, sparse C); pilots add points along it.",
        _frontier_of_every_trial,
        exp2_compare.frontier,
        exp2_compare.frontier_sentence,
    ),
]

REFERENCE_FIGURES: list[FigureSpec] = [
    FigureSpec(
        "pythia410m_importance",
        "06_pythia_reference",
        "Importance distribution",
        "The released E[z^2] importances on log-log axes, with the share of L_inf a width-d_S student keeps.",
        lambda ms, stats: reference.importance_distribution_data(ms),
        reference.importance_distribution,
        reference.importance_distribution_sentence,
    ),
    FigureSpec(
        "pythia410m_floors",
        "06_pythia_reference",
        "Predicted floors vs width",
        "Refined and naive floors at every width, linear and log scale; d*_S and d_model marked.",
        lambda ms, stats: reference.floors_vs_width_data(ms),
        reference.floors_vs_width,
        reference.floors_vs_width_sentence,
    ),
    FigureSpec(
        "pythia410m_training",
        "06_pythia_reference",
        "SAE training curves",
        "The authors' released training curves (layers 8, 12, 16).",
        lambda ms, stats: reference.training_curves_data(stats),
        reference.training_curves,
        reference.training_curves_sentence,
    ),
]
ALL_FIGURES = TOY_FIGURES + WHY_FIGURES + RUN_FIGURES + REFERENCE_FIGURES


def spec(key: str) -> FigureSpec:
    for s in ALL_FIGURES:
        if s.key == key:
            return s
    raise KeyError(f"no figure {key!r}; known: {', '.join(s.key for s in ALL_FIGURES)}")


# ---- drawing: Experiment 2 --------------------------------------------------------------------------------
@dataclass
class Drawn:
    spec: FigureSpec
    stem: str
    figure: Figure
    data: pd.DataFrame
    files: dict[str, Path]


def draw(key: str, run: RunData, out: Path | None, trial: str | None = None, layers=None) -> Drawn:
    """Draw one run figure (for `trial`, default the chapter's) and, with `out`, save PNG + data there."""
    s = spec(key)
    trial = trial or s.trial
    data = s.data(run, trial, layers)
    fig = s.draw(data, run.describe(trial, layers))
    files = save_figure(fig, data, out, s.stem(trial), s.formats) if out is not None else {}
    return Drawn(s, s.stem(trial), fig, data, files)


def draw_reference(key: str, measurements, stats, out: Path | None) -> Drawn:
    s = spec(key)
    data = s.data(measurements, stats)
    if key == "pythia410m_training":
        head = reference.header(sorted(stats["layer"].unique()), float(stats["total_tokens"].max()))
    else:
        head = reference.header(sorted(measurements))
    fig = s.draw(data, head)
    files = save_figure(fig, data, out, s.stem(), s.formats) if out is not None else {}
    return Drawn(s, s.stem(), fig, data, files)


def run_figures_for(run: RunData) -> list[tuple[FigureSpec, str | None]]:
    """The (figure, trial) pairs a run folder can draw: each chapter's figures for the trials it has."""
    have = set(run.measurements["trial"])
    out = []
    for s in RUN_FIGURES:
        if s.trial is None:
            if have:
                out.append((s, None))
        elif s.trial in have:
            out.append((s, s.trial))
    return out


def _index_entry(d: Drawn, out: Path) -> dict:
    return {
        "figure": d.stem,
        "chapter": d.spec.chapter,
        "heading": d.spec.heading,
        "files": sorted(str(p.relative_to(out)) for p in d.files.values()),
        "rows": len(d.data),
    }


def draw_run_folder(
    run_folder: Path, out: Path, layers=None, with_reference: bool = False, progress: bool = False
) -> dict:
    """Draw every figure a run folder (and optionally the Pythia-410M reference data) supports into `out`;
    return the index of what was drawn and what was skipped, and why (`kdsae figures` saves it)."""
    matplotlib.use("Agg")
    run = run_data.load_run(run_folder, layers=layers)
    index = {"run": str(run_folder), "describes": run.describe(layers=layers), "figures": [], "skipped": []}
    for s, trial in tqdm(run_figures_for(run), desc="figures", unit="fig", disable=not progress):
        try:
            d = draw(s.key, run, out, trial, layers)
        except MissingData as e:
            index["skipped"].append({"figure": s.stem(trial), "why": str(e)})
            continue
        index["figures"].append(_index_entry(d, out))
    if with_reference:
        try:
            ms, stats = reference_data.reference_measurements(), reference_data.reference_training_stats()
        except MissingData as e:
            index["skipped"] += [{"figure": s.stem(), "why": str(e)} for s in REFERENCE_FIGURES]
        else:
            for s in REFERENCE_FIGURES:
                index["figures"].append(_index_entry(draw_reference(s.key, ms, stats, out), out))
    return index


# ---- drawing: the toy model (Experiment 1) ----------------------------------------------------------------
def draw_toy(results: dict, folder) -> dict[str, dict]:
    """Draw the three toy figures into `folder`: each PNG with the data it plots (CSV) beside it."""
    return {s.key: save_figure(s.draw(results), s.data(results), Path(folder), s.key) for s in TOY_FIGURES}


def drawable_why(ev: toy_analysis.ToyEvidence) -> list[str]:
    """The 'why' figures this evidence can draw (`toy_why.missing` says why the others cannot)."""
    absent = toy_why.missing(ev)
    return [s.key for s in WHY_FIGURES if s.key not in absent]


def draw_why(ev: toy_analysis.ToyEvidence, folder) -> dict[str, dict]:
    """Draw every 'why' figure the evidence allows into `folder`, each PNG with the data it plots beside it."""
    return {key: save_figure(spec(key).draw(ev), spec(key).data(ev), Path(folder), key) for key in drawable_why(ev)}
