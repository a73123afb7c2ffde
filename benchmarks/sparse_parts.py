"""Benchmark: where the sparse SAE step's time goes at one density, next to the dense step's products.

At a shape, batch and density (default: 384 x 2,048, batch 4,096, trial C's density in the committed embedded
run, the point of the >= 2x-SAELens goal), on activations z of that density (sae_step.density_bias), it times in
alternating rounds each stage of kdsae_core.sae.sparse.sparse_products on its own (the functions it calls) --
gathering z's active pairs in both layouts, the decoder, the W_dec gradient, the sampled latent gradient and the
W_enc gradient over the active pairs -- the encoder product both paths share, one dense product of the same size, and
the whole unit step on each path (the rest of a step: Adam, clipping, decoder renormalisation, the count and the
elementwise passes, is the step less its parts). FLOPs: 2 d_in nnz per sparse product, 2 B d_in d_sae dense.

    .venv/bin/python benchmarks/sparse_parts.py [--shape 384x2048] [--batch 4096] [--density D] [--rounds 5]

Writes benchmarks/results/sparse_parts.json and .md. Re-executes itself with the Makefile's malloc settings.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import _bench
import torch
from report import sparse_parts_table
from sae_step import CLIP, DENSITY_LR, TRIAL, Batches, density_bias, parse_shapes
from vs_saelens import trial_c_embedded_density

from kdsae_core.sae import sparse as sae_sparse
from kdsae_core.sae.step import SAEUnit, _augmented_input


def parts(d_in: int, d_sae: int, B: int, density: float) -> tuple[dict, dict, float]:
    """({part: call}, {part: FLOPs}, the measured density) on one batch's activations at `density`. The sparse calls
    are the stages sparse_products calls, in its order, each on the previous one's output
    (the error gradient g_err, which the decoder's output would give, is random: its values do not change the
    cost). The whole steps train on that same batch, at DENSITY_LR, so the density stays put."""
    g = torch.Generator().manual_seed(0)
    batches = Batches(d_in, B, 1, g)
    units = {
        p: SAEUnit(TRIAL, 0, d_in, d_sae, seed=0, lr=DENSITY_LR, grad_clip=CLIP, step_path=p)
        for p in ("dense", "sparse")
    }
    bias = density_bias(units["dense"].sae, batches.calibration(), density)
    for u in units.values():
        with torch.no_grad():
            u.sae.b_enc.copy_(bias)
    weights = units["dense"].sae.tensors()  # live views of the weights its steps update: cloned
    W_enc, b_enc, W_dec, b_dec = (weights[n].clone() for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
    x = batches.xs[0]
    xa = _augmented_input(x, b_dec, d_in)  # the step's centred input, with its ones column and padding
    z = torch.addmm(b_enc, xa[:, :d_in], W_enc).relu_()
    pairs = sae_sparse.active_pairs(z)
    nnz = pairs.by_token.values().numel()
    g_err = torch.randn(B, d_in, generator=g) * 1e-3
    per_token = torch.tensor(TRIAL.l1_coeff / B)
    g_pre = sae_sparse.latent_grad(pairs, per_token, W_dec, g_err)
    g_dec = torch.empty(d_sae, d_in)  # the gradient buffers the step writes into
    block = torch.empty(xa.shape[1], d_sae)
    calls = {
        "encoder (dense, both paths)": lambda: torch.addmm(b_enc, xa[:, :d_in], W_enc).relu_(),
        "z to its active pairs, both layouts": lambda: sae_sparse.active_pairs(z),
        "decoder over the active pairs": lambda: sae_sparse.decode_error(pairs, W_dec, b_dec, x),
        "W_dec gradient over the active pairs": lambda: sae_sparse.decoder_grad(pairs, g_err, g_dec),
        "latent gradient, sampled at the active pairs": lambda: sae_sparse.latent_grad(pairs, per_token, W_dec, g_err),
        "W_enc gradient over the active pairs": lambda: sae_sparse.encoder_grad(g_pre, xa, block),
        "one dense product of the step, for comparison": lambda: torch.mm(z, W_dec),
        "torch's to_sparse_csr and to_sparse_csc of z, for comparison": lambda: z.to_sparse_csr().to_sparse_csc(),
        "whole step, dense": lambda: units["dense"].step(batches.next()),
        "whole step, sparse": lambda: units["sparse"].step(batches.next()),
    }
    sparse_product = 2 * d_in * nnz
    flops = {
        "encoder (dense, both paths)": 2 * B * d_in * d_sae,
        "decoder over the active pairs": sparse_product,
        "W_dec gradient over the active pairs": sparse_product,
        "latent gradient, sampled at the active pairs": sparse_product,
        "W_enc gradient over the active pairs": 2 * xa.shape[1] * nnz,
        "one dense product of the step, for comparison": 2 * B * d_in * d_sae,
    }
    return calls, flops, nnz / (B * d_sae)


def main() -> None:
    _bench.ensure_malloc_env()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=parse_shapes, default=[(384, 2048)])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--density", type=float, default=None, help="default: trial C's in the committed embedded run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-sample-seconds", type=float, default=1.0)
    ap.add_argument("--no-malloc-env", action="store_true")
    args = ap.parse_args()
    (d_in, d_sae), B = args.shape[0], args.batch
    density = trial_c_embedded_density() if args.density is None else args.density
    m = _bench.machine()
    calls, flops, measured = parts(d_in, d_sae, B, density)
    reps = {n: _bench.reps_for(f, args.min_sample_seconds) for n, f in calls.items()}
    times = _bench.alternate(calls, args.rounds, reps)
    ms = {n: statistics.median(t) * 1e3 for n, t in times.items()}
    sparse_parts = [n for n in calls if n.endswith(("pairs", "layouts"))]
    result = {
        "benchmark": "sparse_parts",
        "machine": _bench.finish_machine(m),
        "d_in": d_in,
        "d_sae": d_sae,
        "batch_tokens": B,
        "density_target": density,
        "density_measured": measured,
        "rounds": args.rounds,
        "command": " ".join([".venv/bin/python", "benchmarks/sparse_parts.py", *sys.argv[1:]]),
        "parts": {
            n: {"ms": ms[n], "gflops": flops[n] / (ms[n] / 1e3) / 1e9 if n in flops else None, "samples_s": times[n]}
            for n in calls
        },
        "rest_of_sparse_step_ms": ms["whole step, sparse"]
        - ms["encoder (dense, both paths)"]
        - sum(ms[n] for n in sparse_parts),
    }
    _bench.write_result("sparse_parts", result, ["# sparse_parts benchmark", "", sparse_parts_table(result)])


if __name__ == "__main__":
    main()
