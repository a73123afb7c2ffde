"""The repository's paths and the machine's download cache. The files inside a run folder: runs/layout.py."""

from __future__ import annotations

import os
from pathlib import Path

from kdsae_core.common.errors import InvalidParameter

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS = REPO_ROOT / "results"
NOTEBOOKS = REPO_ROOT / "notebooks"
BOOK_BUILD = REPO_ROOT / "_build" / "html"

TOY_RESULTS_FILE = "toy_results.json"
TOY_STATE_FILE = "toy_state.pt"
TOY_PARTS_DIR = "parts"  # a sweep split over processes: one ordinary sweep folder per group of feature counts
TOY_WALL_FILE = "wall.json"  # the paper run's wall time, beside its committed results


def display_path(path: Path) -> str:
    """A path as a reader sees it: relative to the repository when inside it (a built page or a record must not
    show the build machine's folders), else as given."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(path)


def toy_results_dir(profile: str) -> Path:
    """Committed results of the toy sweep for a profile (`quick` or `paper`)."""
    return RESULTS / "toy" / profile


def toy_results_file(profile: str) -> Path:
    return toy_results_dir(profile) / TOY_RESULTS_FILE


def toy_importance_results_file(importance: str) -> Path:
    """Committed results of the paper grid under another importance profile (`geometric:0.9` -> paper-geometric-0.9)."""
    return toy_results_file("paper-" + importance.replace(":", "-"))


def committed_toy_results() -> Path | None:
    """The committed toy results the book's gallery draws from: the paper profile's, else the quick one's."""
    return next((f for f in map(toy_results_file, ("paper", "quick")) if f.exists()), None)


def committed_figure_data() -> Path:
    """The figure data (CSV/JSON, no images) drawn from the committed runs: the reference of
    `kdsae verify --figures`."""
    return RESULTS / "figures"


def reference_dir() -> Path | None:
    """The authors' released Pythia-410M measurements, if present.

    Looked up in `KDSAE_REFERENCE_DIR`, then beside the repository (`../shared/reference/...`).
    """
    env = os.environ.get("KDSAE_REFERENCE_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "reference" / "pythia410m_colm_erdos")
    candidates.append(reference_download_dir())
    for c in candidates:
        if c.is_dir():
            return c
    return None


def reference_download_dir() -> Path:
    """Where `kdsae fetch-reference` puts the authors' files by default (outside the repository: they
    may not be committed): `$XDG_CACHE_HOME/kdsae/pythia410m_colm_erdos` or `~/.cache/kdsae/...`."""
    return kdsae_cache_dir() / "pythia410m_colm_erdos"


def figures_out(name: str) -> Path:
    """Folder the book's notebooks write their figures and figure data into (never results/)."""
    return REPO_ROOT / "_build" / "figures" / name


# ---- downloads (hub/client.py, hub/published.py) ----------------------------------------------
def kdsae_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/kdsae` or `~/.cache/kdsae`: downloads that may not live in the repository."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "kdsae"


def hub_run_dir(trial: str, revision: str | None = None) -> Path:
    """Run folder that `published.fetch_trial` converts and measures a published trial into (KDSAE_HUB_RUNS overrides
    the parent folder): `<cache>/hub-runs/trial{T}` (`trial{T}@{revision}` for a pinned revision)."""
    root = Path(os.environ["KDSAE_HUB_RUNS"]) if os.environ.get("KDSAE_HUB_RUNS") else kdsae_cache_dir() / "hub-runs"
    return root / (f"trial{trial}" + (f"@{revision.replace('/', '_')}" if revision else ""))


def refuse_results(folder: Path, what: str) -> None:
    """Weights never go into results/ (small committed result files only)."""
    f, results = Path(folder).expanduser().resolve(), RESULTS.resolve()
    if f == results or results in f.parents:
        raise InvalidParameter(
            f"{what} {folder} is inside results/, which holds small committed result files and "
            "never weights: choose a folder outside it (e.g. runs/)."
        )
