"""Sphinx extension: serve MathJax from the built book itself, so formulas render without a network.

Sphinx loads MathJax 3 from a CDN by default: offline, the build succeeds but every formula stays raw TeX.
When a local MathJax 2.7 is installed (Debian `libjs-mathjax`, or a folder named by KDSAE_MATHJAX_DIR),
the few parts the book needs (TeX input, CommonHTML output, its web fonts: ~1.4 MB) are copied into
`_static/mathjax` and the pages load that copy. Without one, the CDN default stays and the build says so.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)
CANDIDATES = ("/usr/share/javascript/mathjax",)  # Debian: libjs-mathjax (+ fonts-mathjax)
CONFIG = "TeX-AMS_CHTML"
PARTS = (
    "MathJax.js",
    f"config/{CONFIG}.js",
    "extensions",
    "jax/input/TeX",
    "jax/output/CommonHTML",
    "jax/element/mml",
    "fonts/HTML-CSS/TeX/woff",
    "localization/en",
)
TARGET = "mathjax"
CSS_FILE = "kdsae-mathjax2.css"
# The theme lays display math out for MathJax 3 (a flex row whose mjx-container grows); MathJax 2's
# display span must grow the same way, or every equation sits at the right margin.
CSS = "div.math .MJXc-display { flex-grow: 1; }\n"


def local_mathjax() -> Path | None:
    env = os.environ.get("KDSAE_MATHJAX_DIR")
    for folder in ([env] if env else []) + list(CANDIDATES):
        root = Path(folder)
        if all((root / part).exists() for part in PARTS):
            return root
    return None


def _configure(app) -> None:
    config = app.config
    root = local_mathjax()
    app.env_mathjax_root = root  # read again at build-finished
    if root is None:
        logger.info(
            "offline_mathjax: no local MathJax (apt-get install libjs-mathjax, or set KDSAE_MATHJAX_DIR); "
            "pages load MathJax from its CDN and show raw TeX offline."
        )
        return
    config.mathjax_path = f"{TARGET}/MathJax.js?config={CONFIG}"
    app.add_css_file(f"{TARGET}/{CSS_FILE}")
    # myst-parser marks each page `tex2jax_ignore` and its math `math`; it says so in MathJax 3's terms
    # (mathjax3_config), which MathJax 2 would misread: say it in MathJax 2's instead.
    classes = app.env.myst_config.mathjax_classes if hasattr(app.env, "myst_config") else "math"
    config.mathjax3_config = None
    config.mathjax2_config = {
        "tex2jax": {
            "inlineMath": [["\\(", "\\)"]],
            "displayMath": [["\\[", "\\]"]],
            "processEscapes": True,
            "processClass": classes,
            "ignoreClass": "tex2jax_ignore|mathjax_ignore",
        },
        "CommonHTML": {"linebreaks": {"automatic": True}},
        "menuSettings": {"zoom": "None"},
    }


def _copy(app, exception) -> None:
    root = getattr(app, "env_mathjax_root", None)
    if exception is not None or root is None or app.builder.format != "html":
        return
    dest = Path(app.outdir) / "_static" / TARGET
    for part in PARTS:
        src, out = root / part, dest / part
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, out, dirs_exist_ok=True)  # follows Debian's font symlinks
        else:
            shutil.copyfile(src, out)
    (dest / CSS_FILE).write_text(CSS)
    logger.info(f"offline_mathjax: MathJax served from _static/{TARGET} (copied from {root}).")


def setup(app):
    app.connect("builder-inited", _configure, priority=900)  # after myst-parser sets its MathJax 3 options
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
