"""A hand-made Hugging Face cache, laid out as huggingface_hub itself writes one, and small SAE `.pt` files in
every layout kdsae reads. The real huggingface_hub code serves them with HF_HUB_OFFLINE=1.

    <cache>/models--ORG--NAME/refs/main           the commit id
    <cache>/models--ORG--NAME/blobs/<sha256>      file contents, named by their LFS etag
    <cache>/models--ORG--NAME/snapshots/<commit>/<file>  -> ../../blobs/<sha256> (or a plain copy)
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

D_IN, D_SAE = 128, 96  # d_in matches benchmarks.random_pythia (d_model 128)


def hf_cache(cache: Path, repo: str, files: dict[str, bytes], symlinks: bool = True, revision: str = "main") -> str:
    """Write `files` as one commit of `repo` into the cache; return the commit id."""
    folder = Path(cache) / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(b"".join(hashlib.sha256(d).digest() for _, d in sorted(files.items()))).hexdigest()
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / revision).write_text(commit)
    for name, data in files.items():
        target = folder / "snapshots" / commit / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if symlinks:
            blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            os.symlink(os.path.relpath(blob, target.parent), target)
        else:
            target.write_bytes(data)
    return commit


def cached_path(cache: Path, repo: str, name: str) -> Path:
    folder = Path(cache) / f"models--{repo.replace('/', '--')}"
    commit = (folder / "refs" / "main").read_text().strip()
    return folder / "snapshots" / commit / name


def authors_state(seed: int, d_in: int = D_IN, d_sae: int = D_SAE) -> dict[str, torch.Tensor]:
    """The authors' SparseAutoencoder state dict (b_pre, encoder, decoder; decoder columns at unit norm),
    scaled so that a fair share of latents fire on residual-stream-sized inputs."""
    g = torch.Generator().manual_seed(seed)
    dec = torch.randn(d_in, d_sae, generator=g)
    dec /= dec.norm(dim=0, keepdim=True)
    return {
        "b_pre": 0.1 * torch.randn(d_in, generator=g),
        "encoder.weight": dec.T.clone(),
        "encoder.bias": 0.05 * torch.randn(d_sae, generator=g),
        "decoder.weight": dec,
        "decoder.bias": 0.1 * torch.randn(d_in, generator=g),
    }


def authors_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z and x_hat as the authors compute them (float64): z = ReLU(E(x - b_pre)), x_hat = D z + b_pre."""
    s = {k: v.double() for k, v in state.items()}
    x = x.double()
    z = torch.relu((x - s["b_pre"]) @ s["encoder.weight"].T + s["encoder.bias"])
    return z, z @ s["decoder.weight"].T + s["decoder.bias"] + s["b_pre"]


def to_saelens(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same SAE under SAELens' names (the fold of b_pre, computed independently of kdsae_core)."""
    s = {k: v.double() for k, v in state.items()}
    return {
        "W_enc": s["encoder.weight"].T.float().contiguous(),
        "b_enc": (s["encoder.bias"] + s["encoder.weight"] @ s["decoder.bias"]).float(),
        "W_dec": s["decoder.weight"].T.float().contiguous(),
        "b_dec": (s["decoder.bias"] + s["b_pre"]).float(),
    }


def pt_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def authors_file(seed: int, layer: int, tokens: int, **kw) -> bytes:
    """A file as the authors' script saves it: model_state, optimizer_state, config and stats."""
    state = authors_state(seed, **kw)
    return pt_bytes(
        {
            "model_state": state,
            "optimizer_state": {"state": {}, "param_groups": [{"lr": 3e-4}]},
            "config": {
                "d_model": state["b_pre"].shape[0],
                "d_sae": state["encoder.bias"].shape[0],
                "l1_coeff": 8e-5,
                "target_layer": layer,
                "tokens_seen": tokens,
                "model_name": "EleutherAI/pythia-410m",
            },
            "stats": [
                {
                    "batch": b,
                    "tokens_M": (b + 1) * 0.032768,
                    "recon_loss": 0.1 / (b + 1),
                    "l1_loss": 1.0,
                    "L0": 40.0 - b,
                    "alive": 90,
                    "frac_alive": 0.9,
                }
                for b in range(3)
            ],
        }
    )


def tiny_run(out: Path, model_folder: Path, model=None, measure: bool = True, trials=("B", "C")) -> Path:
    """Train (and measure) the smallest real run: random Pythia-shaped model, one layer, d_sae 32."""
    from kdsae_core.measure import measure_run
    from kdsae_core.train.trainer import SAETrainConfig, Trainer

    cfg = SAETrainConfig.from_profile(
        "embedded",
        model=str(model_folder),
        layers=[1],
        trials=list(trials),
        d_sae=32,
        tokens=1024,
        batch_tokens=256,
        context=64,
        n_snapshots=2,
        measure_tokens=1024,
    )
    Trainer(cfg, out, progress=False, model=model).run()
    if measure:
        measure_run(out, progress=False, model=model)
    return out
