"""Per-trial figures of Experiment 2 (drawn for trial A in the book, valid for any trial).

Each figure is two pure functions: `<name>_data(run, trial, layers)` returns exactly the table the figure
plots, and `<name>(data, header)` draws it. `header` names the model, layers and token budget.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from kdsae_core import theory
from kdsae_core.figures.exp2_common import (
    CARD_METRICS,
    axis_label,
    fmt,
    heat_matrix,
    layer_colours,
    layer_legend_or_colourbar,
    short,
    text_colour,
)
from kdsae_core.figures.style import new_figure, percent, plain_log_axis, suptitle, tokens_axis
from kdsae_core.runs.tables import RunData

CURVE_METRICS = ["mse", "l1", "loss"]
KD_METRICS = ["alpha", "g_alpha", "d_star_S"]


def _select(table: pd.DataFrame, layers) -> pd.DataFrame:
    if layers is None:
        return table
    return table[table["layer"].isin([int(v) for v in layers])].reset_index(drop=True)


def layer_table(run: RunData, trial: str, layers=None) -> pd.DataFrame:
    return _select(run.layer_table(trial), layers)


# ---- 1. training curves -------------------------------------------------------------------------------
def training_curves_data(run: RunData, trial: str, layers=None) -> pd.DataFrame:
    m = _select(run.trial_metrics(trial), layers)
    return m[["layer", "step", "tokens", *CURVE_METRICS]].reset_index(drop=True)


def training_curves(data: pd.DataFrame, header: str) -> Figure:
    layers = sorted(int(v) for v in data["layer"].unique())
    colours = layer_colours(layers)
    fig = new_figure(13, 4.2)
    axes = fig.subplots(1, 3, sharex=True)
    for ax, metric in zip(axes, CURVE_METRICS):
        for layer in layers:
            d = data[data["layer"] == layer]
            ax.plot(d["tokens"], d[metric], color=colours[layer], lw=1.6)
        if (data[metric] > 0).all():
            ax.set_yscale("log")
            plain_log_axis(ax.yaxis)
        tokens_axis(ax)
        ax.set_ylabel(axis_label(metric))
        ax.set_title({"mse": "reconstruction", "l1": "sparsity penalty", "loss": "combined"}[metric], fontsize=10)
        ax.grid(alpha=0.3, which="both")
    layer_legend_or_colourbar(fig, axes, layers, colours)
    suptitle(fig, "SAE training curves, one line per layer", header, 11)
    return fig


# ---- 2. summary card ----------------------------------------------------------------------------------
def summary_card_data(run: RunData, trial: str, layers=None) -> pd.DataFrame:
    return layer_table(run, trial, layers)[["layer", *CARD_METRICS]]


def draw_card(
    ax, data: pd.DataFrame, metrics: list[str], cmap: str = "Blues", fontsize: float = 9, interpolation: str = "nearest"
) -> None:
    """Layers as rows, metrics as columns; shade = value relative to its column; numbers printed."""
    shades = heat_matrix(data, metrics)
    ax.imshow(shades, cmap=cmap, vmin=-0.15, vmax=1.15, aspect="auto", interpolation=interpolation)
    for i, row in enumerate(data.itertuples(index=False)):
        for j, metric in enumerate(metrics):
            ax.text(
                j,
                i,
                fmt(getattr(row, metric), metric),
                ha="center",
                va="center",
                fontsize=fontsize,
                color=text_colour(min(1.0, max(0.0, (shades[i, j] + 0.15) / 1.3)), cmap),
            )
    ax.set_xticks(range(len(metrics)), [short(m) for m in metrics])
    ax.set_yticks(range(len(data)), [f"layer {int(v)}" for v in data["layer"]])
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def summary_card(data: pd.DataFrame, header: str) -> Figure:
    fig = new_figure(1.15 * len(CARD_METRICS) + 1.6, 0.42 * len(data) + 1.8)
    draw_card(fig.add_subplot(), data, CARD_METRICS, fontsize=8.5 if len(data) > 12 else 9.5)
    suptitle(
        fig, "Summary card: shade = value relative to its column (light = lowest layer, dark = highest)", header, 10
    )
    return fig


# ---- 3. the three KD quantities -----------------------------------------------------------------------
def kd_quantities_data(run: RunData, trial: str, layers=None) -> pd.DataFrame:
    t = layer_table(run, trial, layers)
    return t[["layer", "F_alive", "L0", *KD_METRICS, "d_in"]]


def kd_quantities(data: pd.DataFrame, header: str) -> Figure:
    fig = new_figure(13, 4.0)
    axes = fig.subplots(1, 3, sharex=True)
    annotate = len(data) <= 12
    for ax, metric, colour in zip(axes, KD_METRICS, ("#1b6ca8", "#c2571a", "#2e8b57")):
        ax.plot(data["layer"], data[metric], "o-", color=colour, lw=1.8, ms=6)
        if annotate:
            for x, y in zip(data["layer"], data[metric]):
                ax.annotate(fmt(y, metric), (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
        ax.set_ylabel(axis_label(metric))
        ax.set_xlabel("layer (0-based)")
        ax.grid(alpha=0.3)
        ax.margins(y=0.18)
    d_model = data["d_in"].dropna()
    if len(d_model):
        axes[2].axhline(float(d_model.iloc[0]), color="0.3", ls="--", lw=1)
        axes[2].annotate(
            f"teacher width d_model = {int(d_model.iloc[0])}",
            (0.02, float(d_model.iloc[0])),
            xycoords=("axes fraction", "data"),
            textcoords="offset points",
            xytext=(0, 4),
            fontsize=8,
        )
    axes[0].set_title("sparsity \u03b1", fontsize=10)
    axes[1].set_title("capacity g(\u03b1)", fontsize=10)
    axes[2].set_title("critical width d*_S = F / g(\u03b1)", fontsize=10)
    if len(data) <= 12:
        axes[0].set_xticks(list(data["layer"]))
    else:
        axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_xlim(data["layer"].min() - 0.5, data["layer"].max() + 0.5)
    suptitle(fig, "The three knowledge-distillation quantities per layer", header, 11)
    return fig


# ---- 4. L0 vs reconstruction --------------------------------------------------------------------------
def l0_vs_mse_data(run: RunData, trial: str, layers=None) -> pd.DataFrame:
    return layer_table(run, trial, layers)[["layer", "L0", "mse"]]


def l0_vs_mse(data: pd.DataFrame, header: str) -> Figure:
    colours = layer_colours(data["layer"])
    fig = new_figure(7.5, 5.5)
    ax = fig.add_subplot()
    for row in data.itertuples(index=False):
        ax.scatter(row.L0, row.mse, s=60, color=colours[int(row.layer)], edgecolor="black", lw=0.5, zorder=3)
        ax.annotate(
            f"layer {int(row.layer)}", (row.L0, row.mse), textcoords="offset points", xytext=(6, 4), fontsize=8.5
        )
    for metric, axis in (("L0", ax.xaxis), ("mse", ax.yaxis)):
        v = data[metric]
        if (v > 0).all() and v.max() / v.min() > 8:
            (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log")
            plain_log_axis(axis)
    ax.set_xlabel(axis_label("L0"))
    ax.set_ylabel(axis_label("mse"))
    ax.grid(alpha=0.3, which="both")
    ax.margins(0.15)
    suptitle(fig, "Sparsity vs reconstruction, one point per layer", header, 10)
    return fig


# ---- 5. predicted loss floor vs student width ---------------------------------------------------------
def predicted_floors_data(run: RunData, trial: str, layers=None, points: int = 160) -> pd.DataFrame:
    """Refined floor L*(d_S) of every layer over a log-spaced width grid (`source` = "curve", computed
    from the layer's sorted importance) and at the widths its measurement file predicts (`source` =
    "file", copied from the file). `floor_frac` = floor / L_inf."""
    t = layer_table(run, trial, layers)
    rows = []
    for r in t.itertuples(index=False):
        layer, snap = int(r.layer), r.snapshot
        imp = run.importance[(trial, layer, snap)]
        top = max(float(r.d_in or 1), 1.3 * float(r.d_star_S))
        grid = np.unique(np.round(np.geomspace(1, top, points)).astype(int))
        floors = theory.refined_floor(imp, grid, r.alpha)
        for w, f in zip(grid, floors):
            rows.append({"layer": layer, "width": int(w), "predicted_floor": float(f), "source": "curve"})
        p = run.predictions
        mine = p[(p["trial"] == trial) & (p["layer"] == layer) & (p["snapshot"] == snap)]
        for pr in mine.itertuples(index=False):
            rows.append(
                {"layer": layer, "width": int(pr.width), "predicted_floor": float(pr.predicted_floor), "source": "file"}
            )
    out = pd.DataFrame(rows, columns=["layer", "width", "predicted_floor", "source"])
    meta = t.set_index("layer")
    out["L_inf"] = out["layer"].map(meta["L_inf"]).astype(float)
    out["d_star_S"] = out["layer"].map(meta["d_star_S"]).astype(float)
    out["d_in"] = out["layer"].map(meta["d_in"])
    out["floor_frac"] = out["predicted_floor"] / out["L_inf"]
    return out


def predicted_floors(data: pd.DataFrame, header: str) -> Figure:
    layers = sorted(int(v) for v in data["layer"].unique())
    colours = layer_colours(layers)
    fig = new_figure(11.5, 5.5)
    ax = fig.add_subplot()
    for layer in layers:
        d = data[data["layer"] == layer]
        curve, pts = d[d["source"] == "curve"], d[d["source"] == "file"]
        ax.plot(curve["width"], curve["floor_frac"], color=colours[layer], lw=1.8)
        ax.plot(pts["width"], pts["floor_frac"], "o", color=colours[layer], ms=5, mec="black", mew=0.5)
        ds = float(d["d_star_S"].iloc[0])
        ax.axvline(ds, color=colours[layer], ls=":", lw=1.2)
    d_in = data["d_in"].dropna()
    if len(d_in):
        ax.axvline(float(d_in.iloc[0]), color="0.2", ls="--", lw=1)
        ax.annotate(
            f"teacher width d_model = {int(d_in.iloc[0])}",
            (float(d_in.iloc[0]), 0.6),
            xycoords=("data", "axes fraction"),
            rotation=90,
            ha="right",
            va="center",
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("student width d_S (dimensions, log scale)")
    ax.set_ylabel("predicted floor L*(d_S) / L\u221e (fraction)")
    ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], color=colours[layer], lw=2) for layer in layers] + [
        Line2D([], [], color="0.3", marker="o", ls="", mec="black"),
        Line2D([], [], color="0.3", ls=":"),
    ]
    labels = [f"layer {layer}" for layer in layers] + ["widths in the measurement file", "d*_S of the layer"]
    if len(layers) > 8:
        layer_legend_or_colourbar(fig, [ax], layers, colours)
        handles, labels = handles[-2:], labels[-2:]
    fig.legend(handles, labels, fontsize=8, loc="outside right center", frameon=False)
    suptitle(fig, "Refined loss floor vs student width (from each layer's measured importance)", header, 10)
    return fig


# ---- the sentence under each figure, computed from exactly the data it plotted ------------------------
def training_curves_sentence(d: pd.DataFrame) -> str:
    by = d.groupby("tokens")["mse"].mean()
    tail = by[by.index >= by.index.max() * 0.9]
    change = (tail.iloc[-1] - tail.iloc[0]) / tail.iloc[0] if len(tail) > 1 else float("nan")
    return (
        f"Layer-mean MSE fell from {by.iloc[0]:.3g} at the first logged step to {by.iloc[-1]:.3g}; over the last "
        f"10% of training tokens it moved by {percent(change)}, so the final snapshot is "
        f"{'close to converged' if abs(change) < 0.05 else 'still moving: read its numbers as provisional'}."
    )


def summary_card_sentence(d: pd.DataFrame) -> str:
    hi, lo = d.loc[d["d_star_S"].idxmax()], d.loc[d["d_star_S"].idxmin()]
    return (
        f"Critical width ranges from {lo['d_star_S']:,.1f} (layer {int(lo['layer'])}) to {hi['d_star_S']:,.1f} "
        f"(layer {int(hi['layer'])}); dead latents total {int(d['dead'].sum()):,}."
    )


def kd_quantities_sentence(d: pd.DataFrame) -> str:
    d_model = int(d["d_in"].iloc[0])
    above = int((d["d_star_S"] > d_model).sum())
    return (
        f"d*_S exceeds the teacher's width d_model = {d_model} at {above} of {len(d)} layers: there, even a student "
        "as wide as the teacher is predicted to lose features (a non-zero floor)."
    )


def l0_vs_mse_sentence(d: pd.DataFrame) -> str:
    r = d[["L0", "mse"]].rank().corr().iloc[0, 1] if len(d) > 2 else float("nan")
    reading = (
        "layers that keep more latents active also reconstruct worse; lambda is the same for all, so the layer "
        "drives both"
        if r > 0.3
        else "more active latents go with better reconstruction"
        if r < -0.3
        else "no consistent ordering"
    )
    return f"Across layers, L0 and MSE have Spearman rank correlation {r:+.2f}: {reading}."


def predicted_floors_sentence(d: pd.DataFrame) -> str:
    f = d[d["source"] == "file"]
    if f.empty:
        return "The measurement files hold no predictions at fixed widths."
    half = int(f["width"].iloc[(f["width"] - f["d_in"].iloc[0] / 2).abs().argmin()])
    at = f[f["width"] == half]["floor_frac"]
    return (
        f"At d_S = {half} (half the teacher's width) the predicted floor is {percent(at.min())}\u2013"
        f"{percent(at.max())} of L\u221e across layers; it reaches 0 only at d*_S."
    )
