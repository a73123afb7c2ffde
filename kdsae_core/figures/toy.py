"""The three figures of Experiment 1 (the toy model), each a pure function of a toy_results dict
(`kdsae_core.toy.results.assemble_results`), with a `*_data` function returning the exact table it plots; the
sentence computed from the same numbers is in `figures.toy_sentences` (`figures.catalog` lists all three).

Losses are drawn as a fraction of L_inf (the loss of predicting zero), so panels with different sparsity
share one scale; the tables hold the raw values as well.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from kdsae_core.figures.style import (
    CRITICAL_COLOUR,
    MISSING_COLOUR,
    PALETTE,
    PREDICTED_COLOUR,
    SEQUENTIAL_CMAP,
    new_figure,
    suptitle,
)
from kdsae_core.toy.analysis import PAPER_ACCURACY as PAPER_THRESHOLD  # "above 93% at all sparsity levels"
from kdsae_core.toy.analysis import on_paper_grid

PAPER_PERCENT = f"{PAPER_THRESHOLD:.0%}"  # the paper's accuracy threshold as the texts print it ("93%")
ALPHA = "\u03b1"
L_INF = "L\u221e"


def describe(results: dict) -> str:
    """One line naming what a results dict holds (shown under every figure title)."""
    s = results["settings"]
    grid = "the paper grid" if on_paper_grid(results) else f"profile {s.get('profile')} (not the paper grid)"
    return (
        f"Toy model, {grid}: {len(results['configs'])} configurations x {s['seeds']} seeds, "
        f"{s['steps']:,} steps, batch {s['batch']}, importance {s['importance']}, mode {s['mode']}"
    )


def _alphas(results: dict) -> list[float]:
    return sorted({c["alpha"] for c in results["configs"]})


def _ns(results: dict) -> list[int]:
    return sorted({c["n"] for c in results["configs"]})


def alpha_colours(alphas) -> dict[float, str]:
    return {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(sorted(alphas))}


# ---- (a) loss vs student width ------------------------------------------------------------------------
def loss_vs_width_data(results: dict) -> pd.DataFrame:
    """One row per (configuration, student width): measured floor (median and range over seeds), the
    predicted refined and naive floors, L_inf and d*_S."""
    rows = []
    for c in results["configs"]:
        for i, w in enumerate(c["widths"]):
            seeds = c["measured_floor"][i]
            rows.append(
                {
                    "n": c["n"],
                    "alpha": c["alpha"],
                    "d_teacher": c["d_teacher"],
                    "width": w,
                    "measured_median": c["measured_floor_median"][i],
                    "measured_min": min(seeds),
                    "measured_max": max(seeds),
                    "predicted_floor": c["predicted_floor"][i],
                    "naive_floor": c["naive_floor"][i],
                    "L_inf": c["L_inf"],
                    "d_star_S": c["d_star_S"],
                }
            )
    return pd.DataFrame(rows)


def _measured_and_predicted(ax, sub: pd.DataFrame, teachers, colours, offsets) -> None:
    """One (alpha, n) panel's curves, as fractions of its L_inf: the measured floor per teacher (median, bars
    the seed range; teachers offset sideways) and the predicted refined and naive floors."""
    L = float(sub.L_inf.iloc[0])
    for d_t in teachers:
        s = sub[sub.d_teacher == d_t]
        med = s.measured_median / L
        ax.errorbar(
            s.width + offsets[d_t],
            med,
            yerr=[med - s.measured_min / L, s.measured_max / L - med],
            marker="o",
            ms=3,
            lw=1.1,
            capsize=1.5,
            color=colours[d_t],
        )
    pred = sub.drop_duplicates("width").sort_values("width")
    ax.plot(pred.width, pred.predicted_floor / L, "--", color=PREDICTED_COLOUR, lw=1.3)
    ax.plot(pred.width, pred.naive_floor / L, ":", color="0.5", lw=1.2)


def _mark_critical_width(ax, d_star: float, max_w: int) -> None:
    """d*_S as a line and a marker on the width axis, or, past the widest student, as an arrow in the corner."""
    label_box = dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.85)
    if d_star <= max_w + 0.5:
        ax.axvline(d_star, color=CRITICAL_COLOUR, lw=0.9, alpha=0.7)
        ax.plot([d_star], [0], marker="^", color=CRITICAL_COLOUR, ms=7, clip_on=False, zorder=5)
        ax.annotate(
            f"d*_S={d_star:.2g}",
            (d_star, 0.97),
            xycoords=("data", "axes fraction"),
            xytext=(3, 0),
            textcoords="offset points",
            color=CRITICAL_COLOUR,
            fontsize=7,
            va="top",
            bbox=label_box,
        )
    else:
        ax.annotate(
            f"d*_S={d_star:.3g} \u2192",
            (1.0, 0.97),
            xycoords="axes fraction",
            ha="right",
            va="top",
            color=CRITICAL_COLOUR,
            fontsize=7,
            bbox=label_box,
        )


def _loss_legend(fig: Figure, teachers, colours) -> None:
    handles = [
        Line2D([], [], color=colours[d], marker="o", ms=3, label=f"measured, teacher d_T = {d}") for d in teachers
    ]
    handles += [
        Line2D([], [], ls="--", color=PREDICTED_COLOUR, label="predicted refined floor L*(d_S)"),
        Line2D([], [], ls=":", color="0.5", label="naive floor"),
        Line2D([], [], ls="", marker="^", color=CRITICAL_COLOUR, label="critical width d*_S"),
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        frameon=False,
        ncol=max(1, min(len(handles), int(fig.get_figwidth() / 2.9))),
    )


def loss_vs_width(results: dict) -> Figure:
    data = loss_vs_width_data(results)
    alphas, ns = _alphas(results), _ns(results)
    teachers = sorted(data["d_teacher"].unique())
    colours = {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(teachers)}
    max_w = int(data["width"].max())
    fig = new_figure(2.25 * len(ns) + 0.9, 1.85 * len(alphas) + 1.9)
    axes = fig.subplots(len(alphas), len(ns), squeeze=False, sharex=True, sharey=True)
    offsets = {d: (i - (len(teachers) - 1) / 2) * 0.08 for i, d in enumerate(teachers)}
    for r, a in enumerate(alphas):
        for col, n in enumerate(ns):
            ax = axes[r, col]
            sub = data[(data.alpha == a) & (data.n == n)]
            _measured_and_predicted(ax, sub, teachers, colours, offsets)
            _mark_critical_width(ax, float(sub.d_star_S.iloc[0]), max_w)
            ax.set_title(f"{ALPHA} = {a:g}, F = n = {n}", fontsize=9)
            ax.grid(True)
    axes[0, 0].set_xlim(0, max_w + 0.5)
    top = float(max(1.0, (data.measured_max / data.L_inf).max()))
    axes[0, 0].set_ylim(0, top * 1.05)
    axes[0, 0].set_xticks(range(0, max_w + 1, 1 if max_w <= 10 else 2))
    for ax in axes[-1]:
        ax.set_xlabel("student width d_S")
    fig.supylabel(f"loss vs ground truth / {L_INF}    ({L_INF}: the loss of predicting 0)", fontsize=9)
    _loss_legend(fig, teachers, colours)
    suptitle(
        fig,
        "Measured loss floor vs student width (median over seeds; bars: seed range) with the "
        "predicted floors and the critical width",
        describe(results),
    )
    return fig


# ---- (b) the (alpha, F) accuracy grid -----------------------------------------------------------------
def accuracy_grid_data(results: dict) -> pd.DataFrame:
    """Median accuracy per (alpha, n) cell over its (teacher, width) pairs, and per alpha over all pairs
    (rows with `n` empty, `cell` = "all": these are the numbers the paper's claim is about)."""
    rows = []
    for a in _alphas(results):
        for n in _ns(results) + [None]:
            cs = [c for c in results["configs"] if c["alpha"] == a and (n is None or c["n"] == n)]
            rel = [v for c in cs for v in c["accuracy_rel"] if v is not None]
            norm = [v for c in cs for v in c["accuracy_norm"]]
            rows.append(
                {
                    "alpha": a,
                    "n": math.nan if n is None else n,
                    "cell": "all" if n is None else str(n),
                    "pairs": len(norm),
                    "pairs_below_d_star": len(rel),
                    "accuracy_rel_median": float(np.median(rel)) if rel else math.nan,
                    "accuracy_norm_median": float(np.median(norm)),
                }
            )
    return pd.DataFrame(rows)


def accuracy_grid(results: dict) -> Figure:
    data = accuracy_grid_data(results)
    alphas, cells = _alphas(results), [str(n) for n in _ns(results)] + ["all"]
    fig = new_figure(1.05 * len(cells) + 2.6, 2 * (0.5 * len(alphas) + 0.9) + 1.3)
    axes = fig.subplots(2, 1, sharex=True)
    panels = (
        ("accuracy_rel_median", "accuracy_rel: pairs below d*_S"),
        ("accuracy_norm_median", "accuracy_norm: all pairs"),
    )
    for ax, (column, title) in zip(axes, panels):
        grid = data.pivot(index="alpha", columns="cell", values=column).loc[alphas, cells].to_numpy(float)
        pairs = (
            data.pivot(index="alpha", columns="cell", values="pairs_below_d_star" if "rel" in column else "pairs")
            .loc[alphas, cells]
            .to_numpy(int)
        )
        cmap = colormaps[SEQUENTIAL_CMAP].with_extremes(bad=MISSING_COLOUR)
        im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for i in range(len(alphas)):
            for j in range(len(cells)):
                v = grid[i, j]
                label = "no pairs" if math.isnan(v) else f"{100 * v:.0f}%"
                colour = "black" if math.isnan(v) or v > 0.6 else "white"
                ax.text(
                    j,
                    i - 0.12,
                    label,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color=colour,
                    fontweight="bold" if cells[j] == "all" else "normal",
                )
                ax.text(j, i + 0.25, f"{pairs[i, j]} pairs", ha="center", va="center", fontsize=6, color=colour)
                if not math.isnan(v) and v > PAPER_THRESHOLD:
                    ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, ec="white", lw=1.5))
        ax.axvline(len(cells) - 1.5, color="white", lw=3)
        ax.set_xticks(range(len(cells)), [f"F={c}" if c != "all" else "all F" for c in cells])
        ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        ax.set_ylabel(f"sparsity {ALPHA}")
        ax.set_title(title)
        ax.spines[:].set_visible(False)
    axes[1].set_xlabel("features F = n (last column: every F)")
    cb = fig.colorbar(im, ax=axes, shrink=0.85, pad=0.02)
    cb.set_label("median prediction accuracy")
    suptitle(
        fig,
        f"How closely measured floors match predicted ones, per ({ALPHA}, F): median over teachers "
        f"and widths; white frame: above the paper's {PAPER_THRESHOLD:.0%}; grey: no pair below d*_S",
        describe(results),
    )
    return fig


# ---- (c) measured vs predicted, and knee vs d*_S ------------------------------------------------------
def measured_vs_predicted_data(results: dict) -> dict[str, pd.DataFrame]:
    """`runs`: one row per trained student (configuration x width x seed); `knee`: one row per
    configuration, its measured knee width and d*_S."""
    runs = []
    for c in results["configs"]:
        for i, w in enumerate(c["widths"]):
            for s, m in enumerate(c["measured_floor"][i]):
                runs.append(
                    {
                        "n": c["n"],
                        "alpha": c["alpha"],
                        "d_teacher": c["d_teacher"],
                        "width": w,
                        "seed": s,
                        "measured_floor": m,
                        "predicted_floor": c["predicted_floor"][i],
                        "L_inf": c["L_inf"],
                        "measured_over_L_inf": m / c["L_inf"],
                        "predicted_over_L_inf": c["predicted_floor"][i] / c["L_inf"],
                        "below_d_star": bool(w < c["d_star_S"]),
                    }
                )
    knee = [
        {
            "n": c["n"],
            "alpha": c["alpha"],
            "d_teacher": c["d_teacher"],
            "d_star_S": c["d_star_S"],
            "predicted_knee": max(1, math.ceil(c["d_star_S"])),
            "knee_width": c["knee_width"],
            "max_width": max(c["widths"]),
            "d_star_beyond_widths": bool(c["d_star_S"] > max(c["widths"])),
        }
        for c in results["configs"]
    ]
    return {"runs": pd.DataFrame(runs), "knee": pd.DataFrame(knee)}


def measured_vs_predicted(results: dict) -> Figure:
    tables = measured_vs_predicted_data(results)
    runs, knee = tables["runs"], tables["knee"]
    colours = alpha_colours(runs.alpha.unique())
    fig = new_figure(7.6, 5.6)
    ax, kx = fig.subplots(1, 2)
    for a, colour in colours.items():
        s = runs[runs.alpha == a]
        ax.scatter(
            s.predicted_over_L_inf, s.measured_over_L_inf, s=7, alpha=0.45, color=colour, lw=0, label=f"{ALPHA} = {a:g}"
        )
    ax.plot([0, 1], [0, 1], "-", color=PREDICTED_COLOUR, lw=1)
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, max(1.02, float(runs.measured_over_L_inf.max()) + 0.02)), aspect="equal")
    ax.set_xlabel(f"predicted floor L*(d_S) / {L_INF}")
    ax.set_ylabel(f"measured floor / {L_INF}")
    ax.set_title(f"every trained student ({len(runs):,})")
    ax.grid(True)

    top = max(float(knee.d_star_S.max()), float(knee.max_width.max())) + 0.7
    xs = np.linspace(0.01, top, 400)
    kx.plot([0, top], [0, top], "-", color=PREDICTED_COLOUR, lw=1)
    kx.plot(xs, np.maximum(1, np.ceil(xs)), "--", color="0.45", lw=1)
    teachers = sorted(knee.d_teacher.unique())
    jitter = {d: (i - (len(teachers) - 1) / 2) * 0.09 for i, d in enumerate(teachers)}
    for a, colour in colours.items():
        for beyond, face in ((False, colour), (True, "none")):
            s = knee[(knee.alpha == a) & (knee.d_star_beyond_widths == beyond)]
            if len(s):
                kx.scatter(
                    s.d_star_S, s.knee_width + s.d_teacher.map(jitter), s=22, facecolors=face, edgecolors=colour, lw=1.1
                )
    handles = [Line2D([], [], ls="", marker="o", color=c, label=f"{ALPHA} = {a:g}") for a, c in colours.items()]
    handles += [
        Line2D([], [], color=PREDICTED_COLOUR, label="y = x (left), knee = d*_S (right)"),
        Line2D([], [], ls="--", color="0.45", label="knee = \u2308d*_S\u2309"),
        Line2D([], [], ls="", marker="o", mfc="none", mec="0.3", label="d*_S beyond the widest student"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)
    kx.set(xlim=(0, top), ylim=(0, top), xlabel="critical width d*_S = F / g(\u03b1)", ylabel="measured knee width")
    kx.set_title(f"knee vs d*_S ({len(knee)} configurations)")
    kx.set_aspect("equal", adjustable="box")
    kx.grid(True)
    suptitle(
        fig,
        "Measured vs predicted floors (colour: sparsity), and where the loss bottoms out: the measured "
        "knee (first width whose floor is within 2% of L\u221e of the best one; teachers offset vertically) "
        "vs the critical width d*_S",
        describe(results),
    )
    return fig
