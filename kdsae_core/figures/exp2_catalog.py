"""Every Experiment 2 figure of the book in one list: which chapter draws it, from which data, and why.

`kdsae figures`, the chapter notebooks and the gallery all draw through `draw()`, so a figure's PNG,
its data file and its gallery entry can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
from matplotlib.figure import Figure

from kdsae_core.runs.tables import RunData
from kdsae_core.figures import exp2_compare, exp2_trial_a, exp2_trial_b, exp2_trial_c, reference
from kdsae_core.figures.exp2_common import save


@dataclass(frozen=True)
class FigureSpec:
    key: str  # file stem after the trial prefix, e.g. "training_curves"
    chapter: str  # notebook stem, e.g. "02_trial_a"
    trial: str | None  # the trial the chapter draws it for (None: all trials / reference data)
    heading: str  # the notebook heading above the cell that draws it (the gallery links there)
    rationale: str  # why this figure / variant, for the gallery
    data: Callable  # (run, trial, layers) -> DataFrame, or reference inputs -> DataFrame
    draw: Callable[[pd.DataFrame, str], Figure]
    formats: tuple[str, ...] = ("png",)

    @property
    def anchor(self) -> str:
        from docutils.nodes import make_id
        return make_id(self.heading)

    def stem(self, trial: str | None = None) -> str:
        trial = trial or self.trial
        return f"trial{trial}_{self.key}" if trial else self.key


def _b(key):
    return getattr(exp2_trial_b, f"{key}_data", exp2_trial_b.metrics_data)


RUN_FIGURES: list[FigureSpec] = [
    # ---- trial A
    FigureSpec("training_curves", "02_trial_a", "A", "Training curves",
               "MSE, L1 and the combined loss over training tokens, every layer on each panel (log y): shows "
               "whether each layer's SAE has converged before it is measured.",
               exp2_trial_a.training_curves_data, exp2_trial_a.training_curves),
    FigureSpec("summary_card", "02_trial_a", "A", "Summary card",
               "One row per layer with the numbers printed; shading is per column, so it ranks layers within a "
               "metric without implying that different metrics share a scale.",
               exp2_trial_a.summary_card_data, exp2_trial_a.summary_card),
    FigureSpec("kd_quantities", "02_trial_a", "A", "The three KD quantities",
               "alpha, g(alpha) and d*_S side by side: the chain from sparsity to critical width, with the "
               "teacher's width drawn on the d*_S panel.", exp2_trial_a.kd_quantities_data, exp2_trial_a.kd_quantities),
    FigureSpec("l0_vs_mse", "02_trial_a", "A", "L0 vs reconstruction",
               "Where each layer sits in the sparsity-reconstruction trade-off under one fixed lambda.",
               exp2_trial_a.l0_vs_mse_data, exp2_trial_a.l0_vs_mse),
    FigureSpec("predicted_floors", "02_trial_a", "A", "Predicted floor vs student width",
               "The refined floor L*(d_S) from each layer's measured importance, with the widths the measurement "
               "file predicts as dots and d*_S dotted: the theorem's prediction for a distilled student.",
               exp2_trial_a.predicted_floors_data, exp2_trial_a.predicted_floors),
    # ---- trial B: seven renderings of the same measurements
    FigureSpec("paper_heatmap", "03_trial_b", "B", "Variant 1 paper heatmap",
               "The paper's choice: annotated, one sequential palette (no diverging colours: no metric has a "
               "meaningful midpoint), readable in greyscale; also saved as SVG for print.",
               _b("paper_heatmap"), exp2_trial_b.paper_heatmap, ("png", "svg")),
    FigureSpec("slides_heatmap", "03_trial_b", "B", "Variant 2 compact slide palette",
               "For slides: four metrics, large numbers, a conservative grey palette that survives projectors.",
               _b("slides_heatmap"), exp2_trial_b.slides_heatmap),
    FigureSpec("appendix_sidecar", "03_trial_b", "B", "Variant 3 heatmap with sidecar",
               "For the appendix: the full table plus per-layer mini statistics from the importance "
               "distribution (top-10% share, features kept and floor at d_S = d_model).",
               _b("appendix_sidecar"), exp2_trial_b.appendix_sidecar),
    FigureSpec("small_multiples", "03_trial_b", "B", "Variant 4 small multiples",
               "Every layer's metric vector on one page: compares the shape of layers rather than one metric.",
               _b("small_multiples"), exp2_trial_b.small_multiples),
    FigureSpec("smooth_depth", "03_trial_b", "B", "Variant 5 smooth gradient",
               "Trends through depth at a glance; colour between layers is linear interpolation, labelled as such "
               "(not used for numbers).", _b("smooth_depth"), exp2_trial_b.smooth_depth),
    FigureSpec("correlation", "03_trial_b", "B", "Variant 6 metric correlations",
               "Which per-layer quantities move together across depth (e.g. alpha vs dead latents); Pearson r over "
               "few layers, so read signs, not decimals. A diverging palette here because r has a midpoint (0).",
               _b("correlation"), exp2_trial_b.correlation),
    FigureSpec("headline", "03_trial_b", "B", "Variant 7 headline card",
               "The three numbers a talk opens with: mean alpha, mean L0, total dead latents.",
               _b("headline"), exp2_trial_b.headline),
    # ---- trial C
    FigureSpec("dashboard", "04_trial_c", "C", "Dashboard",
               "Layer by metric with the numbers: L0 against its target, alpha, g(alpha), MSE and dead latents.",
               exp2_trial_c.dashboard_data, exp2_trial_c.dashboard),
    FigureSpec("depth_landscape", "04_trial_c", "C", "Depth landscape",
               "Every per-layer property as a profile through depth, one panel each (own units and scale).",
               exp2_trial_c.depth_landscape_data, exp2_trial_c.depth_landscape),
    FigureSpec("controller", "04_trial_c", "C", "Controller trajectories",
               "The evidence that the adaptive controller reached its target: lambda and L0 per layer over "
               "training, with the target line.", exp2_trial_c.controller_data, exp2_trial_c.controller),
    # ---- all trials
    FigureSpec("frontier", "05_trials_compared", None, "The sparsity-reconstruction frontier",
               "Every layer of every trial in the L0-MSE plane: the three trials are corners of one trade-off "
               "(dense A, paper-exact B, sparse C); pilots add points along it.",
               lambda run, trial, layers: exp2_compare.frontier_data(run, None, layers), exp2_compare.frontier),
]

REFERENCE_FIGURES: list[FigureSpec] = [
    FigureSpec("pythia410m_importance", "06_pythia_reference", None, "Importance distribution",
               "The released E[z^2] importances on log-log axes, with the share of L_inf a width-d_S student keeps.",
               lambda ms, stats: reference.importance_distribution_data(ms), reference.importance_distribution),
    FigureSpec("pythia410m_floors", "06_pythia_reference", None, "Predicted floors vs width",
               "Refined and naive floors at every width, linear and log scale; d*_S and d_model marked.",
               lambda ms, stats: reference.floors_vs_width_data(ms), reference.floors_vs_width),
    FigureSpec("pythia410m_training", "06_pythia_reference", None, "SAE training curves",
               "The authors' released training curves (layers 8, 12, 16).",
               lambda ms, stats: reference.training_curves_data(stats), reference.training_curves),
]


def spec(key: str) -> FigureSpec:
    for s in RUN_FIGURES + REFERENCE_FIGURES:
        if s.key == key:
            return s
    raise KeyError(f"no figure {key!r}; known: {', '.join(s.key for s in RUN_FIGURES + REFERENCE_FIGURES)}")


def chapter_specs(chapter: str) -> list[FigureSpec]:
    return [s for s in RUN_FIGURES + REFERENCE_FIGURES if s.chapter == chapter]


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
    header = run.describe(trial, layers)
    fig = s.draw(data, header)
    files = save(fig, data, out, s.stem(trial), s.formats) if out is not None else {}
    return Drawn(s, s.stem(trial), fig, data, files)


def draw_reference(key: str, measurements, stats, out: Path | None) -> Drawn:
    s = spec(key)
    data = s.data(measurements, stats)
    if key == "pythia410m_training":
        head = reference.header(sorted(stats["layer"].unique()), float(stats["total_tokens"].max()))
    else:
        head = reference.header(sorted(measurements))
    fig = s.draw(data, head)
    files = save(fig, data, out, s.stem(), s.formats) if out is not None else {}
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
