"""The vocabulary of the Experiment 2 figures: metric names with units, how a table cell prints a value,
layer and trial colours, and the per-column shading of layer-by-metric tables. (Figure creation, titles,
axes and saving are shared with the toy figures, in `figures.style`.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure

# column -> (short label for tables, axis label with unit)
METRICS: dict[str, tuple[str, str]] = {
    "L0": ("L0", "L0 (active latents / token)"),
    "alpha": ("\u03b1", "\u03b1 = 1 \u2212 L0/F (fraction inactive)"),
    "g_alpha": ("g(\u03b1)", "g(\u03b1) (features / dimension)"),
    "d_star_S": ("d*_S", "d*_S (student dimensions)"),
    "F_alive": ("alive F", "alive F (latents)"),
    "dead": ("dead", "dead latents (count)"),
    "mse": ("MSE", "reconstruction MSE (activation\u00b2 / dim)"),
    "l1": ("L1", "L1 penalty (activation units)"),
    "loss": ("loss", "combined loss MSE + \u03bb\u00b7L1"),
    "explained_variance": ("expl. var.", "explained variance (fraction)"),
    "L_inf": ("L\u221e", "L\u221e = \u03a3 E[z\u00b2] (activation\u00b2)"),
}
# The per-layer metric vector most figures show, in the order the paper's tables use.
CARD_METRICS = ["L0", "alpha", "g_alpha", "d_star_S", "mse", "explained_variance", "dead", "F_alive"]
TRIAL_COLOURS = {"A": "#1b6ca8", "B": "#c2571a", "C": "#2e8b57"}
PILOT_COLOUR = "#7f7f7f"


def short(metric: str) -> str:
    return METRICS.get(metric, (metric, metric))[0]


def axis_label(metric: str) -> str:
    return METRICS.get(metric, (metric, metric))[1]


def fmt(value: float, metric: str) -> str:
    """A table cell: counts as integers, alpha with 4 decimals, the rest with 3-4 significant digits."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "\u2013"
    if metric in ("dead", "F_alive"):
        return f"{int(round(value)):,}"
    if metric == "alpha":
        return f"{value:.4f}"
    if metric in ("mse", "l1", "loss"):
        return f"{value:.3g}"
    if metric == "explained_variance":
        return f"{value:.3f}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"


def layer_colours(layers) -> dict[int, tuple]:
    """Shallow layers dark purple, deep layers yellow (viridis), so depth reads the same in every figure."""
    layers = sorted(int(v) for v in layers)
    cmap = colormaps["viridis"]
    span = max(1, len(layers) - 1)
    return {layer: cmap(0.9 * i / span) for i, layer in enumerate(layers)}


def layer_legend_or_colourbar(fig: Figure, axes, layers, colours) -> None:
    """A legend for a few layers; a depth colourbar when a legend would crowd the figure."""
    layers = sorted(layers)
    if len(layers) <= 8:
        handles = [axes[0].plot([], [], color=colours[layer], lw=2)[0] for layer in layers]
        fig.legend(
            handles,
            [f"layer {layer}" for layer in layers],
            loc="outside right center",
            frameon=False,
            title="layer (0-based)",
        )
        return
    cmap = ListedColormap([colours[layer] for layer in layers])
    norm = BoundaryNorm(np.arange(len(layers) + 1) - 0.5, len(layers))
    cb = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, location="right", shrink=0.9, pad=0.02)
    step = max(1, len(layers) // 8)
    cb.set_ticks(range(0, len(layers), step), labels=[str(layers[i]) for i in range(0, len(layers), step)])
    cb.set_label("layer (0-based)")


def heat_matrix(table: pd.DataFrame, metrics: list[str]) -> np.ndarray:
    """Each column scaled to [0, 1] over the layers (a constant column sits at 0.5)."""
    values = table[metrics].to_numpy(dtype=float)
    finite = np.isfinite(values)
    lo = np.where(finite, values, np.inf).min(axis=0)  # a column with no value (alpha undefined at every
    hi = np.where(finite, values, -np.inf).max(axis=0)  # layer) gets lo > hi: drawn at 0.5, cells left NaN
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.where(finite, np.where(hi > lo, (values - lo) / span, 0.5), np.nan)


def text_colour(shade: float, cmap_name: str) -> str:
    r, g, b, _ = colormaps[cmap_name](shade)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
