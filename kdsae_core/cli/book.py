"""`kdsae book`: build the Jupyter Book (1.x) into _build/html, executing every notebook."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from kdsae_core.common.errors import KdsaeError
from kdsae_core.common.paths import REPO_ROOT


def register(sub) -> None:
    p = sub.add_parser("book", help="build the book into _build/html (executes every notebook)")
    p.add_argument("--clean", action="store_true", help="remove _build first (what CI does)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.clean:
        shutil.rmtree(REPO_ROOT / "_build", ignore_errors=True)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(REPO_ROOT), "--all", "-W", "--keep-going"]
    if subprocess.call(cmd, cwd=REPO_ROOT) != 0:
        raise KdsaeError(
            "the book build failed: read the Sphinx/notebook errors above (a failing notebook cell fails the build)."
        )
    print(f"book: {REPO_ROOT / '_build' / 'html' / 'index.html'}")
    return 0
