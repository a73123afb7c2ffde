"""What the Experiment 2 chapter notebooks call: open the run they render, draw a figure through the
catalog (PNG + data into the chapter's figure folder), and say one computed sentence about it.

Notebooks stay thin: parameters, `open_chapter(...)`, `ch.show(key)`, `ch.say(sentence(...))`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
from IPython.display import Image, Markdown, display

from kdsae_core.book.params import SOURCES, figure_folder, resolve
from kdsae_core.common import paths
from kdsae_core.common.errors import InvalidParameter, MissingData
from kdsae_core.figures import catalog as cat
from kdsae_core.hub.published import fetch_trial
from kdsae_core.runs import reference as reference_data
from kdsae_core.runs import tables as run_data
from kdsae_core.sae.model import TRIAL_NAMES
from kdsae_core.train.trainer import retrain_like, train_pilots_like


def _hub_run(trial: str, layers) -> Path:
    return Path(fetch_trial(trial, layers=layers))


def _retrain(run: Path, trials: list[str], layers, out: Path) -> Path:
    """rerun=True: train again with the run's own config, into a fresh folder beside the figures."""
    return Path(retrain_like(run, out / "rerun", trials=trials, layers=layers))


def open_run(run: str | Path = "results/exp2/embedded", source: str = "local", trials=None, layers=None,
             rerun: bool = False, out: Path | None = None) -> run_data.RunData:
    if source not in SOURCES:
        raise InvalidParameter(f"source must be one of {', '.join(SOURCES)} (got {source!r}).")
    layers = None if layers is None else [int(v) for v in layers]
    if source == "hub":
        runs = [run_data.load_run(_hub_run(t, layers), trials=[t], layers=layers) for t in (trials or TRIAL_NAMES)]
        return run_data.combine_runs(runs)
    folder = resolve(run)
    if rerun:
        folder = _retrain(folder, trials or list(TRIAL_NAMES), layers, out or paths.figures_out("rerun"))
    return run_data.load_run(folder, trials=trials, layers=layers)


class Chapter:
    """One chapter's run, figure folder and display helpers."""

    def __init__(self, name: str, run: run_data.RunData, out: Path, trial: str | None, layers=None):
        self.name, self.run, self.out, self.trial, self.layers = name, run, Path(out), trial, layers
        self.drawn: dict[str, cat.Drawn] = {}

    def header(self) -> None:
        trial = f" Trial shown: {self.run.describe_trial(self.trial)}." if self.trial else ""
        display(Markdown(f"> **What this page shows.** {self.run.scale_note()}{trial} Figures and their data: "
                         f"`{paths.display_path(self.out)}`."))

    def show(self, key: str, trial: str | None = None) -> cat.Drawn:
        d = cat.draw(key, self.run, self.out, trial or self.trial or cat.spec(key).trial, self.layers)
        self.drawn[key] = d
        display(Image(filename=str(d.files["png"])))  # exactly the saved file
        return d

    def say(self, text: str) -> None:
        display(Markdown(text))

    def figure(self, key: str, trial: str | None = None) -> None:
        """Show a figure and its computed sentence; if the run lacks what it needs (e.g. a hub download has
        no training log), say so in one sentence instead."""
        try:
            d = self.show(key, trial)
        except MissingData as e:
            self.say(f"*Not drawn for this run:* {e}")
            return
        self.say(sentence(key, d.data))


def open_chapter(name: str, trial: str | None = None, source: str = "local", layers=None,
                 run: str | Path = "results/exp2/embedded", rerun: bool = False, out: str | Path = "",
                 trials=None) -> Chapter:
    matplotlib.rcParams["figure.max_open_warning"] = 0
    folder = figure_folder(out, name)
    want = trials if trials is not None else ([trial] if trial else None)
    data = open_run(run, source, want, layers, rerun, folder)
    if trial and trial not in data.trials:
        raise MissingData(f"the run {data.folder} has no trial {trial} (it has {', '.join(data.trials) or 'none'}).")
    return Chapter(name, data, folder, trial, layers)


# ---- pilots (chapter 05) -------------------------------------------------------------------------------
PILOT_LAMBDAS = (1e-4, 2e-4, 7e-4)  # the authors' pilot coefficients, in trial A's `mean` form


def with_pilots(ch: Chapter, pilots: bool, rerun: bool = False) -> Chapter:
    """pilots=False: the three trials only. pilots=True: also the run's pilot trials (any trial other than
    A, B, C); a run without them trains them with the SAE engine (minutes), into the figure folder."""
    run = ch.run
    extra = [t for t in run.trials if t not in TRIAL_NAMES]
    if not pilots:
        ch.run = run.only([t for t in run.trials if t in TRIAL_NAMES])
        return ch
    if extra and not rerun:
        return ch
    folder = train_pilots_like(run.folder, ch.out / "pilots", lambdas=PILOT_LAMBDAS, layers=ch.layers)
    ch.run = run_data.combine_runs([run.only([t for t in run.trials if t in TRIAL_NAMES]),
                                    run_data.load_run(folder, layers=ch.layers)])
    return ch


# ---- one computed sentence per figure (the catalog holds each figure's sentence) -------------------------
def sentence(key: str, data: pd.DataFrame) -> str:
    """A sentence of interpretation, computed from exactly the data the figure plotted."""
    return cat.spec(key).sentence(data)


# ---- the Pythia-410M reference chapter (06) -------------------------------------------------------------
class ReferenceChapter:
    """The authors' released measurements if present (KDSAE_REFERENCE_DIR, fetch-reference), else only the
    published table and one sentence on how to get the rest."""

    def __init__(self, reference_dir: str | Path = "", out: str | Path = ""):
        matplotlib.rcParams["figure.max_open_warning"] = 0
        self.out = resolve(out).resolve() if out else paths.figures_out("06_pythia_reference")
        self.ref = Path(reference_dir).expanduser() if reference_dir else paths.reference_dir()
        self.measurements, self.stats, self.why_missing = {}, None, ""
        try:
            folder = reference_data.require_reference_dir(self.ref)
            self.measurements = reference_data.reference_measurements(folder)
            self.stats = reference_data.reference_training_stats(folder)
        except MissingData as e:
            self.why_missing = str(e)

    @property
    def available(self) -> bool:
        return bool(self.measurements) and self.stats is not None

    def published(self) -> pd.DataFrame:
        return reference_data.published_table()

    def recomputed(self) -> pd.DataFrame:
        """The released files' F and L0 with alpha, g(alpha), d*_S recomputed, beside the published values."""
        mine = reference_data.reference_table(self.ref)
        pub = self.published().set_index("layer")
        for col in ("F_alive", "L0", "alpha", "g_alpha", "d_star_S"):
            mine[f"{col} (published)"] = mine["layer"].map(pub[col])
        return mine

    def missing_sentence(self) -> str:
        return ("The released importance arrays and training curves are not on this machine: run "
                "`kdsae fetch-reference` (or set `KDSAE_REFERENCE_DIR`) and rebuild the page to draw the importance "
                "distribution, the predicted floors and the training curves.")

    def header(self) -> None:
        src = (f"the authors' released files (`{self.ref.name}`, from KDSAE_REFERENCE_DIR or `kdsae fetch-reference`)"
               if self.available else "the published table only")
        display(Markdown(f"> **What this page shows.** EleutherAI/pythia-410m (24 layers, d_model 1024), SAEs with "
                         f"32,768 latents trained on 300M Pile tokens, layers 8, 12 and 16 (0-based), from {src}. "
                         f"Not a run of this companion."))

    def say(self, text: str) -> None:
        display(Markdown(text))

    def show(self, key: str) -> cat.Drawn:
        d = cat.draw_reference(key, self.measurements, self.stats, self.out)
        display(Image(filename=str(d.files["png"])))
        return d


def reference_sentence(key: str, ch: ReferenceChapter) -> str:
    return cat.spec(key).sentence(ch.measurements, ch.stats)
