"""The first thing to run on a GPU machine (issue 20): does the paper-scale path work here, and does the plan hold?

Checks the torch build (CUDA, nccl) and the free disk against the paper run's disk plan; builds Pythia-410M's
shape offline (random weights; `--model` a hub id or folder for real weights), runs one forward pass of the
training batch through all 24 layers and compares its measured peak memory with the memory plan's count (and
checks no module kept an attention pattern); trains one layer's SAE at 1,024 x 32,768 for 20 steps in bf16 and in
fp32 (step times, tokens/s, fraction of the bf16 matrix-product rate, planned against measured peak) and measures
it. Writes one JSON.

    python benchmarks/gpu_smoke.py --out gpu_smoke.json                       # on the GPU machine
    python benchmarks/gpu_smoke.py --device cpu --tiny --out FILE              # the same code in seconds (tests)

`--tiny`: a 24-layer random Pythia of the pythia-14m width (d_model 128), 2 x 1,024 tokens per forward pass, an
SAE of 128 x 512 on 512 tokens. On the CPU the script re-executes itself with benchmarks.peak_memory's malloc
settings so the host's peak resident set measures what torch holds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import peak_memory
import torch
from random_pythia import random_pythia

from kdsae_core.common.fileio import atomic_write_json
from kdsae_core.data import activations as acts
from kdsae_core.measure import _Accumulator
from kdsae_core.sae import plan as sae_plan
from kdsae_core.sae.model import allow_tf32_on_cuda, paper_trials
from kdsae_core.sae.step import SAEUnit

P = sae_plan.PAPER
PYTHIA_410M = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
TINY = dict(shape=dict(num_hidden_layers=24), n_seq=2, context=1024, d_sae=512, batch_tokens=512, steps=20)
FULL = dict(
    shape=PYTHIA_410M,
    n_seq=P["batch_tokens"] // P["context"],
    context=P["context"],
    d_sae=P["d_sae"],
    batch_tokens=P["batch_tokens"],
    steps=20,
)


def environment(device: str, out: Path) -> dict:
    """The torch build, the collectives it has, and the free disk against the paper run's peak (one trial)."""
    import torch.distributed as dist

    disk = sae_plan.disk_plan(P["d_in"], P["d_sae"], P["layers"], 6)
    free = sae_plan.free_disk_bytes(out.parent)
    return {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "nccl": dist.is_available() and dist.is_nccl_available(),
        "gloo": dist.is_available() and dist.is_gloo_available(),
        "disk_free_bytes": free,
        "disk_paper_trial_peak_bytes": disk.peak_bytes,
        "disk_ok": free >= disk.peak_bytes,
    }


def build_model(folder: Path, model: str | None, shape: dict, device: str):
    if model is None:
        model = str(random_pythia(folder, **shape))
    return acts.load_model(model, device)


def forward_check(model, n_seq: int, context: int, device: str, autocast) -> dict:
    """One forward pass through every layer: measured peak against the plan, and no pattern kept after it."""
    layers = list(range(acts.model_layers(model)))
    source = acts.ActivationSource(model, layers, autocast)
    tokens = torch.randint(100, 1000, (n_seq, context))
    source(tokens)  # first call: one-time allocations (kernels, caches) out of the measurement
    with peak_memory.PeakMemory(device) as pm:
        x = source(tokens)
    planned = (
        sae_plan.model_forward_bytes(model, n_seq, context, len(layers))
        + len(layers) * n_seq * context * int(model.cfg.d_model) * 4
    )
    kept = [n for n, m in model.named_modules() for a in acts.BRIDGE_KEPT_TENSORS if getattr(m, a, None) is not None]
    return {
        "x": x[0],
        "planned_peak_bytes": planned,
        "measured_peak_bytes": pm.peak_bytes,
        "method": pm.method,
        "ratio": pm.peak_bytes / planned,
        "modules_keeping_a_pattern": kept,
    }


def matmul_rate(d_in: int, d_sae: int, batch: int, device: str, dtype) -> float:
    """FLOP/s of the encoder-shaped product in `dtype` (the ceiling a step's five products are held to)."""
    a = torch.randn(batch, d_in, device=device, dtype=dtype)
    b = torch.randn(d_in, d_sae, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    t0, n = time.perf_counter(), 5
    for _ in range(n):
        a @ b
    _sync(device)
    return 2.0 * batch * d_in * d_sae * n / (time.perf_counter() - t0)


def sae_check(x: torch.Tensor, d_sae: int, batch: int, steps: int, device: str, dtype: str) -> dict:
    """Train one SAE (trial A: the mean form, the one bf16 endangers) for `steps` steps, then measure it."""
    d_in = x.shape[1]
    x = x[torch.arange(batch) % x.shape[0]].to(device)
    compute = torch.bfloat16 if dtype == "bf16" else None
    plan = sae_plan.memory_plan(d_in, d_sae, batch, 1, 1, dtype)
    with peak_memory.PeakMemory(device) as pm:
        unit = SAEUnit(paper_trials()["A"], 0, d_in, d_sae, 0, 3e-4, 1.0, device, compute)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            unit.step(x)
            _sync(device)
            times.append(time.perf_counter() - t0)
    acc = _Accumulator(unit.sae, d_in, d_sae, device)
    acc.add(x)
    step_s = sorted(times[1:] or times)[len(times[1:] or times) // 2]
    rate = sae_plan.step_flops(d_in, d_sae, batch) / step_s
    return {
        "dtype": dtype,
        "step_s": times,
        "median_step_s": step_s,
        "tokens_per_s": batch / step_s,
        "fraction_of_bf16_matmul_rate": rate / matmul_rate(d_in, d_sae, batch, device, torch.bfloat16),
        "planned_peak_bytes": plan.total_bytes,
        "measured_peak_bytes": pm.peak_bytes,
        "measured_mse": float(acc.sse) / (acc.n * d_in),
        "finite": bool(torch.isfinite(acc.sse)),
    }


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny shapes: the same code in seconds")
    p.add_argument("--model", help="hub id or model folder for real weights (default: random weights, offline)")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = p.parse_args(argv)
    from kdsae_core.train.distributed import check_cuda

    check_cuda(args.device)
    if args.device.startswith("cuda"):
        allow_tf32_on_cuda()
    size = TINY if args.tiny else FULL
    result = {"device": args.device, "tiny": args.tiny, "environment": environment(args.device, args.out)}
    with tempfile.TemporaryDirectory(prefix="gpu_smoke-") as tmp:
        model = build_model(Path(tmp) / "model", args.model, size["shape"], args.device)
        autocast = torch.bfloat16 if args.device.startswith("cuda") else None
        fwd = forward_check(model, size["n_seq"], size["context"], args.device, autocast)
    x = fwd.pop("x").float()
    result["forward"] = fwd
    result["planned_peak_bytes"], result["measured_peak_bytes"] = fwd["planned_peak_bytes"], fwd["measured_peak_bytes"]
    result["sae"] = [
        sae_check(x, size["d_sae"], size["batch_tokens"], size["steps"], args.device, dtype)
        for dtype in ("bf16", "fp32")
    ]
    atomic_write_json(args.out, result)
    print(
        f"gpu_smoke: forward peak {fwd['measured_peak_bytes'] / 2**20:.1f} MiB measured, "
        f"{fwd['planned_peak_bytes'] / 2**20:.1f} MiB planned; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    if (
        not any(a.startswith("cuda") for a in sys.argv)
        and torch.cuda.is_available() is False
        and any(os.environ.get(k) != v for k, v in peak_memory.HOST_MALLOC_ENV.items())
    ):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **peak_memory.HOST_MALLOC_ENV})
    sys.exit(main())
