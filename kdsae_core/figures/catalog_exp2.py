"""The catalog's Experiment 2 families: `RUN_FIGURES`, drawn from a run folder for the trial chapters and the
comparison of trials, and `REFERENCE_FIGURES`, drawn from the Pythia-410M reference data. `figures.catalog` joins
them with the toy families, looks figures up and draws them (its docstring lists what each family's functions take).
"""

from __future__ import annotations

import pandas as pd

from kdsae_core.figures import exp2_compare, reference
from kdsae_core.figures import exp2_trial_a as trial_a
from kdsae_core.figures import exp2_trial_b as trial_b
from kdsae_core.figures import exp2_trial_c as trial_c
from kdsae_core.figures.figure_spec import FigureSpec
from kdsae_core.runs.tables import RunData


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
