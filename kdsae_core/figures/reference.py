"""Figures of the authors' released Pythia-410M measurements (read via kdsae_core.runs.tables).

The importance distribution (log-log), the predicted floors vs student width and the SAE training
curves. Layers are 0-based as in the hook names (blocks.{l}.hook_resid_post).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from kdsae_core import theory
from kdsae_core.figures.style import new_figure, percent, plain_log_axis, suptitle, tokens_axis
from kdsae_core.runs.reference import PAPER_LAYER_VALUES, REFERENCE_D_MODEL, REFERENCE_MODEL
from kdsae_core.runs.tables import format_tokens, layer_span

PYTHIA_D_SAE = 32_768
MARKED_WIDTHS = (128, 256, 512, 1024)


def header(layers, tokens: float | None = 300e6) -> str:
    tok = f", {format_tokens(tokens)} Pile tokens" if tokens else ""
    return (
        f"{REFERENCE_MODEL} (d_model {REFERENCE_D_MODEL}), {layer_span(layers)}, d_sae {PYTHIA_D_SAE:,}{tok} "
        "\u2014 the authors' released measurements"
    )


def _ranks(F: int, dense: int = 100, points: int = 400) -> np.ndarray:
    """Every rank up to `dense`, then log-spaced ranks to F (a log-log plot cannot show more)."""
    tail = np.geomspace(dense + 1, F, points) if F > dense else np.array([])
    return np.unique(np.concatenate([np.arange(1, min(dense, F) + 1), np.round(tail).astype(int), [F]]))


# ---- importance distribution --------------------------------------------------------------------------
def importance_distribution_data(measurements: dict[int, theory.Measurement]) -> pd.DataFrame:
    """rank (1 = most important), importance E[z^2] at that rank, and the share of L_inf held by the
    latents up to that rank; every rank <= 100 and 400 log-spaced ranks beyond."""
    rows = []
    for layer, m in sorted(measurements.items()):
        ranks = _ranks(m.F_alive)
        cum = np.cumsum(m.sorted_importance) / m.L_inf
        rows.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "rank": ranks,
                    "importance": m.sorted_importance[ranks - 1],
                    "cumulative_share": cum[ranks - 1],
                    "F_alive": m.F_alive,
                    "alpha": m.alpha,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def importance_distribution(data: pd.DataFrame, header_text: str) -> Figure:
    layers = sorted(int(v) for v in data["layer"].unique())
    colours = {layer: c for layer, c in zip(layers, ("#1b6ca8", "#c2571a", "#2e8b57"))}
    fig = new_figure(11, 5.0)
    ax, ax2 = fig.subplots(1, 2, width_ratios=[1.4, 1])
    for layer in layers:
        d = data[data["layer"] == layer]
        a = float(d["alpha"].iloc[0])
        ax.loglog(
            d["rank"],
            d["importance"],
            color=colours[layer],
            lw=1.8,
            label=f"layer {layer} (F = {int(d['F_alive'].iloc[0]):,})",
        )
        ax2.semilogx(d["rank"], d["cumulative_share"], color=colours[layer], lw=1.8, label=f"layer {layer}")
        for w in MARKED_WIDTHS:
            kept = int(theory.feature_budget(int(d["F_alive"].iloc[0]), w, a))
            ax2.plot(
                [kept], [float(np.interp(kept, d["rank"], d["cumulative_share"]))], "o", ms=4, color=colours[layer]
            )
    for w in MARKED_WIDTHS:
        m = data[data["layer"] == layers[0]]
        kept = int(theory.feature_budget(int(m["F_alive"].iloc[0]), w, float(m["alpha"].iloc[0])))
        ax2.annotate(f"d_S={w}", (kept, 0.02), rotation=90, fontsize=7, ha="right", va="bottom", color="0.3")
        ax2.axvline(kept, color="0.75", lw=0.8, zorder=0)
    ax.set_xlabel("latent rank by importance (1 = largest, log scale)")
    ax.set_ylabel("importance E[z\u00b2] (activation\u00b2, log scale)")
    ax.set_title("sorted importance of the alive latents", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8.5)
    ax2.set_xlabel("latent rank (log scale)")
    ax2.set_ylabel("cumulative share of L\u221e (fraction)")
    ax2.set_title("share kept by a student: dots at F_S = \u230ad_S\u00b7g(\u03b1)\u230b", fontsize=10)
    ax2.set_ylim(0, 1.02)
    ax2.grid(alpha=0.3, which="both")
    for a in (ax.xaxis, ax2.xaxis):
        a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    suptitle(fig, "Importance distribution of the released SAE latents", header_text, 10)
    return fig


# ---- predicted floors vs width ------------------------------------------------------------------------
def floors_vs_width_data(
    measurements: dict[int, theory.Measurement], top: int = 1600, points: int = 200
) -> pd.DataFrame:
    """Refined and naive floors (absolute and as a fraction of L_inf) over a width grid that includes the
    paper's widths {128, 256, 384, 512, 768, 1024} (`paper_width` marks them)."""
    paper = theory.default_widths(REFERENCE_D_MODEL)
    grid = np.unique(np.concatenate([np.round(np.geomspace(16, top, points)).astype(int), paper]))
    rows = []
    for layer, m in sorted(measurements.items()):
        p = m.predictions(grid)
        for w in grid:
            rows.append(
                {
                    "layer": layer,
                    "width": int(w),
                    **p[int(w)],
                    "L_inf": m.L_inf,
                    "d_star_S": m.d_star_S,
                    "paper_width": int(w) in paper,
                }
            )
    out = pd.DataFrame(rows)
    out["refined_frac"] = out["predicted_floor"] / out["L_inf"]
    out["naive_frac"] = out["naive_floor"] / out["L_inf"]
    return out


def floors_vs_width(data: pd.DataFrame, header_text: str) -> Figure:
    layers = sorted(int(v) for v in data["layer"].unique())
    colours = {layer: c for layer, c in zip(layers, ("#1b6ca8", "#c2571a", "#2e8b57"))}
    fig = new_figure(13, 5.6)
    ax, axl = fig.subplots(1, 2, sharex=True)
    for layer in layers:
        d = data[data["layer"] == layer]
        pts = d[d["paper_width"]]
        ax.plot(d["width"], d["refined_frac"], color=colours[layer], lw=2, label=f"layer {layer}: refined floor L*")
        ax.plot(d["width"], d["naive_frac"], color=colours[layer], lw=1.2, ls="--", label=f"layer {layer}: naive floor")
        ax.plot(pts["width"], pts["refined_frac"], "o", color=colours[layer], ms=5, mec="black", mew=0.5)
        pos = d[d["refined_frac"] > 0]
        axl.plot(pos["width"], pos["refined_frac"], color=colours[layer], lw=2, label=f"layer {layer}")
        pts = pts[pts["refined_frac"] > 0]
        axl.plot(pts["width"], pts["refined_frac"], "o", color=colours[layer], ms=5, mec="black", mew=0.5)
        ds = float(d["d_star_S"].iloc[0])
        for a in (ax, axl):
            a.axvline(ds, color=colours[layer], ls=":", lw=1.2)
        ax.annotate(
            f"d*_S = {ds:,.0f}",
            (ds, 0.55 + 0.08 * layers.index(layer)),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            color=colours[layer],
            ha="left",
            textcoords="offset points",
            xytext=(3, 0),
        )
    for a in (ax, axl):
        a.axvline(REFERENCE_D_MODEL, color="0.2", ls="-", lw=0.8)
        a.annotate(
            f"teacher d_model = {REFERENCE_D_MODEL}",
            (REFERENCE_D_MODEL, 0.97),
            xycoords=("data", "axes fraction"),
            rotation=90,
            ha="right",
            va="top",
            fontsize=8,
        )
        a.set_xscale("log")
        a.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        a.set_xlabel("student width d_S (dimensions, log scale)")
        a.grid(alpha=0.3, which="both")
    ax.set_ylabel("predicted floor / L\u221e (fraction of the zero-predictor loss)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("linear scale: refined vs naive floor (dots: the paper's widths 128\u20131024)", fontsize=9.5)
    ax.legend(fontsize=8, loc="center left")
    axl.set_yscale("log")
    axl.set_ylabel("refined floor L* / L\u221e (fraction, log scale)")
    axl.set_title("log scale: the refined floor's small non-zero tail (0 beyond d*_S not drawn)", fontsize=9.5)
    axl.legend(fontsize=8, loc="lower left")
    suptitle(fig, "Predicted distillation floor vs student width", header_text, 10)
    return fig


# ---- SAE training curves ------------------------------------------------------------------------------
TRAINING_PANELS = [
    ("recon_loss", "reconstruction MSE (activation\u00b2 / dim)"),
    ("l1_sum", "L1 per token, \u03a3|z| (sum form)"),
    ("L0", "L0 (active latents / token)"),
    ("frac_alive", "alive fraction of 32,768 latents (per logged batch)"),
]


def training_curves_data(stats: pd.DataFrame) -> pd.DataFrame:
    cols = ["layer", "batch", "tokens", *[c for c, _ in TRAINING_PANELS], "l1_loss", "l1_form", "l1_coeff"]
    return stats[[c for c in cols if c in stats.columns]].reset_index(drop=True)


def training_curves(data: pd.DataFrame, header_text: str) -> Figure:
    layers = sorted(int(v) for v in data["layer"].unique())
    colours = {layer: c for layer, c in zip(layers, ("#7b3294", "#1b6ca8", "#c2571a", "#2e8b57"))}
    fig = new_figure(13, 7.2)
    axes = fig.subplots(2, 2, sharex=True).ravel()
    for ax, (metric, label) in zip(axes, TRAINING_PANELS):
        if metric not in data:
            ax.axis("off")
            continue
        for layer in layers:
            d = data[(data["layer"] == layer) & (data["tokens"] > 0)]
            coeff = d["l1_coeff"].iloc[0] if "l1_coeff" in d and len(d) else None
            form = d["l1_form"].iloc[0] if "l1_form" in d and len(d) else None
            series = f"layer {layer}" + (
                f" (\u03bb {coeff:.0e}" + (f", {form} form" if form else "") + ")" if coeff is not None else ""
            )
            ax.plot(d["tokens"], d[metric], color=colours[layer], lw=1.5, label=series)
        if metric != "frac_alive":
            ax.set_yscale("log")
            plain_log_axis(ax.yaxis)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        tokens_axis(ax, "training tokens" if ax in axes[2:] else "")
    axes[0].legend(fontsize=8.5)
    mean_form = (
        sorted(int(v) for v in data.loc[data["l1_form"] == "mean", "layer"].unique()) if "l1_form" in data else []
    )
    note = (
        f"; layer {', '.join(map(str, mean_form))}: L1 logged in the mean form, drawn \u00d7 d_sae" if mean_form else ""
    )
    suptitle(
        fig,
        f"SAE training curves as released (first logged step omitted; layer 8's run used another \u03bb{note})",
        header_text,
        10,
    )
    return fig


# ---- the sentence under each figure (from the released files the figure was drawn from) ---------------
SMALLEST_STUDENT = MARKED_WIDTHS[0]  # the importance sentence: how little a width-128 student keeps


def importance_distribution_sentence(measurements: dict[int, theory.Measurement], stats=None) -> str:
    parts = []
    for layer, m in sorted(measurements.items()):
        kept = int(np.floor(SMALLEST_STUDENT * m.g_alpha))
        share = float(m.sorted_importance[:kept].sum() / m.L_inf)
        parts.append(
            f"layer {layer}: a width-{SMALLEST_STUDENT} student keeps {kept:,} of {m.F_alive:,} features "
            f"({percent(kept / m.F_alive)}) holding {100 * share:.3f}% of L\u221e"
        )
    return "; ".join(parts) + ". Few features carry almost all of the importance."


def floors_vs_width_sentence(measurements: dict[int, theory.Measurement], stats=None) -> str:
    parts = [
        f"layer {layer}: d*_S = {m.d_star_S:,.1f} > d_model {REFERENCE_D_MODEL}"
        if m.d_star_S > REFERENCE_D_MODEL
        else f"layer {layer}: d*_S = {m.d_star_S:,.1f}"
        for layer, m in sorted(measurements.items())
    ]
    return (
        "; ".join(parts) + ". The naive floor (features dropped \u00d7 L\u221e/F) is far above the refined one "
        "because the dropped features are the least important."
    )


def training_curves_sentence(measurements, stats: pd.DataFrame) -> str:
    last = stats.sort_values("tokens").groupby("layer").tail(1).sort_values("layer")
    parts = "; ".join(f"layer {int(r.layer)}: \u03bb {r.l1_coeff:.0e}, final L0 {r.L0:,.1f}" for r in last.itertuples())
    # the released layer-8 curves are not the run behind the published layer-8 row: say so when they show it
    layer8_other_run = any(abs(r.l1_coeff - 3e-4) < 1e-12 for r in last.itertuples() if r.layer == 8)
    if layer8_other_run:
        return (
            parts + ". The released layer-8 curves come from a \u03bb 3e-4 run, not from the run behind the "
            f"published layer-8 row (L0 {PAPER_LAYER_VALUES[8]['L0']})."
        )
    return parts + "."
