"""The resumable state of a training run: `RUN/state/step{N}/` with one safetensors file per SAE (weights,
Adam moments, controller, firing record) and `trainer.json` (step, data position, settings, and the sha256
of every file beside it). `RUN/state/LATEST` names the newest complete generation; the one before it is kept,
so a state that turns out truncated or corrupted falls back to the previous good one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import paths
from .fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file

KEEP = 2
TRAINER_FILE = "trainer.json"
LATEST = "LATEST"


def _unit_file(key: str) -> str:
    return key.replace("/", "_") + ".safetensors"


def save_state(run: Path, step: int, meta: dict, units: dict[str, dict[str, torch.Tensor]]) -> Path:
    """Write generation `step` (files first, trainer.json with their digests, then LATEST), drop older ones."""
    root = paths.train_state_dir(run)
    gen = root / f"step{step:09d}"
    digests = {}
    for key, tensors in units.items():
        data = st_save(tensors)
        atomic_write_bytes(gen / _unit_file(key), data)
        digests[_unit_file(key)] = hashlib.sha256(data).hexdigest()
    atomic_write_json(gen / TRAINER_FILE, {**meta, "step": step, "files": digests})
    atomic_write_text(root / LATEST, gen.name + "\n")
    for old in sorted(p for p in root.glob("step*") if p.is_dir())[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return gen


def _load_generation(gen: Path) -> tuple[dict, dict[str, dict[str, torch.Tensor]]] | None:
    try:
        meta = json.loads((gen / TRAINER_FILE).read_text())
        missing = [k for k in meta["units"] if _unit_file(k) not in meta["files"]]
        if missing:
            raise ValueError(f"it lacks the state of {', '.join(missing)}")
        units = {}
        for name, digest in meta["files"].items():
            path = gen / name
            if sha256_file(path) != digest:
                raise ValueError(f"{path} does not match its sha256")
            units[name] = st_load(path.read_bytes())
        return meta, units
    except (OSError, ValueError, KeyError, TypeError, SafetensorError, json.JSONDecodeError) as e:
        print(f"kdsae: training state {gen} is truncated or corrupted ({e}); trying an older one", file=sys.stderr)
        return None


def load_latest_state(run: Path) -> tuple[dict, dict[str, dict[str, torch.Tensor]]] | None:
    """(trainer meta, {unit key: tensors}) of the newest intact generation, or None."""
    root = paths.train_state_dir(run)
    if not root.is_dir():
        return None
    gens = sorted((p for p in root.glob("step*") if p.is_dir()), reverse=True)
    latest = (root / LATEST).read_text().strip() if (root / LATEST).exists() else None
    gens.sort(key=lambda p: (p.name != latest, -int(p.name[4:]) if p.name[4:].isdigit() else 0))
    for gen in gens:
        found = _load_generation(gen)
        if found is not None:
            meta, files = found
            return meta, {k: files[_unit_file(k)] for k in meta["units"]}
    return None


def clear_state(run: Path) -> None:
    shutil.rmtree(paths.train_state_dir(run), ignore_errors=True)
