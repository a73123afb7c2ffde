"""The sparse-aware half of the SAE step (issue 19): after the encoder, only the (token, latent) pairs that fire.

Of the step's five matrix products only the encoder, (x - b_dec) W_enc, needs every latent. Once z = ReLU(...) is
known, the decoder (z W_dec), the W_dec gradient (z^T g_err), the latent gradient (g_err W_dec^T, needed only
where z > 0) and the W_enc gradient ((x - b_dec)^T g_pre, g_pre being zero where z = 0) touch only the active
pairs: with nnz of them, each costs 2 d_in nnz FLOPs instead of 2 d_in B d_sae. `sparse_products` computes
exactly what the dense branch of `kdsae_core.sae.step.fused_backward` computes (the same loss, the same gradients,
written into the same buffers, so clipping, Adam and the decoder renormalisation that follow are unchanged);
only the order of the floating-point sums differs.

The active pairs are held twice, as torch's compressed sparse tensors: token-major (CSR of z, [B, d_sae]) for the
decoder, and latent-major (CSR of z^T, [d_sae, B]) for the three products whose rows are latents -- there each
weight row is read from memory once and the [B, d_in] operands it meets are small enough to stay in cache. The
latent gradient is a sampled product (torch.sparse.sampled_addmm) on the latent-major pattern, so it comes out
already in the layout the W_enc gradient needs. Both layouts come from one scan of z (`active_pairs`), and each
product is a function of its own, so benchmarks/sparse_parts.py times the very calls the step makes. Everything
is plain torch (MKL's sparse products on the CPU, cuSPARSE on CUDA, where this code is untested).

`choose_path` picks the step per batch from the fraction of pairs that fired (training starts dense -- about
half the latents fire on a fresh SAE -- and gets sparse as the L1 term bites), against the crossover measured for
the SAE's shape (`sparse_below_density`).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

# torch announces once per process that its compressed sparse tensors are "in beta"; the products used here are
# checked against the dense step by tests/test_sae_sparse.py, so the notice would only clutter the training log.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state", category=UserWarning)

PATHS = ("auto", "dense", "sparse")

# The crossovers: (d_in, d_sae) -> the fraction of active (token, latent) pairs below which the sparse step was
# faster than the dense one at every batch size measured (the lowest of batches 128 and 4,096, rounded down).
# Measured on this machine (2-core AMD EPYC, 2 threads, torch 2.13 CPU/MKL) by `benchmarks/sae_step.py --densities`
# and recorded in benchmarks/results/sae_step_density.json ("crossover"); tests/test_sae_sparse.py checks the two
# agree. It depends on the shape (the sparse products' rate against the dense ones' differs with d_in, d_sae and
# the caches), so a shape between two measured ones gets a value between theirs.
CPU_CROSSOVERS = {(384, 2048): 0.13, (384, 12288): 0.12, (1024, 32768): 0.066}

# Sparse products exist for these compute dtypes only (MKL's sparse BLAS has no bfloat16, and the sparse products
# write into the fp32 gradient buffers directly); others stay dense. So the bf16 step's `mean`-form L1 term, added
# apart in fp32 (kdsae_core.sae.model.fused_backward), is always the dense step's.
SPARSE_DTYPES = (torch.float32, torch.float64)


def sparse_below_density(d_in: int, d_sae: int, device_type: str = "cpu") -> float:
    """The density below which `auto` takes the sparse step for an SAE of this shape.

    On the CPU: the measured crossovers (CPU_CROSSOVERS) interpolated log-linearly in the weight count d_in d_sae
    between the measured shapes around it, the nearest end's value beyond them. Elsewhere 0, so `auto` stays
    dense: no crossover has been measured on a GPU (the sparse step there is untested; --sae-step sparse forces
    it)."""
    if device_type != "cpu":
        return 0.0
    points = sorted((d * s, c) for (d, s), c in CPU_CROSSOVERS.items())
    size = d_in * d_sae
    if size <= points[0][0]:
        return points[0][1]
    for (s1, c1), (s2, c2) in zip(points, points[1:]):
        if size <= s2:
            t = math.log(size / s1) / math.log(s2 / s1)
            # log-linear in the density too, unless an end is 0 (sparse never faster there): then linear
            return c1 * (c2 / c1) ** t if c1 > 0 and c2 > 0 else c1 + (c2 - c1) * t
    return points[-1][1]


def choose_path(path: str, active: torch.Tensor, shape: tuple[int, int], dtype: torch.dtype, below: float) -> str:
    """`dense` or `sparse` for a batch whose activations z [B, d_sae] have `active` non-zeros (a 0-dim tensor; read
    on the host only when `path` is `auto` and `below`, the density under which auto goes sparse, is above 0)."""
    if path not in PATHS:
        raise ValueError(f"the SAE step path must be one of {', '.join(PATHS)} (got {path!r})")
    if path == "sparse" and dtype not in SPARSE_DTYPES:
        raise ValueError(f"the sparse SAE step computes in float32 or float64 only (got {dtype}): use auto or dense")
    if path != "auto":
        return path
    if dtype not in SPARSE_DTYPES or below <= 0:
        return "dense"
    return "sparse" if int(active) < below * shape[0] * shape[1] else "dense"


def sparse_flops_per_token(d_in: int, d_sae: int, density: float) -> float:
    """Multiply-adds x 2 of the sparse step per token: the dense encoder plus four products over the active pairs."""
    return 2 * d_in * d_sae * (1 + 4 * density)


# The largest z (B d_sae entries, one more than its largest flat index) whose pairs active_pairs indexes in 32 bits.
_INT32_INDICES_UP_TO = 2**31 - 1


class ActivePairs(NamedTuple):
    """The (token, latent) pairs of z [B, d_sae] that fired, in the two layouts the sparse products read."""

    by_token: torch.Tensor  # CSR [B, d_sae]: each token's latents, in latent order (the decoder's operand)
    by_latent: torch.Tensor  # CSR [d_sae, B]: each latent's tokens, in token order (the other three products')
    per_latent: torch.Tensor  # [d_sae] int64: how many tokens each latent fired on


def active_pairs(z: torch.Tensor, scan: torch.Tensor | None = None) -> ActivePairs:
    """z's non-zeros in both layouts, built from one pass over z (over `scan`, nonzero_scan(z), which the caller
    may have made already to count them).

    torch's own conversions (z.to_sparse_csr(), then .to_sparse_csc() for the latent-major copy) cost about 40 ms
    at 4,096 x 2,048 and 7% density on this CPU, a quarter of the sparse step then (benchmarks/sparse_parts.py
    times both). Here the flat indices of the non-zeros come in row-major order, which is the token-major CSR
    already; the latent-major one is the same pairs stably sorted by latent (a radix sort of the latent indices,
    which keeps each latent's tokens in order), with each latent's count for its row pointers. Same pairs, same order,
    same values as torch's conversions: the products that follow are unchanged to the bit
    (tests/test_sae_sparse.py).

    Indices are 32-bit whenever B d_sae fits (MKL's sparse products take 32-bit indices, and torch copies 64-bit
    ones down on every call); a power-of-two d_sae splits a flat index with a shift and a mask instead of a
    division. Each pair's token and value travel through the sort's permutation together, as one 64-bit word:
    one gather instead of two (index_select is a serial loop on the CPU)."""
    B, d_sae = z.shape
    flat = (nonzero_scan(z) if scan is None else scan).reshape(-1).nonzero().view(-1)  # row-major, [nnz] int64
    values = z.reshape(-1).index_select(0, flat)
    index_dtype = torch.int32 if B * d_sae <= _INT32_INDICES_UP_TO else torch.int64
    flat = flat.to(index_dtype)
    if d_sae & (d_sae - 1) == 0:
        tokens = flat >> (d_sae.bit_length() - 1)
        latents = flat.bitwise_and_(d_sae - 1)  # flat is not needed after this: its memory becomes the latents
    else:
        tokens = flat.div(d_sae, rounding_mode="floor")
        latents = flat.sub_(tokens * d_sae)
    by_token = torch.sparse_csr_tensor(
        _row_pointers(torch.bincount(tokens, minlength=B), index_dtype),
        latents,
        values,
        (B, d_sae),
        check_invariants=False,
    )
    order = torch.sort(latents, stable=True).indices
    per_latent = torch.bincount(latents, minlength=d_sae)
    by_latent = torch.sparse_csr_tensor(
        _row_pointers(per_latent, index_dtype),
        *_permuted_together(tokens, values, order),
        (d_sae, B),
        check_invariants=False,
    )
    return ActivePairs(by_token, by_latent, per_latent)


def _permuted_together(indices: torch.Tensor, values: torch.Tensor, order: torch.Tensor):
    """(indices[order], values[order]) with one gather where both are 32 bits wide: each (index, value bits) pair
    viewed as one 64-bit word."""
    if indices.element_size() != 4 or values.element_size() != 4:
        return indices.index_select(0, order), values.index_select(0, order)
    words = torch.stack([indices, values.view(indices.dtype)], dim=1).view(torch.int64).view(-1)
    pairs = words.index_select(0, order).view(indices.dtype).view(-1, 2)
    return pairs[:, 0].contiguous(), pairs[:, 1].contiguous().view(values.dtype)


def _row_pointers(counts: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A compressed tensor's row pointers ([n + 1], from 0, of `dtype`) from its rows' counts ([n])."""
    pointers = torch.zeros(counts.numel() + 1, dtype=dtype, device=counts.device)
    torch.cumsum(counts, 0, out=pointers[1:])
    return pointers


# Integers as wide as each float dtype, whose bit patterns nonzero_scan reads.
_BITS = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.bfloat16: torch.int16,
    torch.float16: torch.int16,
}


def nonzero_scan(z: torch.Tensor) -> torch.Tensor:
    """The tensor whose non-zeros are exactly z's and fastest to find: on the CPU z's bit patterns as integers of
    its width, else z. torch's count of a float tensor compares element by element (14-26 ms at 4096 x 2048 and
    15-30% density on 1 thread), while the integer scan is one vectorised read (2 ms); finding their positions is
    40% faster too. The two agree unless a sign bit is set: a negative zero (-0.0 == 0 but its bits are not 0;
    ReLU passes it through) or a negative NaN. z's minimum as an integer (one more read) says whether one is, and
    then z itself is scanned. The step makes it once and both counts the pairs and lists them with it."""
    bits_dtype = _BITS.get(z.dtype)
    if z.device.type != "cpu" or bits_dtype is None:
        return z
    bits = z.view(bits_dtype)
    if bits.numel() == 0 or bits.min() < 0:
        return z
    return bits


def decode_error(pairs: ActivePairs, W_dec: torch.Tensor, b_dec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x_hat - x = z W_dec + b_dec - x [B, d_in], over the active pairs."""
    return torch.addmm(b_dec, pairs.by_token, W_dec).sub_(x)


def decoder_grad(pairs: ActivePairs, g_err: torch.Tensor, out: torch.Tensor) -> None:
    """The W_dec gradient z^T g_err [d_sae, d_in] into out, one row per latent."""
    torch.mm(pairs.by_latent, g_err, out=out)


def latent_grad(pairs: ActivePairs, per_token: torch.Tensor, W_dec: torch.Tensor, g_err: torch.Tensor):
    """dLoss/dpre at the active pairs only (latent-major CSR [d_sae, B]): the L1 term (beta * input) plus
    W_dec[i] . g_err[t], a sampled product."""
    rows, tokens = pairs.by_latent.crow_indices(), pairs.by_latent.col_indices()
    l1_term = torch.sparse_csr_tensor(
        rows, tokens, per_token.to(W_dec.dtype).expand(tokens.numel()), pairs.by_latent.shape, check_invariants=False
    )
    return torch.sparse.sampled_addmm(l1_term, W_dec, g_err.T)


def encoder_grad(g_pre: torch.Tensor, xa: torch.Tensor, out: torch.Tensor) -> None:
    """The [W_enc | b_enc | 0...] gradient block [d_pad, d_sae] into out, made transposed then copied: xa's ones
    column gives b_enc's gradient, its zero columns zeros."""
    out.copy_(torch.mm(g_pre, xa).T)


@torch.no_grad()
def sparse_products(
    z: torch.Tensor,
    xa: torch.Tensor,
    x: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    per_token: torch.Tensor,
    g_enc_block: torch.Tensor,
    g_dec: torch.Tensor,
    scan: torch.Tensor | None = None,
):
    """The step after the encoder, over the active pairs of z [B, d_sae] (z >= 0, the ReLU's output).

    xa is the centred input with its ones column and zero padding ([B, d_pad], as in fused_backward), x the batch,
    per_token the L1 term's gradient per active pair (lambda / B, or lambda / (B d_sae) for the `mean` form).
    Writes the W_dec gradient into g_dec and the [W_enc | b_enc | 0...] gradient block into g_enc_block; returns
    (g_err = dLoss/dx_hat [B, d_in], the MSE, the sum of z over the batch, which latents fired [d_sae] bool).
    `scan`: nonzero_scan(z), if the caller has it."""
    B, d_in = x.shape
    pairs = active_pairs(z, scan)
    err = decode_error(pairs, W_dec, b_dec, x)
    mse = err.float().square().mean()
    g_err = err.mul_(2.0 / (B * d_in))  # dLoss/dx_hat
    decoder_grad(pairs, g_err, g_dec)
    encoder_grad(latent_grad(pairs, per_token, W_dec, g_err), xa, g_enc_block)
    return g_err, mse, pairs.by_token.values().sum(dtype=torch.float32), pairs.per_latent > 0
