"""The one style every kdsae figure shares, and how a figure is created, titled and saved.

Figure modules create figures with `new_figure` (not registered with pyplot, so drawing many in a loop
leaks nothing), title them with `suptitle` and write them with `save_figure`, which puts the PNG and the
exact data it plots (CSV for a table, JSON otherwise) side by side, each written atomically.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import matplotlib
import pandas as pd
from cycler import cycler
from matplotlib.figure import Figure

from kdsae_core.common.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from kdsae_core.common.paths import display_path

# Okabe-Ito: distinguishable with the common colour-vision deficiencies and in greyscale order.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
SEQUENTIAL_CMAP = "viridis"
MISSING_COLOUR = "0.85"          # cells with no value ("no pairs"): light grey, never a colour of the scale
PREDICTED_COLOUR = "black"       # theory curves
CRITICAL_COLOUR = "#B2182B"      # d*_S markers
DPI = 150

# Relative font sizes (base 10 pt): titles and labels medium, ticks and legends small, so text never
# outgrows the panels it labels.
STYLE = {
    "axes.prop_cycle": cycler(color=PALETTE),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": "medium",
    "axes.labelsize": "medium",
    "xtick.labelsize": "small",
    "ytick.labelsize": "small",
    "legend.fontsize": "small",
    "legend.title_fontsize": "small",
    "figure.titlesize": "medium",
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "image.cmap": SEQUENTIAL_CMAP,
    "savefig.dpi": DPI,
    "figure.max_open_warning": 0,
}


def apply() -> None:
    """Make STYLE matplotlib's default (done once when `kdsae_core.figures` is imported)."""
    matplotlib.rcParams.update(STYLE)


def new_figure(width: float, height: float) -> Figure:
    """A figure with constrained layout that pyplot does not track."""
    return Figure(figsize=(width, height), layout="constrained")


def suptitle(fig: Figure, what: str, source: str = "", fontsize: float = 10) -> None:
    """What the figure shows (first lines) and where its numbers come from (smaller), wrapped to the
    figure's width so a narrow figure never clips its title."""
    chars = max(30, int(fig.get_figwidth() * 72 / (0.56 * fontsize)))
    text = "\n".join(textwrap.wrap(what, chars))
    if source:
        text += "\n" + "\n".join(textwrap.wrap(source, chars))
    fig.suptitle(text, fontsize=fontsize)


def save_figure(fig: Figure, data, folder: str | Path, name: str) -> dict[str, Path]:
    """Write `folder/name.png` and the data it plots beside it: `name.csv` for a DataFrame, one
    `name_<key>.csv` per table for a dict of DataFrames (a figure with panels of different kinds), and
    `name.json` for anything else JSON can hold. Returns {"png": path, "data": path, ...}, where "data" is
    the first data file and further tables are under "data_<key>"."""
    folder = Path(folder)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})  # no version stamp: same bytes each run
    atomic_write_bytes(folder / f"{name}.png", buf.getvalue())
    written = {"png": folder / f"{name}.png"}
    if isinstance(data, pd.DataFrame):
        written["data"] = folder / f"{name}.csv"
        atomic_write_text(written["data"], data.to_csv(index=False))
    elif isinstance(data, dict) and data and all(isinstance(v, pd.DataFrame) for v in data.values()):
        for i, (key, table) in enumerate(data.items()):
            path = folder / f"{name}_{key}.csv"
            atomic_write_text(path, table.to_csv(index=False))
            written["data" if i == 0 else f"data_{key}"] = path
    else:
        written["data"] = folder / f"{name}.json"
        atomic_write_json(written["data"], data)
    return written


EMBED_LIMIT = 512 * 1024  # data files up to this size are embedded in the page as a download link


def provenance_html(drawn_by: str, written: dict[str, Path], origin: str = "") -> str:
    """The caption line under a figure in the book: the function that drew it, what it was drawn from,
    and its data files (downloadable from the page itself when small enough, else their path)."""
    import base64
    import html
    links = []
    for key, path in written.items():
        if key == "png":
            continue
        path = Path(path)
        size = path.stat().st_size
        if size <= EMBED_LIMIT:
            uri = "data:text/csv;base64," if path.suffix == ".csv" else "data:application/json;base64,"
            links.append(f'<a download="{html.escape(path.name)}" href="{uri}{base64.b64encode(path.read_bytes()).decode()}">'
                         f"{html.escape(path.name)}</a>")
        else:
            links.append(f"<code>{html.escape(display_path(path))}</code> ({size / 1e6:.1f} MB, not embedded)")
    src = f" from {html.escape(origin)}" if origin else ""
    return (f'<p class="kd-provenance"><small>Drawn by <code>{html.escape(drawn_by)}</code>{src}. '
            f"Data plotted: {', '.join(links)}.</small></p>")
