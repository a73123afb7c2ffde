"""On-disk SAE checkpoints: one folder per (layer, snapshot) holding `cfg.json` + `sae_weights.safetensors`.

The folder is the SAELens layout (`SAE.load_from_disk` reads it: cfg fields `architecture`, `d_in`, `d_sae`,
`dtype`, `device`, `apply_b_dec_to_input`, `normalize_activations`, `reshape_activations`, `metadata`); what
kdsae itself needs (trial, layer, snapshot, tokens, lambda at the snapshot, L1 form) lives under
`metadata.kdsae`. `metadata.sae_lens_version` must be present and >= 6: without it SAELens 6 treats the file as
a pre-6 config, drops the whole `metadata` block (model, hook, kdsae) and sets prepend_bos to True (checked
against SAELens 6.54.12 by tests/saelens).
Weights are written atomically; loading checks names, shapes and (when a manifest lists the file) sha256.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from kdsae_core.common.errors import BadFile
from kdsae_core.common.fileio import atomic_write_bytes, atomic_write_json, read_json_object, sha256_file
from kdsae_core.runs.layout import CFG_FILE, WEIGHTS_FILE
from kdsae_core.sae.model import PARAM_NAMES, SAE

SAELENS_FORMAT_VERSION = "6.54.12"  # the SAELens release whose cfg.json format this writes (tests/saelens)
SAELENS_FIELDS = {
    "architecture": "standard",
    "dtype": "float32",
    "device": "cpu",
    "apply_b_dec_to_input": True,
    "normalize_activations": "none",
    "reshape_activations": "none",
}


def sae_cfg(d_in: int, d_sae: int, *, model: str, layer: int, context: int, dataset: str, kdsae: dict) -> dict:
    """cfg.json of a checkpoint, in SAELens 6's standard-SAE format."""
    return {
        "architecture": "standard",
        "d_in": int(d_in),
        "d_sae": int(d_sae),
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": SAELENS_FORMAT_VERSION,
            "sae_lens_training_version": None,  # trained by kdsae, not by SAELens
            "model_name": model,
            "hook_name": f"blocks.{layer}.hook_resid_post",
            "hook_head_index": None,
            "context_size": int(context),
            "dataset_path": dataset,
            "prepend_bos": False,
            "kdsae": kdsae,
        },
    }


def saelens_cfg(cfg: dict) -> dict:
    """`cfg` completed for SAELens 6 (older kdsae runs lack `metadata.sae_lens_version`); nothing else changes."""
    out = {**SAELENS_FIELDS, **cfg}
    meta = dict(out.get("metadata") or {})
    meta.setdefault("sae_lens_version", SAELENS_FORMAT_VERSION)
    meta.setdefault("sae_lens_training_version", None)
    out["metadata"] = meta
    return out


def save_checkpoint(folder: Path, sae: SAE, cfg: dict) -> None:
    """Weights first, then cfg.json: a folder with a cfg.json always has its weights beside it."""
    folder = Path(folder)
    tensors = {n: t.detach().to("cpu", torch.float32).contiguous() for n, t in sae.tensors().items()}
    atomic_write_bytes(folder / WEIGHTS_FILE, st_save(tensors))
    atomic_write_json(folder / CFG_FILE, cfg)


def read_cfg(folder: Path) -> dict:
    path = Path(folder) / CFG_FILE
    if not path.exists():
        raise BadFile(f"checkpoint {folder} has no {CFG_FILE}.")
    cfg = read_json_object(path)
    for key in ("d_in", "d_sae"):
        if not isinstance(cfg.get(key), int) or cfg[key] < 1:
            raise BadFile(f"{path} lacks a positive integer {key}.")
    return cfg


def load_checkpoint(
    folder: Path, expected_sha256: str | None = None, d_sae: int | None = None, device: str = "cpu"
) -> tuple[SAE, dict]:
    """The SAE of a checkpoint folder and its cfg. A truncated or corrupted weights file, a digest that does
    not match `expected_sha256`, or shapes other than cfg.json (or `d_sae`) says are errors naming the file."""
    folder = Path(folder)
    cfg = read_cfg(folder)
    if d_sae is not None and cfg["d_sae"] != d_sae:
        raise BadFile(f"checkpoint {folder} has d_sae {cfg['d_sae']}, not the {d_sae} asked for.")
    path = folder / WEIGHTS_FILE
    if not path.exists():
        raise BadFile(f"checkpoint {folder} has no {WEIGHTS_FILE}.")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise BadFile(f"{path} does not match its manifest sha256 (truncated or corrupted).")
    try:
        tensors = st_load(path.read_bytes())
    except (SafetensorError, ValueError, OSError) as e:
        raise BadFile(f"{path} is not a readable safetensors file (truncated or corrupted: {e}).") from None
    missing = [n for n in PARAM_NAMES if n not in tensors]
    if missing:
        raise BadFile(f"{path} lacks {', '.join(missing)} (found: {', '.join(sorted(tensors)) or 'nothing'}).")
    sae = SAE(cfg["d_in"], cfg["d_sae"], device=device)
    try:
        sae.load_tensors(tensors)
    except ValueError as e:
        raise BadFile(f"{path}: {e}") from None
    if not all(bool(torch.isfinite(t).all()) for t in tensors.values()):
        raise BadFile(f"{path} holds NaN or infinite weights.")
    return sae, cfg


def kdsae_meta(cfg: dict) -> dict:
    meta = (cfg.get("metadata") or {}).get("kdsae") or {}
    return meta if isinstance(meta, dict) else {}


def finite_or_none(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None
