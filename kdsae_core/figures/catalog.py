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

The toy families are listed here, the Experiment 2 families in `figures.catalog_exp2`; an entry is a
`figures.figure_spec.FigureSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from kdsae_core.common.errors import MissingData
from kdsae_core.figures import reference, toy, toy_sentences, toy_why, toy_why_sentences
from kdsae_core.figures.catalog_exp2 import REFERENCE_FIGURES, RUN_FIGURES
from kdsae_core.figures.figure_spec import FigureSpec
from kdsae_core.figures.style import save_figure
from kdsae_core.runs import reference as reference_data
from kdsae_core.runs import tables as run_data
from kdsae_core.runs.tables import RunData
from kdsae_core.toy import analysis as toy_analysis

TOY_CHAPTER = "01_toy_validation"


TOY_FIGURES: list[FigureSpec] = [
    FigureSpec(
        "toy_loss_vs_width",
        TOY_CHAPTER,
        "Loss floor vs student width",
        "The central test of the theory: measured floors (seed median and range) against the predicted refined "
        "and naive floors, with d*_S marked.",
        toy.loss_vs_width_data,
        toy.loss_vs_width,
        toy_sentences.loss_sentence,
    ),
    FigureSpec(
        "toy_accuracy_grid",
        TOY_CHAPTER,
        "Accuracy per (alpha, F)",
        "How closely measured matches predicted in each cell of the grid: where the closed form can be trusted.",
        toy.accuracy_grid_data,
        toy.accuracy_grid,
        toy_sentences.accuracy_sentence,
    ),
    FigureSpec(
        "toy_measured_vs_predicted",
        TOY_CHAPTER,
        "Measured vs predicted",
        "Every (configuration, width) pair against the diagonal, and the measured knee against d*_S.",
        toy.measured_vs_predicted_data,
        toy.measured_vs_predicted,
        toy_sentences.knee_sentence,
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
        toy_why_sentences.teachers_sentence,
    ),
    FigureSpec(
        "toy_why_represented",
        TOY_CHAPTER,
        "Represented features against the budget, and what the floor is made of",
        "Features a student represents against its budget F_S, and its floor split into the loss the theory "
        "counts (dropped features) and the loss it sets to zero (interference, shrinkage).",
        toy_why.represented_data,
        toy_why.represented,
        toy_why_sentences.represented_sentence,
    ),
    FigureSpec(
        "toy_why_profiles",
        TOY_CHAPTER,
        "The importance profile",
        "The paper grid under each importance profile: whether any reaches 93%.",
        toy_why.profiles_data,
        toy_why.profiles,
        toy_why_sentences.profiles_sentence,
    ),
    FigureSpec(
        "toy_why_affine",
        TOY_CHAPTER,
        "The abstract's affine decomposition, read onto the toy model",
        "A calibration fitted per sparsity on n = 10, 20 and judged on the held-out n = 40.",
        toy_why.affine_data,
        toy_why.affine,
        toy_why_sentences.affine_sentence,
    ),
    FigureSpec(
        "toy_why_knee",
        TOY_CHAPTER,
        "Where the loss bottoms out, without a teacher",
        "Students trained on the task past the predicted knee: where the loss stops falling.",
        toy_why.knee_data,
        toy_why.knee,
        toy_why_sentences.knee_sentence,
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
