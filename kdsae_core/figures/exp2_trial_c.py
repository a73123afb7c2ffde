"""Figures of the adaptive trial (trial C): the dashboard, the depth landscape and the controller's
lambda and L0 trajectories (the evidence that the target L0 was reached)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kdsae_core.figures.exp2_common import (
    CARD_METRICS,
    axis_label,
    fmt,
    layer_colours,
    layer_legend_or_colourbar,
    short,
)
from kdsae_core.figures.exp2_trial_a import layer_table
from kdsae_core.figures.style import new_figure, percent, plain_log_axis, suptitle, tokens_axis
from kdsae_core.runs.tables import RunData

DASHBOARD_METRICS = ["L0", "alpha", "g_alpha", "mse", "dead"]


# ---- 1. dashboard -------------------------------------------------------------------------------------
def dashboard_data(run: RunData, trial: str, layers=None) -> pd.DataFrame:
    t = layer_table(run, trial, layers)[["layer", *DASHBOARD_METRICS]].copy()
    t["target_L0"] = run.target_l0(trial)
    return t


def dashboard(data: pd.DataFrame, header: str) -> Figure:
    n = len(data)
    fig = new_figure(14, 0.38 * n + 2.2)
    axes = fig.subplots(1, len(DASHBOARD_METRICS), sharey=True)
    y = np.arange(n)
    target = data["target_L0"].dropna()
    for ax, metric, colour in zip(axes, DASHBOARD_METRICS, ("#555555", "#1b6ca8", "#c2571a", "#7b3294", "#b2182b")):
        values = data[metric].astype(float).to_numpy()
        lo = 0.0 if metric != "alpha" else max(0.0, values.min() - 2 * (np.ptp(values) or 0.01))
        ax.barh(y, values - lo, left=lo, color=colour, alpha=0.8, height=0.7)
        for yi, v in zip(y, values):
            ax.text(v, yi, " " + fmt(v, metric), va="center", ha="left", fontsize=8)
        top = values.max()
        if metric == "L0" and len(target):
            ax.axvline(float(target.iloc[0]), color="black", ls="--", lw=1)
            ax.text(float(target.iloc[0]), -0.75, f"target {float(target.iloc[0]):g}", ha="center", fontsize=8)
            top = max(top, float(target.iloc[0]))
        ax.set_xlim(lo, lo + (top - lo) * 1.45 if top > lo else lo + 1)
        ax.set_title(short(metric), fontsize=10)
        ax.set_xlabel(axis_label(metric), fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(3))
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [f"layer {int(v)}" for v in data["layer"]])
    axes[0].set_ylim(n - 0.5, -1.2)
    suptitle(fig, "Dashboard: layer \u00d7 metric with the numbers", header, 10)
    return fig


# ---- 2. depth landscape -------------------------------------------------------------------------------
def depth_landscape_data(run: RunData, trial: str, layers=None) -> pd.DataFrame:
    return layer_table(run, trial, layers)[["layer", *CARD_METRICS]]


def depth_landscape(data: pd.DataFrame, header: str) -> Figure:
    fig = new_figure(12, 8.5)
    axes = fig.subplots(4, 2, sharex=True).ravel()
    x = data["layer"].astype(int).to_numpy()
    for ax, metric in zip(axes, CARD_METRICS):
        v = data[metric].astype(float).to_numpy()
        ax.plot(x, v, "-", color="#2e8b57", lw=2)
        ax.plot(x, v, "o", color="#2e8b57", ms=4)
        ax.fill_between(x, v, v.min() - 0.08 * (np.ptp(v) or abs(v.min()) or 1), color="#2e8b57", alpha=0.12)
        ax.set_ylabel(axis_label(metric), fontsize=8)
        ax.set_title(short(metric), fontsize=9, loc="left")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(4))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[-2:]:
        ax.set_xlabel("layer (0-based); lines join measured layers (points)")
    suptitle(fig, "Depth landscape: every per-layer property as a profile through depth", header, 10)
    return fig


# ---- 3. controller trajectories -----------------------------------------------------------------------
def controller_data(run: RunData, trial: str, layers=None) -> pd.DataFrame:
    m = run.trial_metrics(trial)
    if layers is not None:
        m = m[m["layer"].isin([int(v) for v in layers])]
    out = m[["layer", "step", "tokens", "lambda", "L0"]].reset_index(drop=True)
    out["target_L0"] = run.target_l0(trial)
    return out


def controller(data: pd.DataFrame, header: str) -> Figure:
    layers = sorted(int(v) for v in data["layer"].unique())
    colours = layer_colours(layers)
    fig = new_figure(12.5, 4.4)
    axes = fig.subplots(1, 2, sharex=True)
    for layer in layers:
        d = data[data["layer"] == layer]
        axes[0].plot(d["tokens"], d["lambda"], color=colours[layer], lw=1.6)
        axes[1].plot(d["tokens"], d["L0"], color=colours[layer], lw=1.6)
    target = data["target_L0"].dropna()
    if len(target):
        t = float(target.iloc[0])
        axes[1].axhline(t, color="black", ls="--", lw=1.2)
        axes[1].annotate(
            f"target L0 = {t:g}",
            (0.02, t),
            xycoords=("axes fraction", "data"),
            ha="left",
            va="bottom",
            fontsize=8.5,
            textcoords="offset points",
            xytext=(0, 3),
        )
    for ax, metric, label in (
        (axes[0], "lambda", "L1 coefficient \u03bb (dimensionless)"),
        (axes[1], "L0", axis_label("L0")),
    ):
        v = data[metric].astype(float)
        if (v > 0).all() and v.max() / v.min() > 5:
            ax.set_yscale("log")
            plain_log_axis(ax.yaxis)
        ax.set_ylabel(label)
        tokens_axis(ax)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title("controller output \u03bb per layer", fontsize=10)
    axes[1].set_title("mean active latents per token (the controlled quantity)", fontsize=10)
    layer_legend_or_colourbar(fig, list(axes), layers, colours)
    suptitle(fig, "Adaptive-\u03bb controller: \u03bb and L0 trajectories, one line per layer", header, 10)
    return fig


# ---- the sentence under each figure, computed from exactly the data it plotted ------------------------
def dashboard_sentence(d: pd.DataFrame) -> str:
    t = d["target_L0"].dropna()
    if not len(t):
        return f"Mean L0 {d['L0'].mean():,.1f}; {int(d['dead'].sum()):,} dead latents in total."
    off = (d["L0"] / float(t.iloc[0]) - 1).abs()
    return (
        f"Final L0 is within 10% of the target {float(t.iloc[0]):g} at {int((off <= 0.1).sum())} of {len(d)} layers "
        f"(largest miss {percent(off.max())}); {int(d['dead'].sum()):,} dead latents in total."
    )


def depth_landscape_sentence(d: pd.DataFrame) -> str:
    slope = np.polyfit(d["layer"], d["alpha"], 1)[0] if len(d) > 1 else 0.0
    return (
        f"\u03b1 {'rises' if slope > 0 else 'falls'} through depth by {abs(slope):.2g} per layer on average "
        f"(least squares), from {d['alpha'].iloc[0]:.4f} at layer {int(d['layer'].iloc[0])} to "
        f"{d['alpha'].iloc[-1]:.4f} at layer {int(d['layer'].iloc[-1])}."
    )


def controller_sentence(d: pd.DataFrame) -> str:
    last = d.sort_values("tokens").groupby("layer").tail(1)
    t = d["target_L0"].dropna()
    lam = f"final \u03bb ranges {last['lambda'].min():.2e}\u2013{last['lambda'].max():.2e}"
    if not len(t):
        return f"No target L0 in the config; {lam}."
    off = (last["L0"] / float(t.iloc[0]) - 1).abs()
    d = d.sort_values("tokens")
    rise = d.groupby("layer")["lambda"].agg(lambda v: v.max() / v.iloc[0])
    return (
        f"At the last logged step L0 is within 10% of the target at {int((off <= 0.1).sum())} of {len(last)} layers; "
        f"{lam}, one value per layer, found by the controller. On the way λ overshot to "
        f"{rise.min():.0f}–{rise.max():.0f}x its start while the logged L0 fell as low as {d['L0'].min():.1f}."
    )
