"""The performance page's paper-scale arithmetic beyond what `kdsae train` needs (benchmarks/report.py writes it):
the SAE-step rate one trial in two hours needs, the authors' one-layer-at-a-time baseline, the CPU check of the
step's cost model and the sparse step's projection between its two bounds. The shapes, the H100's assumed rates
and the dense projection (which `kdsae train --profile paper`'s needs use) are kdsae_core.sae.plan's.

Imported as `benchmarks.gpu_projection` (tests) or `gpu_projection` (benchmark scripts run from this folder).
"""

from __future__ import annotations

from kdsae_core.sae.plan import BYTES, H100, PAPER, paper_flops, projection, step_traffic_bytes

AUTHORS_MINUTES_PER_LAYER = 35  # the authors, one layer at a time on one H100


def required_sae_rate(hours: float = 2.0, gpu: dict = H100, p: dict = PAPER) -> dict:
    """The sustained SAE-step rate (10 d_in d_sae FLOPs per token) that one trial on one GPU needs to finish in
    `hours`: without the LM forward pass, and with it at the assumed LM rate."""
    f = paper_flops(p)
    budget = hours * 3600
    lm_s = f["lm_forward_one_pass"] / gpu["lm_flops"]
    return {
        "hours": hours,
        "without_lm": f["sae_per_trial"] / budget,
        "lm_forward_s": lm_s,
        "with_lm": f["sae_per_trial"] / (budget - lm_s),
    }


def cpu_model_check(d_in: int, d_sae: int, batch_tokens: int, matmul_s: float, bandwidth: float) -> dict:
    """The same cost model on this CPU: measured products + counted traffic / measured copy bandwidth, to be set
    next to the measured step time (benchmarks/sae_step.py)."""
    t = step_traffic_bytes(d_in, d_sae, batch_tokens, "fp32", "cpu")
    return {
        "matmul_s": matmul_s,
        "traffic_bytes": t["total"],
        "traffic_s": t["total"] / bandwidth,
        "predicted_step_s": matmul_s + t["total"] / bandwidth,
        "predicted_fraction": matmul_s / (matmul_s + t["total"] / bandwidth),
    }


def sparse_projection(density: float, gpu: dict = H100, p: dict = PAPER, compute: str = "bf16") -> dict:
    """One trial (all layers, one forward pass per batch) on one GPU with the sparse step at `density` of the
    (token, latent) pairs active, next to the dense step of `projection`.

    The encoder product runs at the GPU's product rate; the step's other work is the dense step's counted traffic;
    the four products over the active pairs are taken as memory-bound gathers between two bounds: `upper`, every
    active pair reading one d_in row from memory in each of the four products (no cache reuse), and `lower`, the
    products costing nothing beyond that traffic (perfect reuse)."""
    d_in, d_sae, B = p["d_in"], p["d_sae"], p["batch_tokens"]
    dense = projection(gpu, p, n_gpus=1, trials=1, compute=compute)
    encoder_s = 2.0 * d_in * d_sae * B / gpu["gemm_flops"]
    other_s = step_traffic_bytes(d_in, d_sae, B, compute, "cuda")["total"] / gpu["bandwidth"]
    gathers_s = 4 * density * B * d_sae * d_in * BYTES[compute] / gpu["bandwidth"]
    out = {"density": density, "dense_sae_step_s": dense["sae_step_s"], "dense_wall_h": dense["wall_h"]}
    for bound, unit_s in (("lower", encoder_s + other_s), ("upper", encoder_s + other_s + gathers_s)):
        step_s = p["layers"] * unit_s + dense["lm_forward_s_per_step"]
        out[bound] = {
            "sae_step_s": unit_s,
            "speedup": dense["sae_step_s"] / unit_s,
            "wall_h": dense["steps"] * step_s / 3600,
        }
    return out
