"""Seven renderings of one trial's per-layer measurements (drawn for trial B, the paper-exact trial).

Every variant shows the same numbers (the final-snapshot measurement files); they differ in purpose:
print, slides, appendix, overview, depth trend, relations between metrics, and the one-line headline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from kdsae_core.figures.exp2_common import CARD_METRICS, fmt, heat_matrix, short, text_colour
from kdsae_core.figures.exp2_trial_a import draw_card, layer_table
from kdsae_core.figures.style import new_figure, percent, suptitle
from kdsae_core.runs.tables import RunData

SLIDE_METRICS = ["L0", "alpha", "d_star_S", "dead"]
PAPER_CMAP = "YlGnBu"  # sequential, one direction of meaning, prints in greyscale


def metrics_data(run: RunData, trial: str, layers=None) -> pd.DataFrame:
    """The per-layer metric vector all heatmap variants draw (one row per layer)."""
    return layer_table(run, trial, layers)[["layer", *CARD_METRICS]]


def _layer_heatmap(ax, data: pd.DataFrame, metrics: list[str], cmap: str, fontsize: float, annotate=True) -> None:
    """Metrics as rows, layers as columns (depth reads left to right)."""
    shades = heat_matrix(data, metrics).T
    ax.imshow(shades, cmap=cmap, vmin=-0.1, vmax=1.1, aspect="auto", interpolation="nearest")
    if annotate:
        for i, metric in enumerate(metrics):
            for j, value in enumerate(data[metric]):
                ax.text(
                    j,
                    i,
                    fmt(value, metric),
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color=text_colour((shades[i, j] + 0.1) / 1.2, cmap),
                    rotation=90 if len(data) > 12 else 0,
                )
    ax.set_yticks(range(len(metrics)), [short(m) for m in metrics])
    step = 1 if len(data) <= 24 else 2
    ax.set_xticks(range(0, len(data), step), [str(int(v)) for v in data["layer"]][::step])
    ax.set_xlabel("layer (0-based)")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


# ---- 1. the paper heatmap -----------------------------------------------------------------------------
def paper_heatmap(data: pd.DataFrame, header: str) -> Figure:
    n = len(data)
    fig = new_figure(max(6.5, min(16.0, 1.05 * n + 1.8)), 4.6 if n <= 12 else 6.0)
    ax = fig.add_subplot()
    _layer_heatmap(ax, data, CARD_METRICS, PAPER_CMAP, fontsize=9 if n <= 8 else 7)
    suptitle(fig, "Per-layer SAE measurements (shade: value relative to its row)", header, 10)
    return fig


# ---- 2. compact slide palette -------------------------------------------------------------------------
def slides_heatmap(data: pd.DataFrame, header: str) -> Figure:
    n = len(data)
    fig = new_figure(max(6.0, min(14.0, 0.8 * n + 1.6)), 3.4)
    ax = fig.add_subplot()
    _layer_heatmap(ax, data, SLIDE_METRICS, "Greys", fontsize=11 if n <= 8 else 7, annotate=True)
    ax.tick_params(labelsize=11)
    suptitle(fig, "Sparsity and critical width through depth", header, 10)
    return fig


# ---- 3. heatmap with a per-layer sidecar (appendix) ---------------------------------------------------
def appendix_sidecar_data(run: RunData, trial: str, layers=None) -> pd.DataFrame:
    """The metric table plus mini statistics from each layer's importance and predictions."""
    t = layer_table(run, trial, layers)
    p = run.predictions
    rows = []
    for r in t.itertuples(index=False):
        imp = run.importance[(trial, int(r.layer), r.snapshot)]
        top = max(1, int(np.ceil(0.1 * imp.size)))
        mine = p[(p["trial"] == trial) & (p["layer"] == r.layer) & (p["snapshot"] == r.snapshot)].set_index("width")
        d = int(r.d_in) if r.d_in is not None and not pd.isna(r.d_in) else None
        at = mine.loc[d] if d is not None and d in mine.index else None
        rows.append(
            {
                "layer": int(r.layer),
                "L_inf": float(r.L_inf),
                "top10pct_share": float(imp[:top].sum() / imp.sum()) if imp.sum() > 0 else None,
                "width": d,
                "features_kept_at_d_model": None if at is None else int(at["features_kept"]),
                "floor_frac_at_d_model": None if at is None else float(at["predicted_floor"] / r.L_inf),
            }
        )
    side = pd.DataFrame(rows)
    return t[["layer", *CARD_METRICS]].merge(side, on="layer")


SIDECAR_WIDTH_IN, SIDECAR_FONT = 11.0, 10  # the book shows figures at page width: text scales by ~7 in / width


def appendix_sidecar(data: pd.DataFrame, header: str) -> Figure:
    n = len(data)
    fig = new_figure(SIDECAR_WIDTH_IN, 0.62 * n + 2.2)
    left, right = fig.subplots(1, 2, width_ratios=[5.8, 4.2], sharey=True)
    draw_card(left, data, CARD_METRICS, cmap=PAPER_CMAP, fontsize=SIDECAR_FONT)
    left.tick_params(labelsize=SIDECAR_FONT)
    right.set_xlim(0, 1)
    right.set_ylim(n - 0.5, -0.5)
    for i, r in enumerate(data.itertuples(index=False)):
        kept = "\u2013" if pd.isna(r.features_kept_at_d_model) else f"{int(r.features_kept_at_d_model):,}"
        floor = "\u2013" if pd.isna(r.floor_frac_at_d_model) else f"{100 * r.floor_frac_at_d_model:.2g}%"
        share = "\u2013" if pd.isna(r.top10pct_share) else f"{100 * r.top10pct_share:.0f}%"
        right.text(
            0.02,
            i,
            f"L\u221e {r.L_inf:.3g} \u00b7 top 10% of latents hold {share}\n"
            f"d_S = {r.width}: keeps {kept} features, floor {floor} of L\u221e",
            va="center",
            fontsize=SIDECAR_FONT,
        )
    right.axis("off")
    right.set_title("per-layer sidecar (from the sorted importance)", fontsize=SIDECAR_FONT)
    suptitle(fig, "Appendix table with per-layer sidecar", header, 10)
    return fig


# ---- 4. small multiples -------------------------------------------------------------------------------
def small_multiples_data(run: RunData, trial: str, layers=None) -> pd.DataFrame:
    """Long table: layer, metric, value, relative (value scaled to [0, 1] across layers)."""
    t = metrics_data(run, trial, layers)
    rel = pd.DataFrame(heat_matrix(t, CARD_METRICS), columns=CARD_METRICS).assign(layer=t["layer"].values)
    vals = t.melt(id_vars="layer", var_name="metric", value_name="value")
    return vals.merge(rel.melt(id_vars="layer", var_name="metric", value_name="relative"), on=["layer", "metric"])


def small_multiples(data: pd.DataFrame, header: str) -> Figure:
    layers = sorted(int(v) for v in data["layer"].unique())
    cols = min(len(layers), 3 if len(layers) <= 6 else 6)
    rows = int(np.ceil(len(layers) / cols))
    fig = new_figure(4.1 * cols if cols <= 3 else 2.9 * cols, 3.1 * rows + 0.9)
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    order = CARD_METRICS[::-1]
    for ax, layer in zip(axes, layers):
        d = data[data["layer"] == layer].set_index("metric").loc[order]
        ax.barh(range(len(order)), d["relative"] + 0.04, color="#3a6ea5", height=0.7)
        for i, (metric, row) in enumerate(d.iterrows()):
            ax.text(
                0.02,
                i,
                fmt(row["value"], metric),
                va="center",
                fontsize=7.5,
                color="white" if row["relative"] > 0.35 else "black",
            )
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_yticks(range(len(order)), [short(m) for m in order], fontsize=8)
        ax.set_xlim(0, 1.08)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(layers) :]:
        ax.axis("off")
    fig.supxlabel(
        "value relative to the other layers (0 = lowest, 1 = highest); numbers are the measured values", fontsize=9
    )
    suptitle(fig, "Small multiples: every layer's metric vector", header, 10)
    return fig


# ---- 5. smooth gradient through depth -----------------------------------------------------------------
def smooth_depth_data(run: RunData, trial: str, layers=None, per_layer: int = 60) -> pd.DataFrame:
    """Column-relative values linearly interpolated between measured layers (`measured` marks layers)."""
    t = metrics_data(run, trial, layers)
    rel = heat_matrix(t, CARD_METRICS)
    x = t["layer"].to_numpy(dtype=float)
    depth = np.unique(np.concatenate([np.linspace(x.min(), x.max(), per_layer * max(1, len(x) - 1) + 1), x]))
    out = {"depth": depth, "measured": np.isin(depth, x)}
    for j, metric in enumerate(CARD_METRICS):
        out[metric] = np.interp(depth, x, rel[:, j])
    return pd.DataFrame(out)


def smooth_depth(data: pd.DataFrame, header: str) -> Figure:
    fig = new_figure(10, 4.4)
    ax = fig.add_subplot()
    grid = data[CARD_METRICS].to_numpy().T
    d0, d1 = float(data["depth"].min()), float(data["depth"].max())
    if d1 == d0:  # one layer: a single measured column
        d0, d1 = d0 - 0.5, d1 + 0.5
    im = ax.imshow(
        grid,
        cmap=PAPER_CMAP,
        vmin=0,
        vmax=1,
        aspect="auto",
        interpolation="nearest",
        extent=(d0, d1, len(CARD_METRICS) - 0.5, -0.5),
    )
    measured = data.loc[data["measured"], "depth"]
    for x in measured:
        ax.axvline(x, color="white", lw=0.6, alpha=0.7)
    ax.set_yticks(range(len(CARD_METRICS)), [short(m) for m in CARD_METRICS])
    step = 1 if len(measured) <= 24 else 2
    ax.set_xticks(measured.to_numpy()[::step], [str(int(v)) for v in measured][::step])
    ax.set_xlabel("depth (layer, 0-based); white lines: measured layers, colour between them is interpolated")
    cb = fig.colorbar(im, ax=ax, shrink=0.9, pad=0.01)
    cb.set_label("value relative to its row (0 = lowest layer, 1 = highest)")
    suptitle(fig, "Smooth-gradient rendering (LINEAR INTERPOLATION between measured layers)", header, 10)
    return fig


# ---- 6. correlation matrix across layers --------------------------------------------------------------
# Pairs that move together by definition, whatever the SAEs learned (alpha = 1 - L0/F at a near-constant F gives
# r = -1.00 for L0 vs alpha): marked on the figure and never reported as a finding.
DEFINITIONAL = {
    frozenset(pair): why
    for pair, why in [
        (("L0", "alpha"), "\u03b1 = 1 \u2212 L0/F"),
        (("alpha", "g_alpha"), "g is a function of \u03b1"),
        (("alpha", "d_star_S"), "d*_S = F/g(\u03b1)"),
        (("g_alpha", "d_star_S"), "d*_S = F/g(\u03b1)"),
        (("L0", "g_alpha"), "g(\u03b1) with \u03b1 = 1 \u2212 L0/F"),
        (("L0", "d_star_S"), "d*_S = F/g(1 \u2212 L0/F)"),
        (("dead", "F_alive"), "dead = d_sae \u2212 F"),
    ]
}


def definitional(x: str, y: str) -> str | None:
    """Why metrics x and y are related by definition, or None."""
    return DEFINITIONAL.get(frozenset((x, y)))


def correlation_data(run: RunData, trial: str, layers=None) -> pd.DataFrame:
    """Pearson r between every two metrics over the layers; constant metrics are left out (r undefined)."""
    t = metrics_data(run, trial, layers)
    varying = [m for m in CARD_METRICS if t[m].nunique() > 1]
    corr = t[varying].astype(float).corr(method="pearson")
    long = corr.reset_index(names="metric_x").melt(id_vars="metric_x", var_name="metric_y", value_name="r")
    return long.assign(n_layers=len(t))


def correlation(data: pd.DataFrame, header: str) -> Figure:
    metrics = [m for m in CARD_METRICS if m in set(data["metric_x"])]
    mat = data.pivot(index="metric_x", columns="metric_y", values="r").loc[metrics, metrics].to_numpy()
    n_layers = int(data["n_layers"].iloc[0]) if len(data) else 0
    fig = new_figure(7.4, 6.4)
    ax = fig.add_subplot()
    if len(metrics) < 2:
        ax.axis("off")
        ax.text(0.5, 0.5, "correlations need at least two layers whose metrics vary", ha="center", va="center")
        suptitle(fig, f"How the metrics move together across depth (n = {n_layers} layers)", header, 10)
        return fig
    im = ax.imshow(mat, cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(len(metrics)):
        for j in range(len(metrics)):
            by_definition = i != j and definitional(metrics[i], metrics[j])
            if by_definition:  # greyed out: the value is arithmetic, not a finding
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#d9d9d9", edgecolor="white", hatch="//"))
            ax.text(
                j,
                i,
                f"{mat[i, j]:+.2f}",
                ha="center",
                va="center",
                fontsize=8.5,
                color="#555555" if by_definition else "white" if abs(mat[i, j]) > 0.6 else "black",
            )
    ax.set_xticks(range(len(metrics)), [short(m) for m in metrics], rotation=45, ha="right")
    ax.set_yticks(range(len(metrics)), [short(m) for m in metrics])
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.set_label(f"Pearson r across {n_layers} layers (diverging: sign matters)")
    left_out = [short(m) for m in CARD_METRICS if m not in metrics]
    note = f"; constant over layers, left out: {', '.join(left_out)}" if left_out else ""
    reasons = sorted({why for pair, why in DEFINITIONAL.items() if pair <= set(metrics)})
    ax.set_xlabel(f"grey, hatched: related by definition ({'; '.join(reasons)})", fontsize=8.5)
    suptitle(fig, f"How the metrics move together across depth (n = {n_layers} layers{note})", header, 10)
    return fig


# ---- 7. headline card ---------------------------------------------------------------------------------
def headline_data(run: RunData, trial: str, layers=None) -> pd.DataFrame:
    t = layer_table(run, trial, layers)
    return pd.DataFrame(
        [
            {
                "mean_alpha": float(t["alpha"].mean()),
                "mean_L0": float(t["L0"].mean()),
                "total_dead": int(t["dead"].sum()),
                "n_layers": len(t),
                "d_sae": int(t["d_sae"].iloc[0]) if t["d_sae"].notna().all() else None,
            }
        ]
    )


def headline(data: pd.DataFrame, header: str) -> Figure:
    r = data.iloc[0]
    fig = new_figure(10, 2.7)
    axes = fig.subplots(1, 3)
    latents = f" of {int(r['n_layers'])} \u00d7 {int(r['d_sae']):,} latents" if pd.notna(r["d_sae"]) else ""
    cards = [
        (f"{r['mean_alpha']:.4f}", "mean \u03b1 over layers", "fraction of latents inactive per token"),
        (f"{r['mean_L0']:,.1f}", "mean L0 over layers", "active latents per token"),
        (f"{int(r['total_dead']):,}", "dead latents in total", latents.strip() or "summed over layers"),
    ]
    for ax, (big, label, unit) in zip(axes, cards):
        ax.axis("off")
        ax.text(0.5, 0.68, big, ha="center", va="center", fontsize=30, weight="bold", color="#1b3a5c")
        ax.text(0.5, 0.30, label, ha="center", va="center", fontsize=11)
        ax.text(0.5, 0.14, unit, ha="center", va="center", fontsize=8.5, color="0.35")
    suptitle(fig, "Headline numbers", header, 10)
    return fig


# ---- the sentence under each variant, computed from exactly the data it plotted -----------------------
def slides_heatmap_sentence(d: pd.DataFrame) -> str:
    return "The same final-snapshot numbers as variant 1, four metrics only."


def appendix_sidecar_sentence(d: pd.DataFrame) -> str:
    return (
        f"The top 10% of alive latents hold {percent(d['top10pct_share'].min())}\u2013"
        f"{percent(d['top10pct_share'].max())} of each layer's L\u221e; the more concentrated the importance, the "
        "further the refined floor sits below the naive one."
    )


def small_multiples_sentence(d: pd.DataFrame) -> str:
    return "Each panel is one layer; bars are relative to the other layers, numbers are measured."


def smooth_depth_sentence(d: pd.DataFrame) -> str:
    return "Colour between the white lines is interpolated between measured layers, not measured."


def correlation_sentence(d: pd.DataFrame) -> str:
    off = d[d["metric_x"] < d["metric_y"]].dropna(subset=["r"])
    found = off[[not definitional(x, y) for x, y in zip(off["metric_x"], off["metric_y"])]]
    if found.empty:
        return "Too few varying metrics for a correlation that is not fixed by definition."
    top = found.loc[found["r"].abs().idxmax()]
    pair = d[(d["metric_x"] == "alpha") & (d["metric_y"] == "dead")]["r"]
    extra = f" \u03b1 vs dead latents: r = {pair.iloc[0]:+.2f}." if len(pair) and pd.notna(pair.iloc[0]) else ""
    return (
        f"Strongest relation over {int(d['n_layers'].iloc[0])} layers that is not fixed by definition (the grey "
        f"cells, such as L0 vs \u03b1, are arithmetic): {short(top['metric_x'])} vs {short(top['metric_y'])} "
        f"(r = {top['r']:+.2f}); with this few layers, read the signs.{extra}"
    )


def headline_sentence(d: pd.DataFrame) -> str:
    r = d.iloc[0]
    return (
        f"Mean \u03b1 {r['mean_alpha']:.4f} and mean L0 {r['mean_L0']:,.1f} over {int(r['n_layers'])} layers, "
        f"with {int(r['total_dead']):,} dead latents in total."
    )
