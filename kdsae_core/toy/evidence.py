"""Where the toy evidence comes from: the committed toy results (the paper grid, the direct-mode knee sweep, the
grid under other importance profiles) found on disk, loaded into a `ToyEvidence` (toy/analysis.py) and named as a
reader should see them. The analysis itself reads only the dicts.
"""

from __future__ import annotations

from pathlib import Path

from kdsae_core.common.errors import MissingData
from kdsae_core.common.paths import REPO_ROOT, toy_importance_results_file, toy_results_file
from kdsae_core.toy.analysis import ToyEvidence
from kdsae_core.toy.results import load_results

OTHER_PROFILES = ("geometric:0.9", "uniform")  # the paper grid is also committed under these importance profiles


def shown(path) -> str:
    """A path as a reader should see it: relative to the repository when inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p)


def committed_evidence(grid_file: Path | None = None) -> ToyEvidence:
    """The committed toy results the book's verdicts rest on: the paper grid (or `grid_file`), the direct-mode knee
    sweep and the grid under the other importance profiles (absent ones left out)."""
    grid_file = Path(grid_file) if grid_file else toy_results_file("paper")
    if not grid_file.exists():
        raise MissingData(
            f"the toy results {shown(grid_file)} are missing: run `make results-toy`, or pass --profile "
            "to run a sweep now"
        )
    return evidence_with_grid(load_results(grid_file), shown(grid_file))


def evidence_with_grid(grid: dict, source: str) -> ToyEvidence:
    """`grid` (from `source`) beside the committed direct-mode sweep and importance-profile grids, where present."""
    direct = toy_results_file("direct")
    profiles = {
        imp: (load_results(f), shown(f)) for imp in OTHER_PROFILES if (f := toy_importance_results_file(imp)).exists()
    }
    return ToyEvidence(
        grid,
        source,
        load_results(direct) if direct.exists() else None,
        shown(direct) if direct.exists() else "",
        profiles,
    )
