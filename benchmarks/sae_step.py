"""Benchmark: one SAE training step (fp32, CPU) next to the matrix-multiply rate of the same shapes.

For (d_in, d_sae) in {(384, 2048), (384, 12288), (1024, 32768)} and a batch of 4,096 tokens, in one process and
with one thread count, it times in alternating rounds:
- `matmul`: the five matrix products of a step alone (encoder, decoder, W_dec gradient, latent gradient,
  W_enc gradient; the operand layouts of the step, outputs preallocated): the ceiling, 10 d_in d_sae FLOPs per
  token;
- `kdsae`: `SAEUnit.step` (hand-written exact backward, clipping folded into fused Adam, blocked decoder
  renormalisation; kdsae_core/sae/model.py);
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
"""

from __future__ import annotations

import argparse
import gc
import sys

import torch

import _bench
from kdsae_core.sae.model import ADAM_BETAS, ADAM_EPS, SAE, SAEUnit, StepStats, TrialSpec, sae_loss

SHAPES = ((384, 2048), (384, 12288), (1024, 32768))
PAPER_SHAPE = (1024, 32768)
GOALS = {PAPER_SHAPE: 0.90}  # every other shape: 0.70
GOAL_OTHER = 0.70
TRIAL = TrialSpec("B", 8e-5, "sum")  # the paper's trial B (fixed lambda, sum form)
LR, CLIP = 3e-4, 1.0


def flops_per_token(d_in: int, d_sae: int) -> int:
    return 10 * d_in * d_sae


# ---- the variants ---------------------------------------------------------------------------------------
class Matmuls:
    """The five products of a step, with the step's shapes and operand layouts, into preallocated outputs."""

    def __init__(self, d_in, d_sae, B, g):
        self.xc = torch.randn(B, d_in, generator=g)
        self.W_enc = torch.randn(d_in, d_sae, generator=g) / d_in ** 0.5
        self.W_dec = torch.randn(d_sae, d_in, generator=g) / d_in ** 0.5
        self.z = torch.randn(B, d_sae, generator=g).relu_()
        self.g_err = torch.randn(B, d_in, generator=g)
        self.out_z = torch.empty(B, d_sae)
        self.out_x = torch.empty(B, d_in)
        self.out_dec = torch.empty(d_sae, d_in)
        self.out_enc = torch.empty(d_in, d_sae)

    def __call__(self):
        torch.mm(self.xc, self.W_enc, out=self.out_z)          # encoder
        torch.mm(self.z, self.W_dec, out=self.out_x)           # decoder
        torch.mm(self.z.T, self.g_err, out=self.out_dec)       # W_dec gradient
        torch.mm(self.g_err, self.W_dec.T, out=self.out_z)     # latent gradient
        torch.mm(self.xc.T, self.z, out=self.out_enc)          # W_enc gradient


class Batches:
    def __init__(self, d_in, B, n, g):
        # Activations with a mean, correlated directions and heavy-ish tails, like a residual stream.
        mix = torch.randn(d_in, d_in, generator=g) / d_in ** 0.5
        self.xs = [torch.randn(B, d_in, generator=g) @ mix + 0.3 for _ in range(n)]
        self.i = 0

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
    """kdsae_core.sae.model.fused_backward as of commit 6d4dec3 (fp32 path), kept for before/after numbers."""
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
        s = previous_fused_backward(self.sae, self.batches.next(), torch.tensor(TRIAL.l1_coeff, dtype=torch.float64),
                                    TRIAL.l1_form)
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
        gWe, gbe, gWd, gbd, mse, l1, l0, fired = self.fn(self.batches.next(), s.W_enc, s.b_enc, s.W_dec, s.b_dec,
                                                         per_token)
        s.W_enc.grad, s.b_enc.grad, s.W_dec.grad, s.b_dec.grad = gWe, gbe, gWd, gbd
        u._clip_gradients()
        u.opt.step()
        s.normalize_decoder_()
        u.last_fired.masked_fill_(fired, u.steps)
        u.steps += 1
        return mse


VARIANTS = {"kdsae": (KdsaeStep, "kdsae SAEUnit.step"),
            "previous": (PreviousStep, "kdsae step as first committed (6d4dec3)"),
            "plain": (PlainStep, "plain PyTorch: autograd, clip_grad_norm_, torch.optim.Adam defaults"),
            "compiled": (CompiledStep, "kdsae step, gradient function under torch.compile (inductor)")}


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
    out = {"d_in": d_in, "d_sae": d_sae, "batch_tokens": B, "flops_per_step": flops, "steps_per_sample": reps,
           "matmul": {"gflops": flops / _bench.summary(times["matmul"])["median_s"] / 1e9,
                      "time": _bench.summary(times["matmul"])},
           "goal_fraction": GOALS.get((d_in, d_sae), GOAL_OTHER), "variants": {}}
    for n in names:
        t = _bench.summary(times[n])
        out["variants"][n] = {"label": VARIANTS[n][1], "time": t, "tokens_per_s": B / t["median_s"],
                              "gflops": flops / t["median_s"] / 1e9,
                              "fraction_of_matmul": _bench.per_round_ratio(times["matmul"], times[n])}
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
    md = ["# sae_step benchmark", "",
          f"One SAE training step, fp32 on the CPU, batch {result['batch_tokens']} tokens; "
          "the fraction is of the rate of the step's own five matrix products measured in the same process "
          "(10 d_in d_sae FLOPs per token), per round, median over "
          f"{result['rounds']} alternating rounds (range in brackets); \"fastest samples\" is the ratio of each "
          "variant's fastest sample, the one least disturbed by other jobs.", "",
          _bench.machine_line(result["machine"]), "",
          "| d_in x d_sae | matmul GFLOP/s | variant | tokens/s per layer | fraction of matmul rate | fastest samples | "
          "outside the products (profiler) | goal |",
          "|---|---|---|---|---|---|---|---|"]
    for s in result["shapes"]:
        for i, (n, v) in enumerate(s["variants"].items()):
            f = v["fraction_of_matmul"]
            goal = ""
            if n == "kdsae":
                goal = f">= {s['goal_fraction']:.2f}: {'met' if s['goal_met'] else 'NOT met'}"
            outside = f"{v['profile']['outside_s'] * 1e3:.0f} ms" if "profile" in v else "-"
            md.append(f"| {s['d_in']} x {s['d_sae']} | {s['matmul']['gflops']:.0f} | {n} | {v['tokens_per_s']:,.0f} | "
                      f"{f['median']:.3f} ({f['min']:.3f}-{f['max']:.3f}) | {f['best']:.3f} | {outside} | {goal} |")
    return md


def copy_bandwidth(n_bytes: int = 512 << 20, samples: int = 7) -> dict:
    """Read + write bytes per second of a large copy (fastest and median of `samples`): the memory rate the
    cost model of kdsae_core.sae.plan divides the step's counted traffic by."""
    x = torch.ones(n_bytes // 4)
    y = torch.empty_like(x)
    y.copy_(x)
    ts = [_bench.timed(lambda: y.copy_(x), 1) for _ in range(samples)]
    return {"bytes": 2 * n_bytes, "best_bytes_per_s": 2 * n_bytes / min(ts),
            "median_bytes_per_s": 2 * n_bytes / sorted(ts)[len(ts) // 2]}


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
    ap.add_argument("--shapes", type=parse_shapes, default=list(SHAPES), help="e.g. 384x2048,1024x32768")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile variant")
    ap.add_argument("--no-profile", action="store_true", help="skip the torch.profiler pass (time outside the products)")
    ap.add_argument("--min-sample-seconds", type=float, default=1.0, help="steps per timing sample: about this long")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: elapsed time (default); cpu: process CPU time, steadier on a shared machine with --threads 1")
    ap.add_argument("--no-malloc-env", action="store_true", help="keep glibc's default malloc settings")
    ap.add_argument("--out-name", default="sae_step", help="result file name under benchmarks/results/")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    _bench.set_clock(args.clock)
    torch.manual_seed(0)
    names = ["kdsae", "previous", "plain"] + (["compiled"] if args.compile else [])
    m = _bench.machine()
    bandwidth = copy_bandwidth()
    shapes = [bench_shape(d_in, d_sae, args.batch, args.rounds, names, args.min_sample_seconds, not args.no_profile)
              for d_in, d_sae in args.shapes]
    bandwidth_end = copy_bandwidth()
    result = {"benchmark": "sae_step", "machine": _bench.finish_machine(m), "batch_tokens": args.batch,
              "dtype": "float32", "rounds": args.rounds, "flops_per_token": "10 * d_in * d_sae",
              "command": " ".join([".venv/bin/python", "benchmarks/sae_step.py", *sys.argv[1:]]),
              "copy_bandwidth": {"start": bandwidth, "end": bandwidth_end}, "shapes": shapes}
    _bench.write_result(args.out_name, result, markdown(result))


if __name__ == "__main__":
    main()
