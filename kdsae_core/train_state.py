"""The resumable state of a training run: `RUN/state/step{N}/` with one safetensors file per SAE (weights,
Adam moments, controller, firing record) and `trainer.json` (step, data position, settings, the sha256 of
every file beside it and of its own content). `RUN/state/LATEST` names the newest complete generation; the
one before it is kept, so a state that turns out truncated or corrupted falls back to the previous good one.

Writing is two-phase so that several processes (a torchrun job: each rank owns some SAEs) can share it:
every process writes its own SAEs' files (`write_units`), then one process writes `trainer.json` with all
their digests and moves LATEST (`commit`).
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
from .sae_plan import STATE_GENERATIONS as KEEP
TRAINER_FILE = "trainer.json"
LATEST = "LATEST"


def unit_file(key: str) -> str:
    return key.replace("/", "_") + ".safetensors"


def _digest(meta: dict) -> str:
    """sha256 of trainer.json's content (canonical JSON), stored in it: a flipped digit that leaves the file
    valid JSON (a data position, an RNG byte) is caught like a flipped weight."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def generation_dir(run: Path, step: int) -> Path:
    return paths.train_state_dir(run) / f"step{step:09d}"


def write_units(run: Path, step: int, units: dict[str, dict[str, torch.Tensor]]) -> dict[str, str]:
    """Write these SAEs' state files of generation `step`; return {file name: sha256}."""
    gen = generation_dir(run, step)
    digests = {}
    for key, tensors in units.items():
        data = st_save(tensors)
        atomic_write_bytes(gen / unit_file(key), data)
        digests[unit_file(key)] = hashlib.sha256(data).hexdigest()
    return digests


def prune_before_write(run: Path) -> None:
    """Before a new generation is written: drop every generation but the newest (the one LATEST names), so the
    disk holds at most that one and the new one (sae_plan.STATE_GENERATIONS); the commit keeps both after."""
    gens = _generations(run)
    for old in gens[1:]:
        shutil.rmtree(old, ignore_errors=True)


def commit(run: Path, step: int, meta: dict, digests: dict[str, str]) -> Path:
    """Write trainer.json (with every unit's digest), point LATEST at it, drop generations beyond KEEP."""
    root, gen = paths.train_state_dir(run), generation_dir(run, step)
    body = json.loads(json.dumps({**meta, "step": step, "files": dict(sorted(digests.items()))}))
    atomic_write_json(gen / TRAINER_FILE, {**body, "sha256": _digest(body)})
    atomic_write_text(root / LATEST, gen.name + "\n")
    for old in sorted(p for p in root.glob("step*") if p.is_dir())[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return gen


def save_state(run: Path, step: int, meta: dict, units: dict[str, dict[str, torch.Tensor]]) -> Path:
    """One process owns every SAE: write and commit generation `step`."""
    return commit(run, step, meta, write_units(run, step, units))


def _generations(run: Path) -> list[Path]:
    """Generation folders, the one LATEST names first, then newest first."""
    root = paths.train_state_dir(run)
    if not root.is_dir():
        return []
    latest = (root / LATEST).read_text().strip() if (root / LATEST).exists() else None
    gens = [p for p in root.glob("step*") if p.is_dir() and p.name[4:].isdigit()]
    return sorted(gens, key=lambda p: (p.name != latest, -int(p.name[4:])))


def _load_generation(gen: Path, keys: list[str] | None, load: bool = True) -> tuple[dict, dict[str, dict[str, torch.Tensor]]] | None:
    """(meta, {key: tensors}) of `keys` (default: every unit) if trainer.json and those files are intact
    (`load=False`: check the digests only)."""
    try:
        path = gen / TRAINER_FILE
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e})") from None
        if "sha256" in meta and meta.pop("sha256") != _digest(meta):  # (older states have none: loaded unchecked)
            raise ValueError(f"{path} does not match its sha256")
        keys = meta["units"] if keys is None else keys
        missing = [k for k in keys if unit_file(k) not in meta["files"]]
        if missing:
            raise ValueError(f"it lacks the state of {', '.join(missing)}")
        units = {}
        for key in keys:
            path = gen / unit_file(key)
            if sha256_file(path) != meta["files"][unit_file(key)]:
                raise ValueError(f"{path} does not match its sha256")
            if load:
                units[key] = st_load(path.read_bytes())
        return meta, units
    except (OSError, ValueError, KeyError, TypeError, SafetensorError, json.JSONDecodeError) as e:
        print(f"kdsae: training state {gen} is truncated or corrupted ({e}); trying an older one", file=sys.stderr)
        return None


def intact_steps(run: Path, keys: list[str] | None = None) -> list[int]:
    """Steps of the generations whose trainer.json and `keys`' files are intact, preferred one first."""
    return [int(g.name[4:]) for g in _generations(run) if _load_generation(g, keys, load=False) is not None]


def load_state(run: Path, step: int, keys: list[str] | None = None) -> tuple[dict, dict[str, dict[str, torch.Tensor]]] | None:
    return _load_generation(generation_dir(run, step), keys)


def load_latest_state(run: Path, keys: list[str] | None = None) -> tuple[dict, dict[str, dict[str, torch.Tensor]]] | None:
    """(trainer meta, {unit key: tensors}) of the newest intact generation, or None."""
    for gen in _generations(run):
        found = _load_generation(gen, keys)
        if found is not None:
            return found
    return None


def clear_state(run: Path) -> None:
    shutil.rmtree(paths.train_state_dir(run), ignore_errors=True)
