"""The run folder before and after training: what a new, resumed or forced run finds there (`prepare_folder`),
the writes a killed process never finished, and the metrics lines past the state a run resumes from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kdsae_core.common.errors import RunFolderError
from kdsae_core.common.fileio import atomic_write_json, atomic_write_text
from kdsae_core.runs import layout
from kdsae_core.train.config import recorded_settings


def is_temporary(p: Path) -> bool:
    """A temporary of fileio's atomic writes (`.NAME.XXXXXXXX.tmp`), left behind if its process was killed."""
    return p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file()


def remove_temporaries(run: Path) -> None:
    for tmp in filter(is_temporary, run.rglob(".*.tmp")):  # writes a killed process never finished (we hold the lock)
        tmp.unlink(missing_ok=True)


def prepare_folder(out: Path, settings: dict, run_config, resume: bool, force: bool) -> str:
    """Main process: check the folder and write config.json (`run_config()`, whose "settings" are `settings`).
    Returns `done`, `resume` or `fresh`. A run recorded before a setting existed is read with its default
    (recorded_settings)."""
    cfg_path = layout.run_config(out)
    old = None
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text())
        except json.JSONDecodeError:
            old = {}
    if old is not None:
        same = recorded_settings(old.get("settings") or {}) == settings
        if resume and same and layout.run_status(out).exists():
            remove_temporaries(out)
            return "done"
        if force and not resume:
            for sub in (layout.CHECKPOINTS_DIR, layout.MEASUREMENTS_DIR, layout.STATE_DIR):
                shutil.rmtree(out / sub, ignore_errors=True)
            for f in [
                layout.run_metrics(out),
                layout.run_manifest(out),
                layout.run_status(out),
                *layout.summary_files(out),
            ]:
                f.unlink(missing_ok=True)
        elif not resume:
            raise RunFolderError(
                f"{out} already holds a run: pass --resume to continue it, --force to start it "
                "over, or use another --out."
            )
        elif not same:
            theirs, mine = recorded_settings(old.get("settings") or {}), settings
            diff = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
            raise RunFolderError(
                f"{out} holds a run with other settings ({', '.join(diff) or 'unreadable config'}): "
                "resume it with its own settings, or use another --out."
            )
    else:
        stray = (
            [p.name for p in out.iterdir() if p.name != layout.LOCK_FILE and not is_temporary(p)]
            if out.is_dir()
            else []
        )
        if stray and not force:
            raise RunFolderError(
                f"{out} is not empty and holds no run ({', '.join(sorted(stray)[:3])}): use an "
                "empty or new --out, or --force."
            )
    remove_temporaries(out)
    atomic_write_json(cfg_path, run_config())
    return "resume" if resume else "fresh"


def truncate_metrics(out: Path, step: int) -> None:
    """Keep the complete metrics lines of steps <= step (a killed run may have logged further)."""
    path = layout.run_metrics(out)
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", 0) <= step:
            keep.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in keep))
