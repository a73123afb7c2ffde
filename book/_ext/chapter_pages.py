"""Sphinx extension: the chapter pages read as a companion.

- Every chapter (a page from notebooks/) offers its notebook source and the notebook as the build executed it,
  for download: two links under the title. The executed notebook is MyST-NB's (jupyter_execute/ beside the
  HTML), copied next to the page when the build finishes.
- Code cells wrap their long lines instead of running off the page (the parameters cells' comments are long).
Cells that are plumbing carry the `hide-input` tag in the notebook itself (folded by default).
"""

from __future__ import annotations

import shutil
from pathlib import Path

CHAPTERS = "notebooks/"
CSS_FILE = "kdsae-pages.css"
CSS = """/* kdsae: code cells wrap instead of scrolling sideways (book/_ext/chapter_pages.py) */
div.cell div.cell_input pre { white-space: pre-wrap; overflow-wrap: anywhere; }
p.kd-downloads { font-size: 0.9em; }
"""


def downloads_html(docname: str) -> str:
    name = Path(docname).name
    return (
        f'<p class="kd-downloads">Download this chapter: <a href="../_sources/{docname}.py" download>notebook '
        f'source (.py)</a> · <a href="{name}.ipynb" download>executed notebook (.ipynb)</a></p>'
    )


def _page(app, pagename, templatename, context, doctree) -> None:
    body = context.get("body")
    if not pagename.startswith(CHAPTERS) or not body or "</h1>" not in body:
        return
    context["body"] = body.replace("</h1>", "</h1>\n" + downloads_html(pagename), 1)


def _static(app) -> None:
    if app.builder.format != "html":
        return
    app.add_css_file(CSS_FILE)


def _finish(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    (out / "_static" / CSS_FILE).write_text(CSS)
    executed = out.parent / "jupyter_execute"
    for docname in app.env.found_docs:
        if docname.startswith(CHAPTERS) and (executed / f"{docname}.ipynb").exists():
            shutil.copyfile(executed / f"{docname}.ipynb", out / f"{docname}.ipynb")


def setup(app):
    app.connect("builder-inited", _static)
    app.connect("html-page-context", _page)
    app.connect("build-finished", _finish)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
