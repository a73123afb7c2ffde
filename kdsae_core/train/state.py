"""The resumable state of a training run: `RUN/state/step{N}/` with one safetensors file per SAE (weights,
Adam moments, controller, firing record) and `trainer.json` (step, data position, settings, the sha256 of
every file beside it and of its own content). `RUN/state/LATEST` names the newest complete generation; the
one before it is kept, so a state that turns out truncated or corrupted falls back to the previous good one.

Writing is two-phase so that several processes (a torchrun job: each rank owns some SAEs) can share it:
every process writes its own SAEs' files (`write_units`), then one process writes `trainer.json` with all
their digests and moves LATEST (`commit`). States are written and read one SAE at a time (`write_units`,
`read_unit`): a paper trial's 24 SAEs are 19 GB of state, one is 0.8 GB.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from kdsae_core.common.errors import BadFile
from kdsae_core.common.fileio import atomic_write_chunks, atomic_write_json, atomic_write_text, sha256_file
from kdsae_core.runs import layout
from kdsae_core.sae.plan import STATE_GENERATIONS as KEEP

TRAINER_FILE = "trainer.json"
LATEST = "LATEST"
STREAM_FILE = "stream_seen.bin"  # digests of the documents the data stream has kept, in order


def unit_file(key: str) -> str:
    return key.replace("/", "_") + ".safetensors"


def _digest(meta: dict) -> str:
    """sha256 of trainer.json's content (canonical JSON), stored in it: a flipped digit that leaves the file
    valid JSON (a data position, an RNG byte) is caught like a flipped weight."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def generation_dir(run: Path, step: int) -> Path:
    return layout.train_state_dir(run) / f"step{step:09d}"


def write_units(run: Path, step: int, units: Mapping[str, Callable[[], dict[str, torch.Tensor]]]) -> dict[str, str]:
    """Write these SAEs' state files of generation `step`, one SAE at a time: `units` maps each key to a function
    that returns its state (SAEUnit.state), called only when that SAE's file is written. Return {file name: sha256}."""
    gen = generation_dir(run, step)
    return {unit_file(key): _write_unit(gen / unit_file(key), state) for key, state in units.items()}


def _write_unit(path: Path, state: Callable[[], dict[str, torch.Tensor]]) -> str:
    # The state lives only in this call: at most one SAE's CPU copy exists at a time (19 GB for every SAE of a
    # paper trial at once, 0.8 GB for one).
    return atomic_write_chunks(path, _safetensors_chunks(state()))


_ST_DTYPES = {
    torch.float32: "F32",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _safetensors_chunks(tensors: dict[str, torch.Tensor]) -> Iterator:
    """A safetensors file of `tensors` piece by piece: the header, then each tensor's bytes straight from its own
    memory (safetensors' save would first copy every tensor into one bytes object)."""
    header, offset = {}, 0
    for name, t in tensors.items():
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the format pads its header to 8 bytes
    yield struct.pack("<Q", len(head)) + head
    for t in tensors.values():
        yield t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def write_stream(run: Path, step: int, seen: bytes) -> dict[str, str]:
    """Write the data stream's record of the documents it has kept (TokenStream.seen) into generation `step`."""
    return {STREAM_FILE: atomic_write_chunks(generation_dir(run, step) / STREAM_FILE, [seen])}


def read_stream(run: Path, meta: dict) -> bytes:
    """The stream's record of generation meta["step"], checked against trainer.json as it is read."""
    return _read_checked(run, meta, STREAM_FILE)


def prune_before_write(run: Path) -> None:
    """Before a new generation is written: drop every generation but the newest (the one LATEST names), so the
    disk holds at most that one and the new one (sae_plan.STATE_GENERATIONS); the commit keeps both after."""
    gens = _generations(run)
    for old in gens[1:]:
        shutil.rmtree(old, ignore_errors=True)


def commit(run: Path, step: int, meta: dict, digests: dict[str, str]) -> Path:
    """Write trainer.json (with every unit's digest), point LATEST at it, drop generations beyond KEEP."""
    root, gen = layout.train_state_dir(run), generation_dir(run, step)
    body = json.loads(json.dumps({**meta, "step": step, "files": dict(sorted(digests.items()))}))
    atomic_write_json(gen / TRAINER_FILE, {**body, "sha256": _digest(body)})
    atomic_write_text(root / LATEST, gen.name + "\n")
    for old in sorted(p for p in root.glob("step*") if p.is_dir())[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return gen


def _generations(run: Path) -> list[Path]:
    """Generation folders, the one LATEST names first, then newest first."""
    root = layout.train_state_dir(run)
    if not root.is_dir():
        return []
    latest = (root / LATEST).read_text().strip() if (root / LATEST).exists() else None
    gens = [p for p in root.glob("step*") if p.is_dir() and p.name[4:].isdigit()]
    return sorted(gens, key=lambda p: (p.name != latest, -int(p.name[4:])))


def _check_generation(gen: Path, keys: list[str] | None) -> dict:
    """trainer.json of `gen` (without its own digest) once it and the files of `keys` (default: every unit) match
    their sha256, read a block at a time; ValueError (or OSError, ...) naming what does not."""
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
    for name in [unit_file(key) for key in keys] + [STREAM_FILE] * (STREAM_FILE in meta["files"]):
        if sha256_file(gen / name) != meta["files"][name]:
            raise ValueError(f"{gen / name} does not match its sha256")
    return meta


_DAMAGE = (OSError, ValueError, KeyError, TypeError, SafetensorError, json.JSONDecodeError)


def _intact(gen: Path, keys: list[str] | None) -> dict | None:
    try:
        return _check_generation(gen, keys)
    except _DAMAGE as e:
        print(f"kdsae: training state {gen} is truncated or corrupted ({e}); trying an older one", file=sys.stderr)
        return None


def read_unit(run: Path, meta: dict, key: str) -> dict[str, torch.Tensor]:
    """One SAE's state from generation meta["step"], its bytes checked against trainer.json as they are loaded
    (a file changed since the generation was checked is named, never loaded)."""
    return st_load(_read_checked(run, meta, unit_file(key)))


def _read_checked(run: Path, meta: dict, name: str) -> bytes:
    path = generation_dir(run, int(meta["step"])) / name
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta["files"][name]:
        raise BadFile(f"{path} changed after it was checked (it no longer matches its sha256): resume again.")
    return data


def intact_steps(run: Path, keys: list[str] | None = None) -> list[int]:
    """Steps of the generations whose trainer.json and `keys`' files are intact, preferred one first."""
    return [int(g.name[4:]) for g in _generations(run) if _intact(g, keys) is not None]


def load_meta(run: Path, step: int) -> dict | None:
    """trainer.json of generation `step` if it is intact (its unit files are checked as read_unit loads them)."""
    return _intact(generation_dir(run, step), keys=[])


def load_state(
    run: Path, step: int, keys: list[str] | None = None
) -> tuple[dict, dict[str, dict[str, torch.Tensor]]] | None:
    """(meta, {key: tensors}) of generation `step`, every SAE of `keys` at once: for tests and small runs (the
    trainer loads one SAE at a time with read_unit)."""
    meta = _intact(generation_dir(run, step), keys)
    return (
        None
        if meta is None
        else (meta, {k: read_unit(run, meta, k) for k in (meta["units"] if keys is None else keys)})
    )


def load_latest_state(
    run: Path, keys: list[str] | None = None
) -> tuple[dict, dict[str, dict[str, torch.Tensor]]] | None:
    """(trainer meta, {unit key: tensors}) of the newest intact generation, or None."""
    for gen in _generations(run):
        found = load_state(run, int(gen.name[4:]), keys)
        if found is not None:
            return found
    return None


def clear_state(run: Path) -> None:
    shutil.rmtree(layout.train_state_dir(run), ignore_errors=True)
