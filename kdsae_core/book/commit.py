"""Copy a finished run into `results/` (what the book renders by default): never weights, never trainer
state; the metrics log thinned to every k-th step (plus the first, the last and every snapshot step); a
fresh manifest. `make results` calls these after training, so the committed files come from the code.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from kdsae_core.common import paths
from kdsae_core.common.errors import BadFile, RunFolderError
from kdsae_core.common.fileio import atomic_write_json, atomic_write_text
from kdsae_core.figures import regression as fr
from kdsae_core.runs import layout, manifest
from kdsae_core.toy.results import load_results

KEPT = (layout.CONFIG_FILE, layout.STATUS_FILE)


def thin_metrics(lines: list[str], every: int, keep_steps: set[int]) -> list[str]:
    rows = [json.loads(line) for line in lines if line.strip()]
    last = max((r["step"] for r in rows), default=0)
    keep = lambda s: s == 1 or s == last or s % every == 0 or s in keep_steps  # noqa: E731
    return [json.dumps(r) for r in rows if keep(r["step"])]


def commit_exp2_run(run: Path, dest: Path, every: int = 5) -> Path:
    """results/exp2/NAME from a complete, measured run folder."""
    run, dest = Path(run), Path(dest)
    if not layout.run_status(run).exists():
        raise RunFolderError(f"{run} has not finished training (no status.json): finish it with --resume first.")
    if not layout.measurements_root(run).is_dir():
        raise RunFolderError(f"{run} has no measurements: run `kdsae measure --run {run}` first.")
    problems = manifest.verify_manifest(run)
    if problems:
        raise RunFolderError(f"{run} fails its manifest: {problems[0]}")
    config = json.loads(layout.run_config(run).read_text())
    snapshot_steps = {int(s["step"]) for s in config.get("snapshots", [])}
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in KEPT:
        shutil.copy2(run / name, dest / name)
    for path in layout.summary_files(run):
        shutil.copy2(path, dest / path.name)
    shutil.copytree(layout.measurements_root(run), layout.measurements_root(dest))
    lines = layout.run_metrics(run).read_text().splitlines()
    atomic_write_text(
        layout.run_metrics(dest), "".join(f"{line}\n" for line in thin_metrics(lines, every, snapshot_steps))
    )
    atomic_write_json(
        dest / "results.json",
        {
            "from_run": str(run.name),
            "metrics_every_steps": every,
            "weights": "not committed (train again with `make results-exp2`)",
        },
    )
    manifest.write_manifest(dest)
    return dest


def commit_toy_results(out: Path, dest: Path) -> Path:
    """results/toy/PROFILE/toy_results.json from a finished `kdsae toy` folder, with its wall.json (the run's
    wall time, written by `make results-toy`) when there is one."""
    load_results(Path(out))  # validates it
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(out) / paths.TOY_RESULTS_FILE, dest / paths.TOY_RESULTS_FILE)  # the same bytes as the run wrote
    wall = Path(out) / paths.TOY_WALL_FILE
    if wall.exists():
        w = json.loads(wall.read_text())
        if not (
            isinstance(w.get("wall_seconds"), (int, float))
            and isinstance(w.get("threads"), int)
            and isinstance(w.get("command"), str)
        ):
            raise BadFile(f"{wall} needs a numeric wall_seconds, an integer threads and the command string.")
        shutil.copy2(wall, dest / paths.TOY_WALL_FILE)
    return dest


def commit_figure_data(dest: Path | None = None) -> Path:
    """results/figures/{exp2,toy}: the data of every figure drawn from the committed runs (the reference of
    `kdsae verify --figures`)."""
    dest = Path(dest) if dest is not None else paths.committed_figure_data()
    exp2 = paths.RESULTS / "exp2" / "embedded"
    toy = paths.toy_results_file("paper")
    with tempfile.TemporaryDirectory() as tmp:
        groups = fr.draw_figure_data(Path(tmp), exp2 if exp2.is_dir() else None, toy if toy.exists() else None)
        for name, folder in groups.items():
            fr.only_data(folder, dest / name)
    return dest
