"""The one style every kdsae figure shares (toy model and Experiment 2 alike), and how a figure is
created, titled, given readable axes and saved.

Figure modules create figures with `new_figure` (not registered with pyplot, so drawing many in a loop
leaks nothing), title them with `suptitle` and write them with `save_figure`, the one save path: it puts
the PNG and the exact data it plots (CSV for a table, JSON otherwise) side by side, each written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
from pathlib import Path

import matplotlib
import pandas as pd
from cycler import cycler
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from kdsae_core.common.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from kdsae_core.common.paths import display_path
from kdsae_core.runs.tables import format_tokens

# Okabe-Ito: distinguishable with the common colour-vision deficiencies and in greyscale order.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
SEQUENTIAL_CMAP = "viridis"
MISSING_COLOUR = "0.85"  # cells with no value ("no pairs"): light grey, never a colour of the scale
PREDICTED_COLOUR = "black"  # theory curves
CRITICAL_COLOUR = "#B2182B"  # d*_S markers
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
    """What the figure shows (first lines) and where its numbers come from (the run, the model, the
    results file), wrapped to the figure's width so a narrow figure never clips its title."""
    chars = max(30, int(fig.get_figwidth() * 72 / (0.56 * fontsize)))
    fig.suptitle("\n".join(textwrap.wrap(what, chars) + textwrap.wrap(source, chars)), fontsize=fontsize)


def percent(value) -> str:
    """A fraction as a percentage with one decimal, the way every sentence under a figure prints one (text
    such as "no pairs" passes through)."""
    return value if isinstance(value, str) else f"{100 * value:.1f}%"


def plain_log_axis(axis) -> None:
    """A log axis labelled 0.01, 0.02, 0.05, ... instead of powers of ten only."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def tokens_axis(ax, label: str = "training tokens") -> None:
    """Token counts as 50k / 1.5M / 300M rather than 1e8 offsets."""
    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_tokens(v) if v > 0 else "0"))
    ax.set_xlabel(label)


def save_figure(
    fig: Figure, data, folder: str | Path, name: str, formats: tuple[str, ...] = ("png",)
) -> dict[str, Path]:
    """Write `folder/name.png` (and `name.<ext>` for each further format, e.g. an SVG for print) and the data
    it plots beside it: `name.csv` for a DataFrame, one `name_<key>.csv` per table for a dict of DataFrames
    (a figure with panels of different kinds), and `name.json` for anything else JSON can hold. Returns
    {"png": path, ..., "data": path}, where "data" is the first data file and further tables are under
    "data_<key>"."""
    folder = Path(folder)
    written = {}
    for ext in formats:
        buf = io.BytesIO()
        # no version stamp in a PNG: the same bytes each run
        fig.savefig(buf, format=ext, dpi=DPI, metadata={"Software": None} if ext == "png" else None)
        atomic_write_bytes(folder / f"{name}.{ext}", buf.getvalue())
        written[ext] = folder / f"{name}.{ext}"
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


def data_uri(path: Path) -> str:
    """A CSV or JSON data file as a data: URI, so a page can offer it for download with no file beside it."""
    mime = "text/csv" if Path(path).suffix == ".csv" else "application/json"
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode()


def provenance_html(drawn_by: str, written: dict[str, Path], origin: str = "") -> str:
    """The caption line under a figure in the book: the function that drew it, what it was drawn from,
    and its data files (downloadable from the page itself when small enough, else their path)."""
    links = []
    for key, path in written.items():
        if key == "png":
            continue
        path = Path(path)
        size = path.stat().st_size
        if size <= EMBED_LIMIT:
            links.append(f'<a download="{html.escape(path.name)}" href="{data_uri(path)}">{html.escape(path.name)}</a>')
        else:
            links.append(f"<code>{html.escape(display_path(path))}</code> ({size / 1e6:.1f} MB, not embedded)")
    src = f" from {html.escape(origin)}" if origin else ""
    return (
        f'<p class="kd-provenance"><small>Drawn by <code>{html.escape(drawn_by)}</code>{src}. '
        f"Data plotted: {', '.join(links)}.</small></p>"
    )
