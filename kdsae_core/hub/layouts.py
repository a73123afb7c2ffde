"""Readers for `.pt` SAE checkpoints written by other code (the authors' published files, SAELens state dicts).

A `.pt` file is ALWAYS opened with `torch.load(..., weights_only=True)`: tensors and plain data only, so a
crafted pickle cannot run code. Before that, the zip container's CRCs are checked, so a truncated or corrupted
file is reported instead of loading as garbage (torch does not check them).

The state dict is found at the top level or under one of `CONTAINERS` (the authors save
`{"model_state": state_dict, "optimizer_state": ..., "config": {...}, "stats": [...]}`), prefixes in
`STRIP_PREFIXES` are removed, and its key set must equal exactly one entry of `LAYOUTS`. Each layout lists its
tensors with symbolic shapes (d_in, d_sae) and a function folding them into kdsae's / SAELens' parameters
(W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec; z = ReLU((x - b_dec) W_enc + b_enc),
x_hat = z W_dec + b_dec). Folding runs in float64. Adding a layout is one `Layout(...)` entry.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from kdsae_core.common.errors import BadFile

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Layout:
    name: str
    shapes: dict[str, tuple[str, ...]]  # key -> symbolic shape over ("d_in", "d_sae")
    fold: Callable[[Tensors], Tensors]  # float64 tensors of `shapes` -> W_enc, b_enc, W_dec, b_dec
    about: str


def _fold_b_pre(t: Tensors) -> Tensors:
    # z = ReLU(E (x - b_pre) + e), x_hat = D z + d + b_pre.  With b_dec = d + b_pre:
    # (x - b_dec) E^T + (e + E d) = (x - b_pre) E^T + e, so the encoder output is unchanged.
    E, D = t["encoder.weight"], t["decoder.weight"]
    return {
        "W_enc": E.T,
        "b_enc": t["encoder.bias"] + E @ t["decoder.bias"],
        "W_dec": D.T,
        "b_dec": t["decoder.bias"] + t["b_pre"],
    }


def _fold_linear(t: Tensors) -> Tensors:
    # z = ReLU(E x + e), x_hat = D z + d: the same fold with b_pre = 0.
    return _fold_b_pre({**t, "b_pre": torch.zeros_like(t["decoder.bias"])})


LAYOUTS: list[Layout] = [
    Layout(
        "authors",
        {
            "b_pre": ("d_in",),
            "encoder.weight": ("d_sae", "d_in"),
            "encoder.bias": ("d_sae",),
            "decoder.weight": ("d_in", "d_sae"),
            "decoder.bias": ("d_in",),
        },
        _fold_b_pre,
        "the paper authors' SparseAutoencoder (pre-encoder bias b_pre, nn.Linear encoder and decoder)",
    ),
    Layout(
        "saelens",
        {"W_enc": ("d_in", "d_sae"), "b_enc": ("d_sae",), "W_dec": ("d_sae", "d_in"), "b_dec": ("d_in",)},
        lambda t: dict(t),
        "SAELens' standard SAE (and kdsae's own)",
    ),
    Layout(
        "linear-pair",
        {
            "encoder.weight": ("d_sae", "d_in"),
            "encoder.bias": ("d_sae",),
            "decoder.weight": ("d_in", "d_sae"),
            "decoder.bias": ("d_in",),
        },
        _fold_linear,
        "two nn.Linear layers without a pre-encoder bias",
    ),
]
CONTAINERS = ("model_state", "state_dict", "model_state_dict", "sae_state_dict", "sae")
STRIP_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / torch.compile wrappers


@dataclass
class PtCheckpoint:
    """A converted `.pt` file: kdsae parameters (float32), shapes, the layout it matched and its plain data."""

    tensors: Tensors
    d_in: int
    d_sae: int
    layout: str
    extra: dict  # JSON-safe top-level entries other than the state dict (the authors' `config`, `stats`)


# ---- reading the file ----------------------------------------------------------------------------------------
def check_container(path: Path) -> None:
    """BadFile unless `path` is a complete file: for PyTorch's zip format, every part's CRC is checked (torch
    itself does not, so a flipped byte would load as a wrong weight)."""
    path = Path(path)
    if not path.is_file():
        raise BadFile(f"{path} does not exist.")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":
        if size == 0:
            raise BadFile(f"{path} is empty (truncated); download it again.")
        return  # the legacy (pre-1.6) format has no checksums: torch.load below is the only check
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, EOFError, OSError):
        raise BadFile(
            f"{path} is truncated or corrupted ({size:,} bytes, not a complete PyTorch zip archive); download it again."
        ) from None
    if bad is not None:
        raise BadFile(f"{path} is corrupted (the checksum of its part {bad} does not match); download it again.")


def read_pt(path: Path) -> object:
    """The object stored in `path`, loaded with weights_only=True after checking the zip CRCs."""
    path = Path(path)
    check_container(path)
    size = path.stat().st_size
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise BadFile(
            f"{path} was refused: it holds Python objects, not only tensors and plain data"
            f"{f' ({why})' if why else ''}; kdsae loads checkpoints only with torch.load(weights_only=True), "
            "which never runs code stored in a file."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as e:
        raise BadFile(
            f"{path} is truncated or corrupted ({size:,} bytes; torch.load: "
            f"{str(e).splitlines()[0][:100] if str(e) else type(e).__name__}); download it again."
        ) from None


def _state_dict(obj: object, path: Path) -> tuple[Tensors, dict]:
    """(the state dict, the other top-level entries) of a loaded object."""
    if not isinstance(obj, dict):
        raise BadFile(
            f"{path} holds a {type(obj).__name__}, not a state dict or a dict with one; known layouts: {_known()}."
        )
    for key in CONTAINERS:
        inner = obj.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return dict(inner), {k: v for k, v in obj.items() if k != key}
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return tensors, {k: v for k, v in obj.items() if not isinstance(v, torch.Tensor)}


def _strip(tensors: Tensors) -> Tensors:
    for prefix in STRIP_PREFIXES:
        if tensors and all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def _known() -> str:
    return "; ".join(f"{lay.name} ({', '.join(lay.shapes)})" for lay in LAYOUTS)


def _describe(tensors: Tensors) -> str:
    return ", ".join(f"{k} {list(v.shape)}" for k, v in sorted(tensors.items())) or "no tensors"


def match_layout(tensors: Tensors, path: Path) -> Layout:
    keys = set(tensors)
    for lay in LAYOUTS:
        if keys == set(lay.shapes):
            return lay
    raise BadFile(
        f"{path} has an unknown checkpoint layout: found {_describe(tensors)}; known layouts: {_known()} "
        "(add one to LAYOUTS in kdsae_core/hub/layouts.py)."
    )


def _dims(lay: Layout, tensors: Tensors, path: Path) -> tuple[int, int]:
    dims: dict[str, int] = {}
    for key, sym in lay.shapes.items():  # the first tensor naming a dimension fixes it
        t = tensors[key]
        if t.dim() != len(sym):
            raise BadFile(
                f"{path}: {key} has shape {list(t.shape)}, the {lay.name} layout needs {len(sym)} "
                f"dimension(s) ({', '.join(sym)})."
            )
        for name, n in zip(sym, t.shape):
            dims.setdefault(name, int(n))
    for key, sym in lay.shapes.items():
        want = [dims[s] for s in sym]
        if list(tensors[key].shape) != want:
            raise BadFile(
                f"{path}: {key} has shape {list(tensors[key].shape)}, expected {want} "
                f"(d_in {dims['d_in']}, d_sae {dims['d_sae']} from the other tensors)."
            )
    return dims["d_in"], dims["d_sae"]


def _plain(v, depth: int = 0):
    """A JSON-safe copy of plain data (numbers, strings, lists, dicts), or None if it is not plain."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 and math.isfinite(float(v)) else None
    if depth < 4 and isinstance(v, (list, tuple)):
        return [_plain(x, depth + 1) for x in v]
    if depth < 4 and isinstance(v, dict):
        return {str(k): _plain(x, depth + 1) for k, x in v.items() if _plain(x, depth + 1) is not None or x is None}
    return None


def convert(obj: object, path: Path) -> PtCheckpoint:
    """Fold a loaded object into kdsae's parameters, checking its layout, shapes and values."""
    tensors, rest = _state_dict(obj, path)
    if not tensors:
        raise BadFile(
            f"{path} holds no tensors at the top level or under {', '.join(CONTAINERS)} (found keys: "
            f"{', '.join(map(str, rest)) or 'none'}); known layouts: {_known()}."
        )
    tensors = _strip(tensors)
    lay = match_layout(tensors, path)
    bad = [k for k, v in tensors.items() if not v.is_floating_point()]
    if bad:
        raise BadFile(f"{path}: {', '.join(bad)} is not a floating-point tensor ({tensors[bad[0]].dtype}).")
    d_in, d_sae = _dims(lay, tensors, path)
    folded = lay.fold({k: v.detach().to("cpu", torch.float64) for k, v in tensors.items()})
    out = {k: folded[k].to(torch.float32).contiguous() for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if not all(bool(torch.isfinite(t).all()) for t in out.values()):
        raise BadFile(f"{path} holds NaN or infinite weights.")
    extra = {k: _plain(v) for k, v in rest.items() if k not in ("optimizer_state", "optimizer")}
    return PtCheckpoint(out, d_in, d_sae, lay.name, {k: v for k, v in extra.items() if v is not None})


def load_pt(path: Path) -> PtCheckpoint:
    """Read and convert one `.pt` checkpoint; every problem is a BadFile naming the file."""
    return convert(read_pt(path), Path(path))
