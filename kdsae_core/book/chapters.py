"""What the Experiment 2 chapter notebooks call: open the run they render, draw a figure through the
catalog (PNG + data into the chapter's figure folder), and say one computed sentence about it.

Notebooks stay thin: parameters, `open_chapter(...)`, `ch.show(key)`, `ch.say(sentence(...))`.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pandas as pd
from IPython.display import Image, Markdown, display

from kdsae_core.book.param_rules import check_pilot_lambdas
from kdsae_core.book.params import SOURCES, figure_folder, resolve
from kdsae_core.common import paths
from kdsae_core.common.errors import InvalidParameter, MissingData
from kdsae_core.figures import catalog as cat
from kdsae_core.hub.published import fetch_trial
from kdsae_core.runs import layout
from kdsae_core.runs import reference as reference_data
from kdsae_core.runs import tables as run_data
from kdsae_core.sae.model import TRIAL_NAMES
from kdsae_core.train.config import SAETrainConfig
from kdsae_core.train.settings import BY_NAME, notebook_settings
from kdsae_core.train.trainer import retrain_like, train_pilots_like


def _hub_run(trial: str, layers) -> Path:
    return Path(fetch_trial(trial, layers=layers))


def _retrain(run: Path, trials: list[str], layers, out: Path, settings: dict | None = None) -> Path:
    """rerun=True: train again with the run's config and the chapter's science settings (None: the run's own),
    into a fresh folder beside the figures; training and measuring show text progress bars."""
    return Path(retrain_like(run, out / "rerun", trials=trials, layers=layers, settings=settings, progress=True))


def open_run(
    run: str | Path = "results/exp2/embedded",
    source: str = "local",
    trials=None,
    layers=None,
    rerun: bool = False,
    out: Path | None = None,
    settings: dict | None = None,
) -> run_data.RunData:
    if source not in SOURCES:
        raise InvalidParameter(f"source must be one of {', '.join(SOURCES)} (got {source!r}).")
    layers = None if layers is None else [int(v) for v in layers]
    if source == "hub":
        runs = [run_data.load_run(_hub_run(t, layers), trials=[t], layers=layers) for t in (trials or TRIAL_NAMES)]
        return run_data.combine_runs(runs)
    folder = resolve(run)
    if rerun:
        folder = _retrain(folder, trials or list(TRIAL_NAMES), layers, out or paths.figures_out("rerun"), settings)
    return run_data.load_run(folder, trials=trials, layers=layers)


def _settings_of(folder: Path) -> SAETrainConfig:
    return SAETrainConfig.from_json(json.loads(layout.run_config(folder).read_text())["settings"])


def changed_settings(rerun: Path, committed: Path) -> str:
    """The settings of a retrained run that differ from the committed run's, as one phrase (trials and layers
    shown are named by the box already)."""
    diff = [
        (name, mine, theirs)
        for name, mine, theirs in _settings_of(rerun).differences(_settings_of(committed))
        if name not in ("trials", "layers")
    ]
    if not diff:
        return "the committed run's own settings"
    return "settings that differ from the committed run: " + ", ".join(
        f"`{BY_NAME[name].parameter}` {mine!r} (committed: {theirs!r})" for name, mine, theirs in diff
    )


class Chapter:
    """One chapter's run, figure folder and display helpers."""

    def __init__(
        self, name: str, run: run_data.RunData, out: Path, trial: str | None, layers=None, committed: Path | None = None
    ):
        self.name, self.run, self.out, self.trial, self.layers = name, run, Path(out), trial, layers
        self.committed = committed  # rerun: the run folder whose settings it started from
        self.drawn: dict[str, cat.Drawn] = {}

    def header(self) -> None:
        trial = f" Trial shown: {self.run.describe_trial(self.trial)}." if self.trial else ""
        rerun = ""
        if self.committed is not None:
            rerun = (
                f" **Retrained now** from `{paths.display_path(self.committed)}`, with "
                f"{changed_settings(self.run.folder, self.committed)}."
            )
        display(
            Markdown(
                f"> **What this page shows.** {self.run.scale_note()}{trial}{rerun} Figures and their data: "
                f"`{paths.display_path(self.out)}`."
            )
        )

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


def open_chapter(
    name: str,
    trial: str | None = None,
    source: str = "local",
    layers=None,
    run: str | Path = "results/exp2/embedded",
    rerun: bool = False,
    out: str | Path = "",
    trials=None,
    settings: dict | None = None,
) -> Chapter:
    """`settings`: the chapter's science parameters by their names there (l1_lambda, target_l0, ...; None: the
    run's own), used when `rerun` retrains."""
    matplotlib.rcParams["figure.max_open_warning"] = 0
    folder = figure_folder(out, name)
    want = trials if trials is not None else ([trial] if trial else None)
    science = training_settings(trial, settings or {})
    data = open_run(run, source, want, layers, rerun, folder, science)
    if trial and trial not in data.trials:
        raise MissingData(f"the run {data.folder} has no trial {trial} (it has {', '.join(data.trials) or 'none'}).")
    committed = resolve(run) if rerun and source == "local" else None
    return Chapter(name, data, folder, trial, layers, committed)


def training_settings(trial: str | None, parameters: dict) -> dict:
    """A chapter's science parameters (named as in its parameters cell) as training settings: {setting: value}
    for those given (not None)."""
    declared = notebook_settings(trial)
    unknown = sorted(k for k, v in parameters.items() if v is not None and k not in declared)
    if unknown:
        raise InvalidParameter(
            f"no science setting {', '.join(unknown)} for trial {trial or 'comparison'}: use {', '.join(declared)}."
        )
    return {declared[k].name: declared[k].check(v, k) for k, v in parameters.items() if v is not None}


# ---- pilots (chapter 05) -------------------------------------------------------------------------------
PILOT_LAMBDAS = (1e-4, 2e-4, 7e-4)  # the authors' pilot coefficients, in trial A's `mean` form


def with_pilots(ch: Chapter, pilots: bool, rerun: bool = False, lambdas=None, settings: dict | None = None) -> Chapter:
    """pilots=False: the three trials only. pilots=True: also the run's pilot trials (any trial other than
    A, B, C); a run without them, or a rerun, trains them with the SAE engine (minutes), into the figure folder:
    `lambdas` (None: the authors' PILOT_LAMBDAS), with the chapter's science `settings`."""
    run = ch.run
    extra = [t for t in run.trials if t not in TRIAL_NAMES]
    if not pilots:
        ch.run = run.only([t for t in run.trials if t in TRIAL_NAMES])
        return ch
    if extra and not rerun:
        return ch
    lambdas = PILOT_LAMBDAS if lambdas is None else check_pilot_lambdas(lambdas)
    source = ch.committed or run.folder  # a rerun's pilots start from the committed run's settings, as its trials
    folder = train_pilots_like(
        source,
        ch.out / "pilots",
        lambdas=lambdas,
        layers=ch.layers,
        settings=training_settings(None, settings or {}),
        progress=True,
    )
    ch.run = run_data.combine_runs(
        [run.only([t for t in run.trials if t in TRIAL_NAMES]), run_data.load_run(folder, layers=ch.layers)]
    )
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
        return (
            "The released importance arrays and training curves are not on this machine: run "
            "`kdsae fetch-reference` (or set `KDSAE_REFERENCE_DIR`) and rebuild the page to draw the importance "
            "distribution, the predicted floors and the training curves."
        )

    def header(self) -> None:
        src = (
            f"the authors' released files (`{self.ref.name}`, from KDSAE_REFERENCE_DIR or `kdsae fetch-reference`)"
            if self.available
            else "the published table only"
        )
        display(
            Markdown(
                f"> **What this page shows.** EleutherAI/pythia-410m (24 layers, d_model 1024), SAEs with "
                f"32,768 latents trained on 300M Pile tokens, layers 8, 12 and 16 (0-based), from {src}. "
                f"Not a run of this companion."
            )
        )

    def say(self, text: str) -> None:
        display(Markdown(text))

    def show(self, key: str) -> cat.Drawn:
        d = cat.draw_reference(key, self.measurements, self.stats, self.out)
        display(Image(filename=str(d.files["png"])))
        return d


def reference_sentence(key: str, ch: ReferenceChapter) -> str:
    return cat.spec(key).sentence(ch.measurements, ch.stats)
