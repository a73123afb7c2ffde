"""What the Experiment 2 chapter notebooks call: open the run they render, draw a figure through the
catalog (PNG + data into the chapter's figure folder), and say one computed sentence about it.

Notebooks stay thin: parameters, `open_chapter(...)`, `ch.show(key)`, `ch.say(sentence(...))`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kdsae_core.common import paths
from kdsae_core.runs import reference as reference_data
from kdsae_core.runs import tables as run_data
from kdsae_core.book.params import resolve
from kdsae_core.common.errors import InvalidParameter, MissingData, RunFolderError
from kdsae_core.figures import exp2_catalog as cat

SOURCES = ("local", "hub")


def _hub_run(trial: str, layers) -> Path:
    from kdsae_core.hub.published import fetch_trial  # here: a local run never needs torch or huggingface_hub
    return Path(fetch_trial(trial, layers=layers))


def _retrain(run: Path, trials: list[str], layers, out: Path) -> Path:
    """rerun=True: train again with the run's own config, into a fresh folder beside the figures."""
    from kdsae_core.train.trainer import retrain_like
    return Path(retrain_like(run, out / "rerun", trials=trials, layers=layers))


def open_run(run: str | Path = "results/exp2/embedded", source: str = "local", trials=None, layers=None,
             rerun: bool = False, out: Path | None = None) -> run_data.RunData:
    if source not in SOURCES:
        raise InvalidParameter(f"source must be one of {', '.join(SOURCES)} (got {source!r}).")
    layers = None if layers is None else [int(v) for v in layers]
    if source == "hub":
        runs = [run_data.load_run(_hub_run(t, layers), trials=[t], layers=layers) for t in (trials or ["A", "B", "C"])]
        return run_data.combine_runs(runs)
    folder = resolve(run)
    if rerun:
        folder = _retrain(folder, trials or ["A", "B", "C"], layers, out or paths.figures_out("rerun"))
    return run_data.load_run(folder, trials=trials, layers=layers)


class Chapter:
    """One chapter's run, figure folder and display helpers."""

    def __init__(self, name: str, run: run_data.RunData, out: Path, trial: str | None, layers=None):
        self.name, self.run, self.out, self.trial, self.layers = name, run, Path(out), trial, layers
        self.drawn: dict[str, cat.Drawn] = {}

    def header(self) -> None:
        from IPython.display import Markdown, display
        trial = f" Trial shown: {self.run.describe_trial(self.trial)}." if self.trial else ""
        display(Markdown(f"> **What this page shows.** {self.run.scale_note()}{trial} Figures and their data: "
                         f"`{paths.display_path(self.out)}`."))

    def show(self, key: str, trial: str | None = None) -> cat.Drawn:
        from IPython.display import Image, display
        d = cat.draw(key, self.run, self.out, trial or self.trial or cat.spec(key).trial, self.layers)
        self.drawn[key] = d
        display(Image(filename=str(d.files["png"])))  # exactly the saved file
        return d

    def say(self, text: str) -> None:
        from IPython.display import Markdown, display
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
    import matplotlib
    matplotlib.rcParams["figure.max_open_warning"] = 0
    folder = Path(out) if out else paths.figures_out(name)
    folder = resolve(folder).resolve()
    if folder == paths.RESULTS.resolve() or paths.RESULTS.resolve() in folder.parents:
        raise RunFolderError(f"figure folder {folder} is inside results/: figures are derived, write them elsewhere.")
    want = trials if trials is not None else ([trial] if trial else None)
    data = open_run(run, source, want, layers, rerun, folder)
    if trial and trial not in data.trials:
        raise MissingData(f"the run {data.folder} has no trial {trial} (it has {', '.join(data.trials) or 'none'}).")
    return Chapter(name, data, folder, trial, layers)


# ---- pilots (chapter 05) -------------------------------------------------------------------------------
MAIN_TRIALS = ("A", "B", "C")
PILOT_LAMBDAS = (1e-4, 2e-4, 7e-4)  # the authors' pilot coefficients, in trial A's `mean` form


def with_pilots(ch: Chapter, pilots: bool, rerun: bool = False) -> Chapter:
    """pilots=False: the three trials only. pilots=True: also the run's pilot trials (any trial other than
    A, B, C); a run without them trains them with the SAE engine (minutes), into the figure folder."""
    run = ch.run
    extra = [t for t in run.trials if t not in MAIN_TRIALS]
    if not pilots:
        ch.run = run.only([t for t in run.trials if t in MAIN_TRIALS])
        return ch
    if extra and not rerun:
        return ch
    from kdsae_core.train.trainer import train_pilots_like
    folder = train_pilots_like(run.folder, ch.out / "pilots", lambdas=PILOT_LAMBDAS, layers=ch.layers)
    ch.run = run_data.combine_runs([run.only([t for t in run.trials if t in MAIN_TRIALS]),
                                    run_data.load_run(folder, layers=ch.layers)])
    return ch


# ---- one computed sentence per figure ------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def sentence(key: str, data: pd.DataFrame) -> str:
    """A sentence of interpretation, computed from exactly the data the figure plotted."""
    return _SENTENCES[key](data)


def _training(d: pd.DataFrame) -> str:
    by = d.groupby("tokens")["mse"].mean()
    tail = by[by.index >= by.index.max() * 0.9]
    change = (tail.iloc[-1] - tail.iloc[0]) / tail.iloc[0] if len(tail) > 1 else float("nan")
    return (f"Layer-mean MSE fell from {by.iloc[0]:.3g} at the first logged step to {by.iloc[-1]:.3g}; over the last "
            f"10% of training tokens it moved by {_pct(change)}, so the final snapshot is "
            f"{'close to converged' if abs(change) < 0.05 else 'still moving: read its numbers as provisional'}.")


def _card(d: pd.DataFrame) -> str:
    hi, lo = d.loc[d["d_star_S"].idxmax()], d.loc[d["d_star_S"].idxmin()]
    return (f"Critical width ranges from {lo['d_star_S']:,.1f} (layer {int(lo['layer'])}) to {hi['d_star_S']:,.1f} "
            f"(layer {int(hi['layer'])}); dead latents total {int(d['dead'].sum()):,}.")


def _kd(d: pd.DataFrame) -> str:
    d_model = int(d["d_in"].iloc[0])
    above = int((d["d_star_S"] > d_model).sum())
    return (f"d*_S exceeds the teacher's width d_model = {d_model} at {above} of {len(d)} layers: there, even a student "
            "as wide as the teacher is predicted to lose features (a non-zero floor).")


def _l0mse(d: pd.DataFrame) -> str:
    r = d[["L0", "mse"]].rank().corr().iloc[0, 1] if len(d) > 2 else float("nan")
    return (f"Across layers, L0 and MSE have Spearman rank correlation {r:+.2f}: "
            f"{'layers that keep more latents active also reconstruct worse; lambda is the same for all, so the layer drives both' if r > 0.3 else 'more active latents go with better reconstruction' if r < -0.3 else 'no consistent ordering'}.")


def _floors(d: pd.DataFrame) -> str:
    f = d[d["source"] == "file"]
    if f.empty:
        return "The measurement files hold no predictions at fixed widths."
    half = int(f["width"].iloc[(f["width"] - f["d_in"].iloc[0] / 2).abs().argmin()])
    at = f[f["width"] == half]["floor_frac"]
    return (f"At d_S = {half} (half the teacher's width) the predicted floor is {_pct(at.min())}\u2013{_pct(at.max())} "
            "of L\u221e across layers; it reaches 0 only at d*_S.")


def _sidecar(d: pd.DataFrame) -> str:
    return (f"The top 10% of alive latents hold {_pct(d['top10pct_share'].min())}\u2013{_pct(d['top10pct_share'].max())} "
            "of each layer's L\u221e; the more concentrated the importance, the further the refined floor sits below "
            "the naive one.")


def _headline(d: pd.DataFrame) -> str:
    r = d.iloc[0]
    return (f"Mean \u03b1 {r['mean_alpha']:.4f} and mean L0 {r['mean_L0']:,.1f} over {int(r['n_layers'])} layers, "
            f"with {int(r['total_dead']):,} dead latents in total.")


def _corr(d: pd.DataFrame) -> str:
    from kdsae_core.figures.exp2_common import short
    from kdsae_core.figures.exp2_trial_b import definitional
    off = d[d["metric_x"] < d["metric_y"]].dropna(subset=["r"])
    found = off[[not definitional(x, y) for x, y in zip(off["metric_x"], off["metric_y"])]]
    if found.empty:
        return "Too few varying metrics for a correlation that is not fixed by definition."
    top = found.loc[found["r"].abs().idxmax()]
    pair = d[(d["metric_x"] == "alpha") & (d["metric_y"] == "dead")]["r"]
    extra = f" \u03b1 vs dead latents: r = {pair.iloc[0]:+.2f}." if len(pair) and pd.notna(pair.iloc[0]) else ""
    return (f"Strongest relation over {int(d['n_layers'].iloc[0])} layers that is not fixed by definition (the grey "
            f"cells, such as L0 vs \u03b1, are arithmetic): {short(top['metric_x'])} vs {short(top['metric_y'])} "
            f"(r = {top['r']:+.2f}); with this few layers, read the signs.{extra}")


def _dashboard(d: pd.DataFrame) -> str:
    t = d["target_L0"].dropna()
    if not len(t):
        return f"Mean L0 {d['L0'].mean():,.1f}; {int(d['dead'].sum()):,} dead latents in total."
    off = (d["L0"] / float(t.iloc[0]) - 1).abs()
    return (f"Final L0 is within 10% of the target {float(t.iloc[0]):g} at {int((off <= 0.1).sum())} of {len(d)} layers "
            f"(largest miss {_pct(off.max())}); {int(d['dead'].sum()):,} dead latents in total.")


def _controller(d: pd.DataFrame) -> str:
    last = d.sort_values("tokens").groupby("layer").tail(1)
    t = d["target_L0"].dropna()
    lam = f"final \u03bb ranges {last['lambda'].min():.2e}\u2013{last['lambda'].max():.2e}"
    if not len(t):
        return f"No target L0 in the config; {lam}."
    off = (last["L0"] / float(t.iloc[0]) - 1).abs()
    d = d.sort_values("tokens")
    rise = d.groupby("layer")["lambda"].agg(lambda v: v.max() / v.iloc[0])
    return (f"At the last logged step L0 is within 10% of the target at {int((off <= 0.1).sum())} of {len(last)} layers; "
            f"{lam}, one value per layer, found by the controller. On the way λ overshot to "
            f"{rise.min():.0f}–{rise.max():.0f}x its start while the logged L0 fell as low as {d['L0'].min():.1f}.")


def _landscape(d: pd.DataFrame) -> str:
    slope = np.polyfit(d["layer"], d["alpha"], 1)[0] if len(d) > 1 else 0.0
    return (f"\u03b1 {'rises' if slope > 0 else 'falls'} through depth by {abs(slope):.2g} per layer on average "
            f"(least squares), from {d['alpha'].iloc[0]:.4f} at layer {int(d['layer'].iloc[0])} to "
            f"{d['alpha'].iloc[-1]:.4f} at layer {int(d['layer'].iloc[-1])}.")


def _frontier(d: pd.DataFrame) -> str:
    m = d.groupby("trial")[["L0", "mse"]].mean()
    parts = [f"trial {t}: mean L0 {r.L0:,.1f}, MSE {r.mse:.3g}" for t, r in m.iterrows()]
    by_layer = [np.all(np.diff(g.sort_values("L0")["mse"].to_numpy()) < 0) for _, g in d.groupby("layer")]
    verdict = (f"At {sum(by_layer)} of {len(by_layer)} layers every step to a sparser trial (lower L0) costs "
               "reconstruction (higher MSE)")
    return "; ".join(parts) + f". {verdict}" + (": the trials trace one trade-off." if all(by_layer) else ".")


def _same(text):
    return lambda d: text


_SENTENCES = {
    "training_curves": _training, "summary_card": _card, "kd_quantities": _kd, "l0_vs_mse": _l0mse,
    "predicted_floors": _floors, "paper_heatmap": _card,
    "slides_heatmap": _same("The same final-snapshot numbers as variant 1, four metrics only."),
    "appendix_sidecar": _sidecar,
    "small_multiples": _same("Each panel is one layer; bars are relative to the other layers, numbers are measured."),
    "smooth_depth": _same("Colour between the white lines is interpolated between measured layers, not measured."), "correlation": _corr, "headline": _headline,
    "dashboard": _dashboard, "depth_landscape": _landscape, "controller": _controller, "frontier": _frontier,
}


# ---- the Pythia-410M reference chapter (06) -------------------------------------------------------------
class ReferenceChapter:
    """The authors' released measurements if present (KDSAE_REFERENCE_DIR, fetch-reference), else only the
    published table and one sentence on how to get the rest."""

    def __init__(self, reference_dir: str | Path = "", out: str | Path = ""):
        import matplotlib
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
        from IPython.display import Markdown, display
        src = (f"the authors' released files (`{self.ref.name}`, from KDSAE_REFERENCE_DIR or `kdsae fetch-reference`)"
               if self.available else "the published table only")
        display(Markdown(f"> **What this page shows.** EleutherAI/pythia-410m (24 layers, d_model 1024), SAEs with "
                         f"32,768 latents trained on 300M Pile tokens, layers 8, 12 and 16 (0-based), from {src}. "
                         f"Not a run of this companion."))

    def say(self, text: str) -> None:
        from IPython.display import Markdown, display
        display(Markdown(text))

    def show(self, key: str) -> cat.Drawn:
        from IPython.display import Image, display
        d = cat.draw_reference(key, self.measurements, self.stats, self.out)
        display(Image(filename=str(d.files["png"])))
        return d


def reference_sentence(key: str, ch: ReferenceChapter) -> str:
    if key == "pythia410m_importance":
        parts = []
        for layer, m in sorted(ch.measurements.items()):
            kept = int(np.floor(128 * m.g_alpha))
            share = float(m.sorted_importance[:kept].sum() / m.L_inf)
            parts.append(f"layer {layer}: a width-128 student keeps {kept:,} of {m.F_alive:,} features "
                         f"({_pct(kept / m.F_alive)}) holding {100 * share:.3f}% of L\u221e")
        return "; ".join(parts) + ". Few features carry almost all of the importance."
    if key == "pythia410m_floors":
        parts = [f"layer {layer}: d*_S = {m.d_star_S:,.1f} > d_model 1024" if m.d_star_S > 1024 else
                 f"layer {layer}: d*_S = {m.d_star_S:,.1f}" for layer, m in sorted(ch.measurements.items())]
        return ("; ".join(parts) + ". The naive floor (features dropped \u00d7 L\u221e/F) is far above the refined one "
                "because the dropped features are the least important.")
    if key == "pythia410m_training":
        last = ch.stats.sort_values("tokens").groupby("layer").tail(1).sort_values("layer")
        parts = [f"layer {int(r.layer)}: \u03bb {r.l1_coeff:.0e}, final L0 {r.L0:,.1f}" for r in last.itertuples()]
        return ("; ".join(parts) + ". The released layer-8 curves come from a \u03bb 3e-4 run, not from the run behind "
                "the published layer-8 row (L0 234.9)." if any(abs(r.l1_coeff - 3e-4) < 1e-12 for r in last.itertuples()
                                                               if r.layer == 8) else "; ".join(parts) + ".")
    raise KeyError(key)
