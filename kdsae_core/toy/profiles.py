"""The toy sweep's named settings and its recorded wall time: what `kdsae toy --help` and `kdsae verify --help`
show, kept free of torch so that the command starts without it (toy/sweep.py runs the sweep)."""

from __future__ import annotations

import json
from pathlib import Path

from kdsae_core.common.paths import TOY_WALL_FILE, toy_results_dir

KNEE_WIDTHS = "knee"  # widths 1..min(n, ceil(1.5 d*_S) + 1) for each (n, alpha): past the predicted knee
PROFILES: dict[str, dict] = {
    "paper": dict(
        n=[10, 20, 40],
        alpha=[0.80, 0.90, 0.95, 0.99],
        d_teacher=[3, 5, 8, 10],
        seeds=20,
        steps=10_000,
        batch=1024,
        lr=3e-3,
        eval_samples=65_536,
    ),
    "quick": dict(
        n=[10, 20],
        alpha=[0.80, 0.90, 0.95, 0.99],
        d_teacher=[3, 5],
        seeds=3,
        steps=1_500,
        batch=1024,
        lr=3e-3,
        eval_samples=16_384,
    ),
    # Students learn the task itself (no teacher, so no teacher-width ceiling on the floor) at widths spanning the
    # predicted knee: the grid on which the knee claim can be tested. d_teacher only keys the seeds here.
    "direct": dict(
        n=[10, 20, 40],
        alpha=[0.80, 0.90, 0.95, 0.99],
        d_teacher=[1],
        widths=KNEE_WIDTHS,
        mode="direct",
        seeds=20,
        steps=10_000,
        batch=1024,
        lr=3e-3,
        eval_samples=65_536,
    ),
}
TOY_MACHINE = "2 CPU cores (AMD EPYC, shared)"  # the machine `make results-toy` ran on for the committed wall.json


def wall_time(folder: Path) -> str | None:
    """The wall time `make results-toy` recorded beside toy results (wall.json), in words; None without one."""
    try:
        wall = json.loads((Path(folder) / TOY_WALL_FILE).read_text())
    except (OSError, ValueError):
        return None
    return (
        f"{wall['wall_seconds'] / 60:.1f} min wall on {TOY_MACHINE}, {wall.get('jobs', 1)} process(es) of "
        f"{wall['threads']} thread(s), `{wall['command']}`"
    )


def paper_grid_time() -> str:
    """How long the paper grid takes, measured once: the wall time recorded beside the committed results
    (results/toy/paper/wall.json). The one figure the CLI, the README and the book state."""
    return (
        wall_time(toy_results_dir("paper")) or "not timed on this checkout (`make results-toy` records its wall time)"
    )
