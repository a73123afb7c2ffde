"""The gallery page: every Experiment 2 figure and variant as a thumbnail, with why it exists (which
variant the paper uses), a link to the chapter cell that draws it and a download of its data.

Thumbnails and data are embedded in the page (data: URIs), so the page needs no files beside it.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

from kdsae_core.common import paths
from kdsae_core.common.errors import MissingData
from kdsae_core.figures import catalog as cat
from kdsae_core.figures.style import data_uri
from kdsae_core.runs import reference as reference_data
from kdsae_core.runs import tables as run_data
from kdsae_core.toy.results import load_results

CHAPTER_TITLES = {
    "01_toy_validation": "Experiment 1: the toy model",
    "02_trial_a": "Trial A: \u03bb 3e-4 fixed, dense regime",
    "03_trial_b": "Trial B: \u03bb 8e-5 fixed, paper-exact",
    "04_trial_c": "Trial C: adaptive \u03bb, target L0",
    "05_trials_compared": "Why these three trials",
    "06_pythia_reference": "Pythia-410M reference measurements",
}
CSS = """<style>
.kd-gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:14px;margin:8px 0 26px}
.kd-card{border:1px solid #d0d7de;border-radius:6px;padding:8px;background:#fff;font-size:0.85em;line-height:1.35}
.kd-card img{width:100%;height:150px;object-fit:contain;background:#fafafa;border-bottom:1px solid #eee}
.kd-card h4{font-size:1.0em;margin:6px 0 4px}
.kd-badge{background:#1b6ca8;color:#fff;border-radius:3px;padding:0 5px;font-size:0.8em;margin-left:4px}
.kd-links{margin-top:5px}.kd-links a{margin-right:10px}
.kd-file{color:#57606a;font-family:monospace;font-size:0.85em}
</style>"""


def _thumbnail(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=48)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _card(d: cat.Drawn, notebooks_url: str) -> str:
    s = d.spec
    badge = '<span class="kd-badge">used in the paper</span>' if s.in_paper else ""
    data_file = d.files["data"]
    link = f"{notebooks_url}/{s.chapter}.html#{s.anchor}"
    return (
        f'<div class="kd-card"><a href="{link}"><img src="{_thumbnail(d.figure)}" alt="{html.escape(d.stem)}"></a>'
        f"<h4>{html.escape(s.heading)}{badge}</h4><div>{html.escape(s.rationale)}</div>"
        f'<div class="kd-links"><a href="{link}">cell that draws it</a>'
        f'<a download="{data_file.name}" href="{data_uri(data_file)}">data ({data_file.suffix[1:].upper()})</a></div>'
        f'<div class="kd-file">{html.escape(d.stem)}.png</div></div>'
    )


def _toy_cards(out: Path, notebooks_url: str, path: Path | None) -> tuple[list[str], str]:
    """Cards for the toy chapter's figures, drawn from committed toy results (no sweep is run here)."""
    path = (Path(path) if Path(path).exists() else None) if path else paths.committed_toy_results()
    if path is None:
        return [], "<p>Experiment 1: no committed toy results to draw from here; the chapter runs them live.</p>"
    written = cat.draw_toy(load_results(path), out / "toy")
    cards = []
    link = f"{notebooks_url}/{cat.TOY_CHAPTER}.html"
    for name, files in written.items():
        heading, why = cat.spec(name).heading, cat.spec(name).rationale
        thumb = "data:image/png;base64," + base64.b64encode(files["png"].read_bytes()).decode()
        data = files["data"]
        cards.append(
            f'<div class="kd-card"><a href="{link}"><img src="{thumb}" alt="{html.escape(name)}"></a>'
            f"<h4>{html.escape(heading)}</h4><div>{html.escape(why)}</div>"
            f'<div class="kd-links"><a href="{link}">chapter</a>'
            f'<a download="{data.name}" href="{data_uri(data)}">data ({data.suffix[1:].upper()})</a>'
            f'</div><div class="kd-file">{html.escape(name)}.png</div></div>'
        )
    return cards, ""


def gallery_html(
    run: str | Path = "results/exp2/embedded",
    out: str | Path | None = None,
    reference_dir: str | Path | None = None,
    notebooks_url: str = "../notebooks",
    toy_results: str | Path | None = None,
) -> str:
    """Draw every figure (into `out`, default _build/figures/gallery) and return the gallery as HTML."""
    run = Path(run)
    run = run if run.is_absolute() else paths.REPO_ROOT / run
    out = Path(out) if out else paths.figures_out("gallery")
    data = run_data.load_run(run)
    drawn: dict[str, list[cat.Drawn]] = {}
    for s, trial in cat.run_figures_for(data):
        try:
            drawn.setdefault(s.chapter, []).append(cat.draw(s.key, data, out, trial))
        except MissingData:
            continue  # a trial without metrics has no curves; the chapter says so itself
    note = re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(data.scale_note()))
    parts = [CSS]
    ref_note = ""
    try:
        folder = reference_data.require_reference_dir(reference_dir)
        ms, stats = reference_data.reference_measurements(folder), reference_data.reference_training_stats(folder)
        drawn["06_pythia_reference"] = [cat.draw_reference(s.key, ms, stats, out) for s in cat.REFERENCE_FIGURES]
    except MissingData as e:
        ref_note = f"<p>Pythia-410M reference figures: not drawn here ({html.escape(str(e))})</p>"
    toy_cards, toy_note = _toy_cards(out, notebooks_url, toy_results)
    for chapter, title in CHAPTER_TITLES.items():
        if chapter == "01_toy_validation":
            if toy_cards:
                parts.append(f'<h3><a href="{notebooks_url}/{chapter}.html">{html.escape(title)}</a></h3>')
                parts.append('<div class="kd-gallery">' + "".join(toy_cards) + "</div>")
            parts.append(toy_note)
            continue
        if chapter == "02_trial_a":
            parts.append(f"<p><b>Experiment 2, run shown:</b> {note}</p>")
        if chapter not in drawn:
            continue
        parts.append(f'<h3><a href="{notebooks_url}/{chapter}.html">{html.escape(title)}</a></h3>')
        parts.append('<div class="kd-gallery">' + "".join(_card(d, notebooks_url) for d in drawn[chapter]) + "</div>")
    parts.append(ref_note)
    return "\n".join(parts)
