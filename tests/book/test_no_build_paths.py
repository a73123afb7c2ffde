"""Issue 21, item 9: no page of the built book (HTML, its search index, the notebooks it offers for download)
shows a folder of the machine that built it: not the repository's absolute path, nor the home folder, the
reference data's folder or kdsae's cache. Runs over the book `make test` builds (_build/html, or
KDSAE_BOOK_HTML for another build); skipped when there is no built book."""

import os
from pathlib import Path

import pytest

from kdsae_core.common import paths

ROOT = Path(os.environ.get("KDSAE_BOOK_HTML", paths.BOOK_BUILD))
TEXT_SUFFIXES = {".html", ".js", ".txt", ".ipynb", ".md", ".json", ".csv", ".svg"}


def machine_paths() -> list[str]:
    found = {str(paths.REPO_ROOT), str(paths.REPO_ROOT.resolve()), f"{Path.home()}/", str(paths.kdsae_cache_dir())}
    ref = paths.reference_dir()
    if ref is not None:
        found |= {str(ref), str(ref.resolve())}
    return sorted(found)


def test_no_page_shows_a_path_of_the_build_machine():
    if not (ROOT / "index.html").exists() and not list(ROOT.glob("**/*.html")):
        pytest.skip(f"no built book in {ROOT} (make test builds it before the book tests)")
    wanted = machine_paths()
    hits = []
    for f in sorted(ROOT.rglob("*")):
        if f.suffix not in TEXT_SUFFIXES or not f.is_file():
            continue
        text = f.read_text(errors="replace")
        for p in wanted:
            at = text.find(p)
            if at >= 0:
                hits.append(f"{f.relative_to(ROOT)}: ...{text[max(0, at - 60) : at + len(p) + 40]!r}...")
    assert not hits, "\n".join(hits[:10])
