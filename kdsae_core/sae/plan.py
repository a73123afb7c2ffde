"""What an SAE run costs: FLOPs, memory traffic and memory per SAE, how many SAEs fit, and the paper-scale
projection of book/performance.md.

Everything here is arithmetic on the shapes (book/methods.md) and on rates passed in: measured ones from
benchmarks/results/*.json, or stated assumptions for hardware this project cannot run on (an H100). What only the
performance page shows (the paper-scale goal, the authors' baseline, the CPU check) is benchmarks/gpu_projection.py. The
counts follow kdsae_core.sae.step.fused_backward and SAEUnit.step; benchmarks/sae_step.py checks the CPU side.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from kdsae_core.sae import sparse as sae_sparse

GB = 1e9
GiB = 2**30
BYTES = {"fp32": 4, "bf16": 2}
SPARSE_PAIR_BYTES = 64  # one active (token, latent) pair in the sparse step, its index copies and temporaries


# ---- counts ---------------------------------------------------------------------------------------------
def sae_params(d_in: int, d_sae: int) -> int:
    return 2 * d_in * d_sae + d_sae + d_in


def step_flops(d_in: int, d_sae: int, batch_tokens: int) -> float:
    """The five products of a step: 10 d_in d_sae FLOPs per token (no input gradient)."""
    return 10.0 * d_in * d_sae * batch_tokens


def step_traffic_bytes(d_in: int, d_sae: int, batch_tokens: int, compute: str = "fp32", device: str = "cpu") -> dict:
    """Bytes read + written by the step's work outside the matrix products (fused_backward + SAEUnit.step).

    [B, d_sae] tensors (N = B d_sae elements, compute dtype): on the CPU, the encoder's bias fill (w) and ReLU
    (r+w), the per-latent sums (r), the latent gradient's bias fill (w), the in-place mask (2r+w), the in-place L0
    count (r+w, r): 11 N; on CUDA the encoder's bias and ReLU and the latent gradient's bias run in the products'
    epilogues: 7 N. Parameters (P, fp32): fused Adam reads weight, gradient and both moments and writes weight,
    moments and the unscaled gradient (8 P), the gradient norm (P), the decoder renormalisation (2 P_dec on the
    CPU, read once; 3 P_dec elsewhere); with bf16 compute also the casts of the weights (1.5 P) and of the
    weight gradients (1.5 P)."""
    cb, N, P = BYTES[compute], batch_tokens * d_sae, sae_params(d_in, d_sae)
    act = (11 if device == "cpu" else 7) * N * cb
    par = (8 + 1) * P * 4 + (2 if device == "cpu" else 3) * d_in * d_sae * 4
    if compute != "fp32":
        par += 3 * P * 4
    small = 8 * batch_tokens * (d_in + 1) * cb  # [B, d_in] work: centring, error, its gradient, sums
    return {"activations": act, "parameters": par, "small": small, "total": act + par + small}


# ---- memory -------------------------------------------------------------------------------------------------
@dataclass
class MemoryPlan:
    d_in: int
    d_sae: int
    batch_tokens: int
    compute: str
    n_saes: int
    n_layers: int
    per_sae_bytes: int  # weights + gradients + Adam moments (fp32), kept for the whole run
    workspace_bytes: int  # one step's temporaries, shared: the SAEs step one after another
    activations_bytes: int  # the captured residual streams of one batch, every layer (fp32)
    forward_bytes: int  # the language model's forward pass's own scratch (forward_scratch_bytes)
    model_bytes: int  # the language model (weights), if given
    budget_bytes: int | None
    total_bytes: int
    saes_that_fit: int | None  # in budget_bytes, with the workspace, activations and model

    def to_json(self) -> dict:
        return asdict(self)


def forward_scratch_bytes(n_seq: int, context: int, n_heads: int, d_model: int, d_mlp: int, n_layers: int) -> int:
    """Peak scratch of one forward pass of a Pythia-shaped model through `n_layers` blocks, besides the captured
    activations (activations_bytes) and the weights. Measured on the CPU (fp32, transformer-lens 4.3's bridge,
    kept attention patterns dropped: activations.BRIDGE_KEPT_TENSORS) and fitted exactly by: one layer's
    attention scores and softmax output [n_seq, heads, ctx, ctx] plus the float causal mask [n_seq, 1, ctx, ctx];
    the MLP's hidden layer before and after its activation [tokens, d_mlp]; and two [tokens, d_model] tensors per
    block run, alive until the pass ends. All fp32 (under CUDA autocast the softmax is fp32 too, so the count
    is an upper bound there; benchmarks/gpu_smoke.py compares it with a GPU's measured peak)."""
    tokens = n_seq * context
    attention = (2 * n_heads + 1) * n_seq * context * context * 4
    return attention + 2 * tokens * d_mlp * 4 + 2 * n_layers * tokens * d_model * 4


def model_forward_bytes(model, n_seq: int, context: int, n_layers: int) -> int:
    """forward_scratch_bytes for a loaded TransformerBridge's shape."""
    c = model.cfg
    return forward_scratch_bytes(n_seq, context, int(c.n_heads), int(c.d_model), int(c.d_mlp), n_layers)


def memory_plan(
    d_in: int,
    d_sae: int,
    batch_tokens: int,
    n_saes: int,
    n_layers: int,
    compute: str = "fp32",
    model_bytes: int = 0,
    budget_bytes: int | None = None,
    forward_bytes: int = 0,
) -> MemoryPlan:
    """Memory of a run that trains `n_saes` SAEs fed from `n_layers` captured layers (trials x layers SAEs).

    Per SAE: 4 fp32 copies of its parameters (weights, gradients, Adam's two moments): 16 bytes a parameter,
    1.07 GB at 1024 x 32768. Workspace (one step at a time): the activations z and the latent gradient
    [B, d_sae] in the compute dtype, with bf16 compute also the bf16 weights and the bf16 weight gradient before
    it is copied into the fp32 buffer, with fp32 the sparse step's transposed W_enc gradient and its active pairs
    beyond the latent gradient's room (at the highest crossover `auto` goes sparse below on the CPU; a step forced
    sparse at a higher density takes more), and the [B, d_in] temporaries."""
    cb = BYTES[compute]
    P = sae_params(d_in, d_sae)
    per_sae = 16 * P
    work = 2 * batch_tokens * d_sae * cb + 6 * batch_tokens * (d_in + 1) * cb
    if compute != "fp32":
        work += P * cb + (d_in + 8) * d_sae * cb
    else:
        # the sparse step (fp32 only) makes the W_enc gradient transposed before copying it into its buffer; its
        # active pairs (about SPARSE_PAIR_BYTES each with their indices and the conversion's temporaries, fewer
        # than the highest measured crossover x B d_sae of them under `auto`) replace the [B, d_sae] latent
        # gradient it does not need, and may take more room than it
        work += (d_in + 8) * d_sae * cb
        pairs = SPARSE_PAIR_BYTES * max(sae_sparse.CPU_CROSSOVERS.values()) * batch_tokens * d_sae
        work += max(0, math.ceil(pairs) - batch_tokens * d_sae * cb)
    activations = n_layers * batch_tokens * d_in * 4
    shared = work + activations + forward_bytes + model_bytes
    total = n_saes * per_sae + shared
    fit = None
    if budget_bytes is not None:
        fit = max(0, math.floor((budget_bytes - shared) / per_sae))
    return MemoryPlan(
        d_in,
        d_sae,
        batch_tokens,
        compute,
        n_saes,
        n_layers,
        per_sae,
        work,
        activations,
        forward_bytes,
        model_bytes,
        budget_bytes,
        total,
        fit,
    )


# ---- measurement ------------------------------------------------------------------------------------------------
@dataclass
class MeasurePlan:
    batch_tokens: int  # tokens per forward pass
    per_sae_bytes: int  # an SAE's fp32 weights and its measurement sums, on the device for its group's pass
    shared_bytes: int  # one batch's work (z, reconstruction, float64 blocks), activations and forward scratch
    saes_per_group: int  # SAEs measured together in one pass over the measurement tokens

    def to_json(self) -> dict:
        return asdict(self)


def measure_plan(
    d_in: int,
    d_sae: int,
    batch_tokens: int,
    context: int,
    n_layers: int,
    budget_bytes: int | None,
    forward_bytes_of=lambda n_seq: 0,
    fp64_block_bytes: int = 1 << 26,
) -> MeasurePlan:
    """How `kdsae measure` fits a device: the batch halved (whole sequences) until one SAE fits beside one batch's
    work, then as many SAEs per group as the rest holds (every group is one more pass of the language model over
    the measurement tokens). No budget: one group, the batch as given.
    `forward_bytes_of(n_seq)`: the language model's forward scratch for n_seq sequences (model_forward_bytes)."""
    per_sae = 4 * sae_params(d_in, d_sae) + 3 * 8 * d_sae + 2 * 8 * d_in

    def shared(batch: int) -> int:
        work = batch * d_sae * 4 + 3 * batch * d_in * 4 + min(fp64_block_bytes, batch * d_sae * 8)  # z; x, x_hat,
        # error; one float64 block (measure._sum_sq64)
        return work + n_layers * batch * d_in * 4 + forward_bytes_of(batch // context)

    batch = max(context, batch_tokens // context * context)
    if budget_bytes is None:
        return MeasurePlan(batch, per_sae, shared(batch), 1 << 62)
    while batch > context and shared(batch) + per_sae > budget_bytes:
        batch = max(context, batch // 2 // context * context)
    return MeasurePlan(batch, per_sae, shared(batch), max(0, (budget_bytes - shared(batch)) // per_sae))


# ---- disk -------------------------------------------------------------------------------------------------------
STATE_GENERATIONS = 2  # the newest resumable state and the one being written (train_state.prune_before_write)


@dataclass
class DiskPlan:
    n_saes: int
    snapshot_bytes: int  # one SAE's checkpoint (fp32 weights; checkpoints.save_checkpoint)
    state_bytes: int  # one SAE's resumable state (weights, Adam moments, firing record; SAEUnit.state)
    n_snapshots: int
    peak_bytes: int  # every snapshot plus STATE_GENERATIONS state generations, at the run's last snapshot

    def to_json(self) -> dict:
        return asdict(self)


def disk_plan(d_in: int, d_sae: int, n_saes: int, n_snapshots: int) -> DiskPlan:
    """Disk a run folder needs at its peak (the metrics log and measurements are small beside these)."""
    P = sae_params(d_in, d_sae)
    snapshot = 4 * P
    state = 12 * P + 8 * d_sae  # + the int64 step each latent last fired
    peak = n_saes * (n_snapshots * snapshot + STATE_GENERATIONS * state)
    return DiskPlan(n_saes, snapshot, state, n_snapshots, peak)


def free_disk_bytes(folder: Path) -> int:
    """Free bytes on the file system that holds `folder` (or would: its nearest existing parent)."""
    folder = Path(folder).resolve()
    while not folder.exists():
        folder = folder.parent
    return int(shutil.disk_usage(folder).free)


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (0 if it does not exist): a resumed run's share of its peak."""
    folder = Path(folder)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def available_memory_bytes(device: str) -> int | None:
    """Memory free for the run on `device` now: a CUDA device's free memory, or the host's MemAvailable
    (Linux); None where it cannot be read."""
    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cuda_unavailable(device: str) -> str | None:
    """Why `device` (cuda...) cannot be used here, telling a CPU-only build of torch (the one requirements.txt
    pins; `make cuda-env` installs the CUDA build) from a CUDA build that sees no device; None if it can."""
    if not device.startswith("cuda") or torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return (
            f"--device {device} was asked for, but this torch ({torch.__version__}) is a CPU-only build: on a GPU "
            "machine run `make cuda-env` (the CUDA build of the same torch; README, GPU environment), or use "
            "--device cpu."
        )
    return (
        f"--device {device} was asked for, but torch {torch.__version__} (CUDA {torch.version.cuda}) finds no CUDA "
        "device here (check the driver with nvidia-smi, and CUDA_VISIBLE_DEVICES); or use --device cpu."
    )


def format_memory_plan(plan: MemoryPlan) -> str:
    """The memory plan as the lines a run prints before it starts."""
    lines = [
        f"memory plan: {plan.n_saes} SAEs of {plan.d_in} x {plan.d_sae}, batch {plan.batch_tokens} tokens, "
        f"{plan.compute} compute",
        f"  per SAE (weights, gradients, Adam moments; fp32): {plan.per_sae_bytes / GB:.3g} GB "
        f"x {plan.n_saes} = {plan.n_saes * plan.per_sae_bytes / GB:.3g} GB",
        f"  step workspace (shared): {plan.workspace_bytes / GB:.3g} GB",
        f"  captured activations ({plan.n_layers} layers, fp32): {plan.activations_bytes / GB:.3g} GB",
    ]
    if plan.forward_bytes:
        lines.append(f"  language model's forward pass (scratch): {plan.forward_bytes / GB:.3g} GB")
    if plan.model_bytes:
        lines.append(f"  language model: {plan.model_bytes / GB:.3g} GB")
    lines.append(f"  total: {plan.total_bytes / GB:.3g} GB")
    if plan.budget_bytes is not None:
        verdict = "fits" if plan.total_bytes <= plan.budget_bytes else "DOES NOT fit"
        lines.append(f"  budget {plan.budget_bytes / GB:.3g} GB: {verdict}; at most {plan.saes_that_fit} such SAEs fit")
    return "\n".join(lines)


# ---- the paper-scale projection ----------------------------------------------------------------------------
PAPER = dict(
    d_in=1024,
    d_sae=32_768,
    layers=24,
    tokens=300_000_000,
    batch_tokens=32_768,
    lm_flops_per_token=0.8e9,
    trials=3,
    context=1024,
    n_heads=16,
    d_mlp=4096,
)
# Assumptions for one H100 SXM (80 GB), none of them measured here: dense bf16 matrix products at these shapes
# well below the 989 TFLOP/s peak, a realistic fraction of the 3.35 TB/s HBM bandwidth, the LM forward pass
# (Pythia-410M, bf16 autocast, context 1024) at a lower rate than the large SAE products, NVLink for routing.
H100 = dict(
    name="H100 SXM 80 GB",
    memory_bytes=80 * GB,
    gemm_flops=600e12,
    bandwidth=2.8e12,
    lm_flops=300e12,
    link_bytes_per_s=300e9,
)


def paper_flops(p: dict = PAPER) -> dict:
    sae = p["layers"] * p["tokens"] * 10.0 * p["d_in"] * p["d_sae"]
    lm = p["tokens"] * p["lm_flops_per_token"]
    return {"sae_per_trial": sae, "lm_forward_one_pass": lm, "sae_per_layer": sae / p["layers"]}


def projection(gpu: dict = H100, p: dict = PAPER, n_gpus: int = 1, trials: int = 1, compute: str = "bf16") -> dict:
    """Wall time and memory of `trials` trials x all layers on `n_gpus` GPUs, all SAEs fed from one forward pass
    per batch (torchrun: layers sharded over the GPUs, the forward pass data-parallel, activations routed to the
    GPU that owns the layer: kdsae_core.train.distributed)."""
    d_in, d_sae, B = p["d_in"], p["d_sae"], p["batch_tokens"]
    steps = math.ceil(p["tokens"] / B)
    gemm_s = step_flops(d_in, d_sae, B) / gpu["gemm_flops"]
    traffic = step_traffic_bytes(d_in, d_sae, B, compute, "cuda")["total"]
    unit_s = gemm_s + traffic / gpu["bandwidth"]
    saes_per_gpu = trials * math.ceil(p["layers"] / n_gpus)
    lm_s = B * p["lm_flops_per_token"] / gpu["lm_flops"] / n_gpus
    # each GPU sends the activations of its share of the tokens for the layers other GPUs own (fp32)
    route_s = (
        0.0 if n_gpus == 1 else p["layers"] * B * d_in * 4 * (n_gpus - 1) / n_gpus / n_gpus / gpu["link_bytes_per_s"]
    )
    step_s = saes_per_gpu * unit_s + lm_s + route_s
    wall = steps * step_s
    n_seq = B // p["context"] // n_gpus  # each GPU runs its share of the batch's sequences
    forward = forward_scratch_bytes(n_seq, p["context"], p["n_heads"], d_in, p["d_mlp"], p["layers"])
    mem = memory_plan(
        d_in,
        d_sae,
        B,
        saes_per_gpu,
        p["layers"],
        compute,
        model_bytes=int(405e6 * 4),
        budget_bytes=int(gpu["memory_bytes"]),
        forward_bytes=forward,
    )
    sae_flops = trials * paper_flops(p)["sae_per_trial"]
    return {
        "gpu": gpu["name"],
        "n_gpus": n_gpus,
        "trials": trials,
        "steps": steps,
        "gemm_s_per_sae_step": gemm_s,
        "traffic_bytes_per_sae_step": traffic,
        "sae_step_s": unit_s,
        "effective_sae_flops": step_flops(d_in, d_sae, B) / unit_s,
        "saes_per_gpu": saes_per_gpu,
        "lm_forward_s_per_step": lm_s,
        "route_s_per_step": route_s,
        "step_s": step_s,
        "wall_s": wall,
        "wall_h": wall / 3600,
        "memory_per_gpu": mem.to_json(),
        "fits": mem.total_bytes <= gpu["memory_bytes"],
        "sae_flops": sae_flops,
    }


def paper_run_needs(n_gpus: int = 1, trials: int = 3, gpu: dict = H100, p: dict = PAPER, snapshots: int = 6) -> dict:
    """What `kdsae train --profile paper` needs, from the shapes: GPU memory per GPU and hours (the projection above,
    on `gpu`'s assumed rates), and disk: `snapshots` fp32 checkpoints of every SAE, plus the resumable state (fp32
    weights and Adam's two moments of every SAE, STATE_GENERATIONS generations)."""
    proj = projection(gpu, p, n_gpus=n_gpus, trials=trials)
    n_saes, P = trials * p["layers"], sae_params(p["d_in"], p["d_sae"])
    return {
        "n_gpus": n_gpus,
        "trials": trials,
        "gpu": gpu["name"],
        "hours": proj["wall_h"],
        "gpu_memory_bytes": proj["memory_per_gpu"]["total_bytes"],
        "fits": proj["fits"],
        "checkpoint_bytes": n_saes * snapshots * P * 4,
        "state_bytes": STATE_GENERATIONS * n_saes * P * 12,
    }
