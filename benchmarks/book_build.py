"""Benchmark: wall time of the book build from a clean tree (`kdsae book --clean`, what `make book` runs).

Writes benchmarks/results/book_build.json and .md.

    python benchmarks/book_build.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from report import update_performance_page

from kdsae_core.common.fileio import atomic_write_json, atomic_write_text
from kdsae_core.common.paths import REPO_ROOT

OUT = Path(__file__).resolve().parent / "results"
GOAL_SECONDS = 15 * 60


def main() -> None:
    kdsae = Path(sys.executable).with_name("kdsae")
    t = time.perf_counter()
    r = subprocess.run([str(kdsae), "book", "--clean"], cwd=REPO_ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"book_build: the build failed:\n{r.stderr[-2000:]}")
    pages = sorted(
        str(p.relative_to(REPO_ROOT / "_build" / "html"))
        for p in (REPO_ROOT / "_build" / "html").rglob("*.html")
        if "_static" not in p.parts
    )
    result = {
        "wall_seconds": wall,
        "goal_seconds": GOAL_SECONDS,
        "pages": len(pages),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_json(OUT / "book_build.json", result)
    md = (
        f"# book_build benchmark\n\n`kdsae book --clean` on {os.cpu_count()} cores: **{wall / 60:.1f} min** "
        f"for {len(pages)} HTML pages (goal <= {GOAL_SECONDS // 60} min).\n"
    )
    atomic_write_text(OUT / "book_build.md", md)
    update_performance_page()  # book/performance.md shows this result
    print(md)


if __name__ == "__main__":
    main()
