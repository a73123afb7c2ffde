"""Benchmark: one SAE training step (fp32, CPU) next to the matrix-multiply rate of the same shapes.

For (d_in, d_sae) in {(384, 2048), (384, 12288), (1024, 32768)} and a batch of 4,096 tokens, in one process and
with one thread count, it times in alternating rounds:
- `matmul`: the five matrix products of a step alone (encoder, decoder, W_dec gradient, latent gradient,
  W_enc gradient; the operand layouts of the step, outputs preallocated): the ceiling, 10 d_in d_sae FLOPs per
  token;
- `kdsae`: `SAEUnit.step` (hand-written exact backward, clipping folded into fused Adam, blocked decoder
  renormalisation; kdsae_core/sae/step.py);
- `previous`: the step as first committed (6d4dec3: count_nonzero per latent, separate clip pass, new gradient
  tensors every step, two-pass renormalisation), frozen here for before/after numbers;
- `plain`: what one writes in plain PyTorch: autograd through `sae_loss`, clip_grad_norm_, torch.optim.Adam with
  its defaults, decoder renormalisation;
- with --compile, `compiled`: the same step with the gradient computation under torch.compile (inductor).
Every variant trains its own copy of the same SAE on the same batches. Reported per variant: tokens/s per
layer (one SAE) and the fraction of the matmul rate, taken per round (matmul time / step time of the same
round) and then the median over rounds. Goals: >= 0.90 at the paper shape, >= 0.70 at the embedded shapes.

    .venv/bin/python benchmarks/sae_step.py [--rounds 5] [--shapes 384x2048,384x12288,1024x32768] [--compile]

Writes benchmarks/results/sae_step.json and .md. Re-executes itself with MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=68719476736 (the Makefile's settings) unless --no-malloc-env.

The density axis (issue 19), `--densities 0.002,0.005,...` (default shapes 384x2048, 384x12288 and 1024x32768): at each
density, in alternating rounds, `before` (SAEUnit.step as of BEFORE_COMMIT, read from git: today's dense step
before the sparse path existed), `dense` and `sparse` (SAEUnit.step with the path fixed), after the five
products alone timed in the same run (the matmul rate). The density is set by the encoder bias: every latent's
b_enc is minus the (1 - density) quantile of its pre-activation over 8,192 tokens drawn like the batches, so each
latent fires on about that fraction of the tokens of any batch (the measured density, L0 / d_sae of the last
step, is reported next to the target, with the first step's). All variants train at DENSITY_LR (1e-9) there, so
the weights, and with them the density, stay where the bias set them. FLOPs per token: 10 d_in d_sae dense,
2 d_in d_sae (1 + 4 density) sparse. From the speed-up curve: the crossover density per shape and batch
(log-interpolated where sparse stops being faster), the one kdsae_core.sae.sparse.CPU_CROSSOVERS must declare per
shape (the lowest over batches, rounded down), whether the automatic choice
is ever more than 3% slower than `before`, and the equivalence of 100 sparse and dense steps from the same
weights on the same batches. Writes benchmarks/results/sae_step_density.json and .md.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
from pathlib import Path

import _bench
import torch
from report import sparse_step_table

from kdsae_core.common.adam import ADAM_BETAS, ADAM_EPS
from kdsae_core.sae import sparse as sae_sparse
from kdsae_core.sae.model import PARAM_NAMES, SAE, TrialSpec, sae_loss
from kdsae_core.sae.step import SAEUnit, StepStats

SHAPES = ((384, 2048), (384, 12288), (1024, 32768))
PAPER_SHAPE = (1024, 32768)
GOALS = {PAPER_SHAPE: 0.90}  # every other shape: 0.70
GOAL_OTHER = 0.70
TRIAL = TrialSpec("B", 8e-5, "sum")  # the paper's trial B (fixed lambda, sum form)
LR, CLIP = 3e-4, 1.0
# On the density axis every variant trains with this learning rate instead: at LR the weights move enough in the
# hundreds of steps a point takes to carry the density far from where the encoder bias set it (a target of 7.2%
# at 384 x 2048 reached 12% after 50 steps, 18% after 200); at 1e-9 it stays put. A step's arithmetic does not
# depend on the learning rate, so the timings are those of training at that density.
DENSITY_LR = 1e-9
CALIBRATION_TOKENS = 8192  # tokens the encoder bias is set on (a batch of 128 cannot resolve a density below 1/128)


def flops_per_token(d_in: int, d_sae: int) -> int:
    return 10 * d_in * d_sae


# ---- the variants ---------------------------------------------------------------------------------------
class Matmuls:
    """The five products of a step, with the step's shapes and operand layouts, into preallocated outputs."""

    def __init__(self, d_in, d_sae, B, g):
        self.xc = torch.randn(B, d_in, generator=g)
        self.W_enc = torch.randn(d_in, d_sae, generator=g) / d_in**0.5
        self.W_dec = torch.randn(d_sae, d_in, generator=g) / d_in**0.5
        self.z = torch.randn(B, d_sae, generator=g).relu_()
        self.g_err = torch.randn(B, d_in, generator=g)
        self.out_z = torch.empty(B, d_sae)
        self.out_x = torch.empty(B, d_in)
        self.out_dec = torch.empty(d_sae, d_in)
        self.out_enc = torch.empty(d_in, d_sae)

    def __call__(self):
        torch.mm(self.xc, self.W_enc, out=self.out_z)  # encoder
        torch.mm(self.z, self.W_dec, out=self.out_x)  # decoder
        torch.mm(self.z.T, self.g_err, out=self.out_dec)  # W_dec gradient
        torch.mm(self.g_err, self.W_dec.T, out=self.out_z)  # latent gradient
        torch.mm(self.xc.T, self.z, out=self.out_enc)  # W_enc gradient


class Batches:
    def __init__(self, d_in, B, n, g):
        # Activations with a mean, correlated directions and heavy-ish tails, like a residual stream.
        self.mix = torch.randn(d_in, d_in, generator=g) / d_in**0.5
        self.xs = [torch.randn(B, d_in, generator=g) @ self.mix + 0.3 for _ in range(n)]
        self.i = 0

    def calibration(self, n: int = CALIBRATION_TOKENS) -> torch.Tensor:
        """n more tokens drawn like the batches (own generator: the batches stay those of a run without it)."""
        g = torch.Generator().manual_seed(12345)
        return torch.randn(n, self.mix.shape[0], generator=g) @ self.mix + 0.3

    def next(self) -> torch.Tensor:
        self.i = (self.i + 1) % len(self.xs)
        return self.xs[self.i]


class KdsaeStep:
    def __init__(self, d_in, d_sae, batches):
        self.unit = SAEUnit(TRIAL, 0, d_in, d_sae, seed=0, lr=LR, grad_clip=CLIP)
        self.batches = batches

    def __call__(self):
        return self.unit.step(self.batches.next())


class PlainStep:
    def __init__(self, d_in, d_sae, batches):
        self.sae = SAE.initialised(d_in, d_sae, seed=0)
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=LR, betas=ADAM_BETAS, eps=ADAM_EPS)
        self.batches = batches

    def __call__(self):
        self.opt.zero_grad()
        loss, mse, l1 = sae_loss(self.sae, self.batches.next(), TRIAL.l1_coeff, TRIAL.l1_form)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.sae.parameters(), CLIP)
        self.opt.step()
        with torch.no_grad():
            self.sae.W_dec.div_(self.sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))
        return loss


@torch.no_grad()
def previous_fused_backward(sae: SAE, x: torch.Tensor, lam, form: str) -> StepStats:
    """fused_backward (then in kdsae_core/sae.py) as of commit 6d4dec3 (fp32 path), kept for before/after numbers."""
    B = x.shape[0]
    W_enc, b_enc, W_dec, b_dec = sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec
    xc = x - b_dec
    z = torch.addmm(b_enc, xc, W_enc).relu_()
    err = torch.addmm(b_dec, z, W_dec).sub_(x)
    counts = torch.count_nonzero(z, dim=0)
    mse = err.square().mean()
    l1 = z.sum() / B
    if form == "mean":
        l1 = l1 / sae.d_sae
    lam_t = torch.as_tensor(lam, dtype=torch.float32)
    per_token = lam_t / (B if form == "sum" else B * sae.d_sae)
    g_err = err.mul_(2.0 / (B * sae.d_in))
    sae.W_dec.grad = z.T @ g_err
    g_dec_bias = g_err.sum(0)
    g_pre = torch.ops.aten.threshold_backward(torch.addmm(per_token.expand(sae.d_sae), g_err, W_dec.T), z, 0)
    sae.W_enc.grad = xc.T @ g_pre
    g_enc_bias = g_pre.sum(0)
    sae.b_enc.grad = g_enc_bias
    sae.b_dec.grad = g_dec_bias - W_enc @ g_enc_bias
    l0 = counts.sum().float() / B
    return StepStats(mse=mse, l1=l1, loss=mse + lam_t * l1, l0=l0, fired=counts > 0)


class PreviousStep:
    def __init__(self, d_in, d_sae, batches):
        self.sae = SAE.initialised(d_in, d_sae, seed=0)
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=LR, betas=ADAM_BETAS, eps=ADAM_EPS, fused=True)
        self.last_fired = torch.full((d_sae,), -1, dtype=torch.int64)
        self.steps = 0
        self.batches = batches

    def __call__(self):
        s = previous_fused_backward(
            self.sae, self.batches.next(), torch.tensor(TRIAL.l1_coeff, dtype=torch.float64), TRIAL.l1_form
        )
        torch.nn.utils.clip_grad_norm_(self.sae.parameters(), CLIP, foreach=True)
        self.opt.step()
        with torch.no_grad():
            self.sae.W_dec.div_(torch.linalg.vector_norm(self.sae.W_dec, dim=1, keepdim=True).clamp_min(1e-12))
        self.last_fired[s.fired] = self.steps
        self.steps += 1
        return s


def _compiled_grads(x, W_enc, b_enc, W_dec, b_dec, per_token):
    """The exact gradient as one pure function, for torch.compile to fuse the elementwise work around the
    products."""
    B, d_in = x.shape
    xc = x - b_dec
    z = torch.relu(torch.addmm(b_enc, xc, W_enc))
    err = torch.addmm(b_dec, z, W_dec) - x
    g_err = err * (2.0 / (B * d_in))
    g_W_dec = z.T @ g_err
    pos = z > 0
    g_pre = torch.where(pos, g_err @ W_dec.T + per_token, 0.0)
    g_W_enc = xc.T @ g_pre
    g_b_enc = g_pre.sum(0)
    g_b_dec = g_err.sum(0) - W_enc @ g_b_enc
    counts = pos.sum(1, dtype=torch.int32)
    return g_W_enc, g_b_enc, g_W_dec, g_b_dec, err.square().mean(), z.sum() / B, counts.sum() / B, z.sum(0) > 0


class CompiledStep(KdsaeStep):
    def __init__(self, d_in, d_sae, batches):
        super().__init__(d_in, d_sae, batches)
        self.fn = torch.compile(_compiled_grads, dynamic=False)

    @torch.no_grad()
    def __call__(self):
        u, s = self.unit, self.unit.sae
        per_token = (u.controller.lam / self.batches.xs[0].shape[0]).float()
        gWe, gbe, gWd, gbd, mse, l1, l0, fired = self.fn(
            self.batches.next(), s.W_enc, s.b_enc, s.W_dec, s.b_dec, per_token
        )
        s.W_enc.grad, s.b_enc.grad, s.W_dec.grad, s.b_dec.grad = gWe, gbe, gWd, gbd
        u._clip_gradients()
        u.opt.step()
        s.normalize_decoder_()
        u.last_fired.masked_fill_(fired, u.steps)
        u.steps += 1
        return mse


VARIANTS = {
    "kdsae": (KdsaeStep, "kdsae SAEUnit.step"),
    "previous": (PreviousStep, "kdsae step as first committed (6d4dec3)"),
    "plain": (PlainStep, "plain PyTorch: autograd, clip_grad_norm_, torch.optim.Adam defaults"),
    "compiled": (CompiledStep, "kdsae step, gradient function under torch.compile (inductor)"),
}


# ---- the benchmark ----------------------------------------------------------------------------------------
PRODUCTS = {"aten::mm", "aten::addmm", "aten::_addmm_activation"}


def outside_products(step, samples: int = 3) -> dict:
    """Time a step spends outside the matrix products, from torch.profiler's self time per op (the fewest of
    `samples` steps): the work the speed changes remove, measured without the products' noise. The products'
    own time and the largest other ops come with it."""
    from torch.profiler import ProfilerActivity, profile

    best = None
    for _ in range(samples):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        ev = prof.key_averages()
        products = sum(e.self_cpu_time_total for e in ev if e.key in PRODUCTS) / 1e6
        other = sum(e.self_cpu_time_total for e in ev if e.key not in PRODUCTS) / 1e6
        if best is None or other < best["outside_s"]:
            top = sorted(((e.self_cpu_time_total / 1e6, e.key) for e in ev if e.key not in PRODUCTS), reverse=True)[:6]
            best = {"outside_s": other, "products_s": products, "top_ops": [[k, t] for t, k in top]}
    return best


def bench_shape(d_in, d_sae, B, rounds, names, min_sample_s, profile_ops=True) -> dict:
    g = torch.Generator().manual_seed(0)
    batches = Batches(d_in, B, 4, g)
    fns = {"matmul": Matmuls(d_in, d_sae, B, g)}
    for n in names:
        fns[n] = VARIANTS[n][0](d_in, d_sae, batches)
    print(f"({d_in}, {d_sae}), batch {B}: warming up {', '.join(fns)}", flush=True)
    reps = {}
    for n, f in fns.items():
        f()  # first step: buffers, Adam state, compilation
        reps[n] = _bench.reps_for(f, min_sample_s)
    times = _bench.alternate(fns, rounds, reps)
    flops = flops_per_token(d_in, d_sae) * B
    out = {
        "d_in": d_in,
        "d_sae": d_sae,
        "batch_tokens": B,
        "flops_per_step": flops,
        "steps_per_sample": reps,
        "matmul": {
            "gflops": flops / _bench.summary(times["matmul"])["median_s"] / 1e9,
            "time": _bench.summary(times["matmul"]),
        },
        "goal_fraction": GOALS.get((d_in, d_sae), GOAL_OTHER),
        "variants": {},
    }
    for n in names:
        t = _bench.summary(times[n])
        out["variants"][n] = {
            "label": VARIANTS[n][1],
            "time": t,
            "tokens_per_s": B / t["median_s"],
            "gflops": flops / t["median_s"] / 1e9,
            "fraction_of_matmul": _bench.per_round_ratio(times["matmul"], times[n]),
        }
    if profile_ops:
        for n in names:
            if n != "compiled":  # inductor's kernels do not show as aten ops
                out["variants"][n]["profile"] = outside_products(fns[n])
    k = out["variants"].get("kdsae")
    if k:
        out["goal_met"] = k["fraction_of_matmul"]["median"] >= out["goal_fraction"]
    del fns
    gc.collect()
    return out


def markdown(result: dict) -> list[str]:
    md = [
        "# sae_step benchmark",
        "",
        f"One SAE training step, fp32 on the CPU, batch {result['batch_tokens']} tokens; "
        "the fraction is of the rate of the step's own five matrix products measured in the same process "
        "(10 d_in d_sae FLOPs per token), per round, median over "
        f'{result["rounds"]} alternating rounds (range in brackets); "fastest samples" is the ratio of each '
        "variant's fastest sample, the one least disturbed by other jobs.",
        "",
        _bench.machine_line(result["machine"]),
        "",
        "| d_in x d_sae | matmul GFLOP/s | variant | tokens/s per layer | fraction of matmul rate | fastest samples | "
        "outside the products (profiler) | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in result["shapes"]:
        for i, (n, v) in enumerate(s["variants"].items()):
            f = v["fraction_of_matmul"]
            goal = ""
            if n == "kdsae":
                goal = f">= {s['goal_fraction']:.2f}: {'met' if s['goal_met'] else 'NOT met'}"
            outside = f"{v['profile']['outside_s'] * 1e3:.0f} ms" if "profile" in v else "-"
            md.append(
                f"| {s['d_in']} x {s['d_sae']} | {s['matmul']['gflops']:.0f} | {n} | {v['tokens_per_s']:,.0f} | "
                f"{f['median']:.3f} ({f['min']:.3f}-{f['max']:.3f}) | {f['best']:.3f} | {outside} | {goal} |"
            )
    return md


# ---- the density axis (issue 19) ----------------------------------------------------------------------------
DENSITIES = (0.002, 0.005, 0.01, 0.02, 0.05, 0.075, 0.1, 0.15, 0.3)
DENSITY_SHAPES = ((384, 2048), (384, 12288), (1024, 32768))
BEFORE_COMMIT = "72d0fa24bc4afb10a542f4ddfec0c43766ff4425"  # the last commit whose SAE step is dense only
SPEEDUP_GOAL = {"shape": PAPER_SHAPE, "batch": 4096, "max_density": 0.01, "speedup": 3.0}  # sparse / dense step
SLOWDOWN_LIMIT = 1.03  # no density may make the automatic choice slower than `before` by more than this
EQUIVALENCE = dict(d_in=384, d_sae=2048, B=4096, steps=100, density=0.01, loss_rtol=1e-5, weight_rtol=1e-4)


@torch.no_grad()
def density_bias(sae: SAE, x: torch.Tensor, density: float) -> torch.Tensor:
    """b_enc under which each latent fires on `density` of the tokens of x: minus the value of its pre-activation
    that exactly round(density B) tokens exceed."""
    pre = (x - sae.b_dec) @ sae.W_enc
    above = min(x.shape[0] - 1, max(1, round(density * x.shape[0])))
    return -pre.kthvalue(x.shape[0] - above, dim=0).values


class PathStep:
    """One SAEUnit's step on the shared batches (`unit_cls` from today's kdsae or from BEFORE_COMMIT)."""

    def __init__(self, unit_cls, d_in, d_sae, batches, b_enc, lr=DENSITY_LR, **path):
        self.unit = unit_cls(TRIAL, 0, d_in, d_sae, seed=0, lr=lr, grad_clip=CLIP, **path)
        with torch.no_grad():
            self.unit.sae.b_enc.copy_(b_enc)
        self.batches = batches
        self.last = None

    def __call__(self):
        self.last = self.unit.step(self.batches.next())
        return self.last


def bench_density(d_in, d_sae, B, density, rounds, batches, before, min_sample_s) -> dict:
    """`before`, `dense` and `sparse` steps at one density, in alternating rounds."""
    b_enc = density_bias(SAE.initialised(d_in, d_sae, seed=0), batches.calibration(), density)
    fns = {
        "before": PathStep(before.SAEUnit, d_in, d_sae, batches, b_enc),
        "dense": PathStep(SAEUnit, d_in, d_sae, batches, b_enc, step_path="dense"),
        "sparse": PathStep(SAEUnit, d_in, d_sae, batches, b_enc, step_path="sparse"),
    }
    reps = {n: max(1, round(min_sample_s / max(_bench.timed(f, 1), 1e-9))) for n, f in fns.items()}  # + warm-up
    first = float(fns["sparse"].last.l0) / d_sae  # the warm-up step's density: the measured one should match it
    print(f"  density {density:g} (first step {first:.4f}): {reps} steps per sample", flush=True)
    times = _bench.alternate(fns, rounds, reps, log=lambda line: print("  " + line, flush=True))
    measured = float(fns["sparse"].last.l0) / d_sae
    flops = {
        "before": 10 * d_in * d_sae,
        "dense": 10 * d_in * d_sae,
        "sparse": sae_sparse.sparse_flops_per_token(d_in, d_sae, measured),
    }
    out = {
        "density_target": density,
        "density_measured": measured,
        "density_first_step": first,
        "steps_per_sample": reps,
        "variants": {
            n: {
                "time": _bench.summary(t),
                "tokens_per_s": B / statistics.median(t),
                "flops_per_token": flops[n],
                "gflops": flops[n] * B / statistics.median(t) / 1e9,
            }
            for n, t in times.items()
        },
        "sparse_speedup": _bench.per_round_ratio(times["dense"], times["sparse"]),
        "sparse_speedup_vs_before": _bench.per_round_ratio(times["before"], times["sparse"]),
        "dense_vs_before": _bench.per_round_ratio(times["dense"], times["before"]),
    }
    del fns
    gc.collect()
    return out


def with_auto_choice(point: dict, d_in: int, d_sae: int, B: int) -> dict:
    """The path the automatic choice takes at the point's measured density (with the threshold declared now for
    the shape, sae_sparse.sparse_below_density) and its time against `before`, per round, from the point's
    recorded samples."""
    active = torch.tensor(round(point["density_measured"] * d_sae * B))
    below = sae_sparse.sparse_below_density(d_in, d_sae)
    auto = sae_sparse.choose_path("auto", active, (B, d_sae), torch.float32, below)
    v = point["variants"]
    return {
        **point,
        "auto_path": auto,
        "auto_vs_before": _bench.per_round_ratio(v[auto]["time"]["samples_s"], v["before"]["time"]["samples_s"]),
    }


def crossover(points: list[dict]) -> float | None:
    """The density where the sparse step stops being faster (speed-up 1), log-interpolated between the measured
    densities around it; None if sparse is faster everywhere measured, 0 if nowhere."""
    pts = sorted((p["density_measured"], p["sparse_speedup"]["median"]) for p in points)
    if pts[0][1] <= 1:
        return 0.0
    for (d1, s1), (d2, s2) in zip(pts, pts[1:]):
        if s1 > 1 >= s2:
            t = math.log(s1) / (math.log(s1) - math.log(s2))
            return math.exp(math.log(d1) + t * (math.log(d2) - math.log(d1)))
    return None


def round_down(x: float, digits: int = 2) -> float:
    """x rounded down to `digits` significant digits (a declared crossover never above a measured one)."""
    scale = 10 ** (digits - 1 - math.floor(math.log10(x)))
    return math.floor(x * scale) / scale


def density_equivalence(d_in, d_sae, B, steps, density, **_) -> dict:
    """`steps` sparse and dense unit steps from the same weights on the same batches: the largest relative
    difference of the loss over the steps, and of each final weight tensor (as ||sparse - dense|| / ||dense||)."""
    g = torch.Generator().manual_seed(1)
    batches = Batches(d_in, B, 8, g)
    b_enc = density_bias(SAE.initialised(d_in, d_sae, seed=0), batches.calibration(), density)
    # at the training learning rate: the density moves as in training, and the two paths must follow each other
    runs = {p: PathStep(SAEUnit, d_in, d_sae, batches, b_enc, lr=LR, step_path=p) for p in ("dense", "sparse")}
    losses, densities, last = {p: [] for p in runs}, [], {}
    for _ in range(steps):
        x = batches.next()
        for p, run in runs.items():
            last[p] = run.unit.step(x)
            losses[p].append(float(last[p].loss))
        densities.append(float(last["sparse"].l0) / d_sae)
    rel_loss = max(abs(a - b) / abs(b) for a, b in zip(losses["sparse"], losses["dense"]))
    ws = {p: run.unit.sae.tensors() for p, run in runs.items()}
    rel_w = {n: float((ws["sparse"][n] - ws["dense"][n]).norm() / ws["dense"][n].norm()) for n in PARAM_NAMES}
    return {
        "d_in": d_in,
        "d_sae": d_sae,
        "batch_tokens": B,
        "steps": steps,
        "density_target": density,
        "density_range": [min(densities), max(densities)],
        "max_rel_diff_loss": rel_loss,
        "rel_diff_final_weights": rel_w,
        "paths": [st.path for st in last.values()],
    }


def density_sweep(shapes, densities, batch_sizes, rounds, min_sample_s) -> list[dict]:
    before = _bench.module_at(BEFORE_COMMIT, "kdsae_core/sae.py")  # its path then
    out = []
    for (d_in, d_sae), B in ((shape, B) for shape in shapes for B in batch_sizes):
        g = torch.Generator().manual_seed(0)
        batches = Batches(d_in, B, 4, g)
        matmul = Matmuls(d_in, d_sae, B, g)
        matmul()
        mm = [_bench.timed(matmul, max(1, round(min_sample_s / _bench.timed(matmul, 1)))) for _ in range(rounds)]
        del matmul
        print(f"({d_in}, {d_sae}), batch {B}: five products {statistics.median(mm) * 1e3:.1f} ms", flush=True)
        points = [bench_density(d_in, d_sae, B, d, rounds, batches, before, min_sample_s) for d in densities]
        out.append(
            {
                "d_in": d_in,
                "d_sae": d_sae,
                "batch_tokens": B,
                "points": points,
                "matmul": {"gflops": 10 * d_in * d_sae * B / statistics.median(mm) / 1e9, "time": _bench.summary(mm)},
            }
        )
    return out


def derive(shapes: list[dict]) -> dict:
    """Everything the sweep's timings decide: the automatic path at each point, the crossovers, the goals (rerun by
    --rederive on a result file after CPU_CROSSOVERS changed: the same measurements, read again)."""
    shapes = [
        {
            **s,
            "points": [with_auto_choice(p, s["d_in"], s["d_sae"], s["batch_tokens"]) for p in s["points"]],
            "crossover": crossover(s["points"]),
        }
        for s in shapes
    ]
    return {"shapes": shapes, "crossover": declared_crossover(shapes), "goals": density_goals(shapes)}


def declared_crossover(shapes: list[dict]) -> dict:
    """Per shape, the crossover sae_sparse.CPU_CROSSOVERS must declare: the lowest over the batch sizes measured,
    rounded down (0 if sparse was never faster; None if it was faster at every density measured at every batch),
    and the threshold the automatic choice reads for that shape now."""
    measured = {f"{s['d_in']}x{s['d_sae']}, batch {s['batch_tokens']}": s["crossover"] for s in shapes}
    chosen, declared = {}, {}
    for d_in, d_sae in dict.fromkeys((s["d_in"], s["d_sae"]) for s in shapes):
        found = [s["crossover"] for s in shapes if (s["d_in"], s["d_sae"]) == (d_in, d_sae)]
        found = [c for c in found if c is not None]
        chosen[f"{d_in}x{d_sae}"] = (round_down(min(found)) if min(found) > 0 else 0.0) if found else None
        declared[f"{d_in}x{d_sae}"] = sae_sparse.sparse_below_density(d_in, d_sae)
    return {
        "measured": measured,
        "chosen": chosen,
        "declared": declared,
        "agrees": all(chosen[k] is not None and math.isclose(chosen[k], declared[k]) for k in chosen),
    }


def density_goals(shapes: list[dict]) -> dict:
    paper = next(
        (
            s
            for s in shapes
            if (s["d_in"], s["d_sae"]) == SPEEDUP_GOAL["shape"] and s["batch_tokens"] == SPEEDUP_GOAL["batch"]
        ),
        None,
    )
    low = [p for p in paper["points"] if p["density_measured"] <= SPEEDUP_GOAL["max_density"]] if paper else []
    worst = max(
        (p["auto_vs_before"]["median"], s["d_in"], s["d_sae"], s["batch_tokens"], p["density_measured"])
        for s in shapes
        for p in s["points"]
    )
    return {
        "speedup_at_low_density": {
            "goal": SPEEDUP_GOAL["speedup"],
            "max_density": SPEEDUP_GOAL["max_density"],
            "speedups": [[p["density_measured"], p["sparse_speedup"]["median"]] for p in low],
            "met": bool(low) and min(p["sparse_speedup"]["median"] for p in low) >= SPEEDUP_GOAL["speedup"],
        },
        "no_slowdown": {
            "limit": SLOWDOWN_LIMIT,
            "worst_auto_vs_before": worst[0],
            "worst_at": {"d_in": worst[1], "d_sae": worst[2], "batch_tokens": worst[3], "density": worst[4]},
            "met": worst[0] <= SLOWDOWN_LIMIT,
        },
    }


def density_markdown(result: dict) -> list[str]:
    return [
        "# sae_step density benchmark",
        "",
        _bench.machine_line(result["machine"]),
        "",
        *sparse_step_table(result).splitlines(),
    ]


def copy_bandwidth(n_bytes: int = 512 << 20, samples: int = 7) -> dict:
    """Read + write bytes per second of a large copy (fastest and median of `samples`): the memory rate the
    cost model of kdsae_core.sae.plan divides the step's counted traffic by."""
    x = torch.ones(n_bytes // 4)
    y = torch.empty_like(x)
    y.copy_(x)
    ts = [_bench.timed(lambda: y.copy_(x), 1) for _ in range(samples)]
    return {
        "bytes": 2 * n_bytes,
        "best_bytes_per_s": 2 * n_bytes / min(ts),
        "median_bytes_per_s": 2 * n_bytes / sorted(ts)[len(ts) // 2],
    }


def parse_shapes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        a, b = part.lower().split("x")
        out.append((int(a), int(b)))
    return out


def main() -> None:
    _bench.ensure_malloc_env()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--shapes", type=parse_shapes, default=None, help="e.g. 384x2048,1024x32768")
    ap.add_argument(
        "--densities",
        type=lambda t: [float(v) for v in t.split(",")],
        default=None,
        nargs="?",
        const=list(DENSITIES),
        help="the density axis instead (default densities: %(const)s)",
    )
    ap.add_argument(
        "--batches",
        type=lambda t: [int(v) for v in t.split(",")],
        default=None,
        help="with --densities: batch sizes to sweep (default: --batch)",
    )
    ap.add_argument(
        "--rederive",
        metavar="RESULT",
        default=None,
        help="re-read a --densities result file with the crossovers declared now (CPU_CROSSOVERS), and rewrite it",
    )
    ap.add_argument("--equivalence-steps", type=int, default=EQUIVALENCE["steps"], help="with --densities")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile variant")
    ap.add_argument(
        "--no-profile", action="store_true", help="skip the torch.profiler pass (time outside the products)"
    )
    ap.add_argument("--min-sample-seconds", type=float, default=1.0, help="steps per timing sample: about this long")
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time (default); cpu: process CPU time, steadier on a shared machine with --threads 1",
    )
    ap.add_argument("--no-malloc-env", action="store_true", help="keep glibc's default malloc settings")
    ap.add_argument(
        "--out-name",
        default=None,
        help="result file name under benchmarks/results/ (default: sae_step, or sae_step_density with --densities)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    _bench.set_clock(args.clock)
    torch.manual_seed(0)
    if args.rederive:
        return rederive(args.rederive)
    if args.densities:
        return main_densities(args)
    args.shapes = args.shapes or list(SHAPES)
    names = ["kdsae", "previous", "plain"] + (["compiled"] if args.compile else [])
    m = _bench.machine()
    bandwidth = copy_bandwidth()
    shapes = [
        bench_shape(d_in, d_sae, args.batch, args.rounds, names, args.min_sample_seconds, not args.no_profile)
        for d_in, d_sae in args.shapes
    ]
    bandwidth_end = copy_bandwidth()
    result = {
        "benchmark": "sae_step",
        "machine": _bench.finish_machine(m),
        "batch_tokens": args.batch,
        "dtype": "float32",
        "rounds": args.rounds,
        "flops_per_token": "10 * d_in * d_sae",
        "command": " ".join([".venv/bin/python", "benchmarks/sae_step.py", *sys.argv[1:]]),
        "copy_bandwidth": {"start": bandwidth, "end": bandwidth_end},
        "shapes": shapes,
    }
    _bench.write_result(args.out_name or "sae_step", result, markdown(result))


def rederive(path: str) -> None:
    result = json.loads(Path(path).read_text())
    result.update(derive(result["shapes"]))
    result["rederived"] = f"derived again with CPU_CROSSOVERS = {sae_sparse.CPU_CROSSOVERS}"
    _bench.write_result(Path(path).stem, result, density_markdown(result))


def main_densities(args) -> None:
    m = _bench.machine()
    sweep = derive(
        density_sweep(
            args.shapes or list(DENSITY_SHAPES),
            args.densities,
            args.batches or [args.batch],
            args.rounds,
            args.min_sample_seconds,
        )
    )
    equivalence = density_equivalence(**{**EQUIVALENCE, "steps": args.equivalence_steps})
    equivalence["met"] = (
        equivalence["max_rel_diff_loss"] <= EQUIVALENCE["loss_rtol"]
        and max(equivalence["rel_diff_final_weights"].values()) <= EQUIVALENCE["weight_rtol"]
    )
    result = {
        "benchmark": "sae_step_density",
        "machine": _bench.finish_machine(m),
        "dtype": "float32",
        "rounds": args.rounds,
        "before_commit": BEFORE_COMMIT,
        "flops_per_token": {"dense": "10 * d_in * d_sae", "sparse": "2 * d_in * d_sae * (1 + 4 * density)"},
        "command": " ".join([".venv/bin/python", "benchmarks/sae_step.py", *sys.argv[1:]]),
        **sweep,
        "equivalence": {**equivalence, "goals": {k: EQUIVALENCE[k] for k in ("loss_rtol", "weight_rtol")}},
    }
    _bench.write_result(args.out_name or "sae_step_density", result, density_markdown(result))


if __name__ == "__main__":
    main()
