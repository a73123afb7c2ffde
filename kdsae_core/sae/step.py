"""One training step of an SAE: `fused_backward` and `SAEUnit` (an SAE with its optimizer, L1 controller and
firing record).

`fused_backward` writes the exact gradients of the loss (kdsae_core.sae.model) by hand: no input gradient, no
autograd graph, the L1 term and the ReLU mask folded into one pass over the [batch, d_sae] activations
(`sae_loss` is the autograd reference the tests compare it with). The per-step work besides the five matrix products
is a few
memory-bound passes over [batch, d_sae] (benchmarks/sae_step.py measures what they cost): the encoder bias
gradient rides in the last product, per-latent sums are a matrix-vector product, the gradients are written
into the same buffers every step, gradient clipping is folded into fused Adam, and the decoder renormalisation
reads each weight from memory once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdsae_core.common.adam import ADAM_BETAS, ADAM_EPS
from kdsae_core.sae import sparse as sae_sparse
from kdsae_core.sae.model import PARAM_NAMES, SAE, L1Controller, TrialSpec

_ALIGN = 8  # the centred input's width (d_in + its ones column) is padded with zeros to a multiple of this
# ... and its rows start every _ROW_ALIGN elements (64 bytes in fp32, a cache line): MKL's sparse product for the W_enc
# gradient is 20% slower on rows 392 floats apart than 400 (384 x 2,048, batch 4,096); the dense products do not
# change, to the bit
_ROW_ALIGN = 16


@dataclass
class StepStats:
    """Per-step quantities, left on the device until they are logged."""

    mse: torch.Tensor
    l1: torch.Tensor
    loss: torch.Tensor
    l0: torch.Tensor
    fired: torch.Tensor  # [d_sae] bool: latents active on at least one token of the batch
    path: str = "dense"  # which step computed the gradients: dense or sparse (kdsae_core.sae.sparse)


@torch.no_grad()
def fused_backward(
    sae: SAE,
    x: torch.Tensor,
    lam: torch.Tensor | float,
    form: str,
    compute_dtype: torch.dtype | None = None,
    path: str = "dense",
    sparse_below: float | None = None,
) -> StepStats:
    """Set `.grad` of every SAE parameter to the exact gradient of MSE + lam * L1 on the batch x [B, d_in].

    `path`: `dense` (the five products below), `sparse` (after the encoder, only the active (token, latent) pairs:
    kdsae_core.sae.sparse) or `auto` (sparse while the batch's density is below `sparse_below`, by default the
    crossover measured for this shape and device, sae_sparse.sparse_below_density); StepStats.path says which
    ran. Both write the same gradients into the same buffers.

    Dense: five matrix products (encoder, decoder, two weight gradients, the latent gradient): 10 d_in d_sae
    FLOPs per token, no gradient with respect to x. b_dec enters the encoder as a bias correction, so its
    gradient needs no [B, d_in] product; b_enc's gradient is one more row of the W_enc-gradient product
    (the centred input carries a column of ones, padded to an aligned width). Besides the products, the [B, d_sae]
    activations are
    touched by: the ReLU (fused into the encoder product on CUDA), the L0 count (which also chooses the path),
    one matrix-vector product for the per-latent sums (L1 and which latents fired) and the masked latent
    gradient (written in place). The gradients are written into the same buffers every step (views of one block
    for W_enc and b_enc), so no gradient memory is allocated after the first step.
    """
    B = x.shape[0]
    d_in, d_sae = sae.d_in, sae.d_sae
    pd = sae.W_enc.dtype
    cd = compute_dtype or pd
    W_enc, b_enc, W_dec, b_dec = (t.detach().to(cd) for t in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    x = x.to(cd)
    g_enc_block, g_dec, g_b_dec = _grad_buffers(sae)
    xa = _augmented_input(x, b_dec, d_in)
    z = _addmm_relu(b_enc, xa[:, :d_in], W_enc)  # [B, d_sae]
    scan = sae_sparse.nonzero_scan(z)  # z's non-zeros, fastest to count and to list
    active = torch.count_nonzero(scan)  # L0, and the density that picks the path
    if sparse_below is None:
        sparse_below = sae_sparse.sparse_below_density(d_in, d_sae, z.device.type)
    chosen = sae_sparse.choose_path(path, active, (B, d_sae), cd, sparse_below)
    lam64, per_token64, l1_apart, per_token = _l1_per_token(lam, form, B, d_sae, cd, z.device)
    if chosen == "sparse":
        g_err, mse, z_sum, fired = sae_sparse.sparse_products(
            z, xa, x, W_dec, b_dec, per_token, g_enc_block, g_dec, scan
        )
    else:
        g_err, mse, z_sum, fired = _dense_products(z, xa, x, W_dec, b_dec, per_token, g_enc_block, g_dec)
    if l1_apart:  # + per_token [x - b_dec | 1]^T mask in fp32: one more product (+20% of the dense step's FLOPs)
        # z is no longer needed by either path: its signs (0 or 1, as z >= 0) become the mask in place
        g_enc_block.addcmul_((xa.T @ z.sign_()).float(), per_token64.float())
    l1 = z_sum / B
    if form == "mean":
        l1 = l1 / d_sae
    g_enc_bias = g_enc_block[d_in].to(cd)
    g_b_dec.copy_(g_err.sum(0) - torch.mv(W_enc, g_enc_bias))
    # a count of at most B d_sae is exact in float64; rounded to float32 as the logged L0 always was
    l0 = active.to(torch.float64).float() / B
    return StepStats(mse=mse, l1=l1, loss=mse + lam64.float() * l1, l0=l0, fired=fired, path=chosen)


def _augmented_input(x: torch.Tensor, b_dec: torch.Tensor, d_in: int) -> torch.Tensor:
    """[x - b_dec | 1 | 0...] in x's dtype: the ones column makes the last product give b_enc's gradient too; zero
    columns pad the rows to a multiple of _ALIGN elements (aligned operands for the matrix libraries), and the rows
    lie _ROW_ALIGN-aligned in memory (a view of a wider buffer)."""
    width = _padded(d_in)
    rows = torch.empty(x.shape[0], _padded(d_in, _ROW_ALIGN), dtype=x.dtype, device=x.device)
    xa = rows[:, :width]
    torch.sub(x, b_dec, out=xa[:, :d_in])
    xa[:, d_in] = 1
    xa[:, d_in + 1 :] = 0
    return xa


def _l1_per_token(lam, form: str, B: int, d_sae: int, cd: torch.dtype, device):
    """The L1 term's weight: (lam and its per-token share in float64, whether the share is added apart in fp32, the
    share each path's products use, rounded once to the compute dtype).

    In bf16 the `mean` form's per-token term (lam / (B d_sae), ~3e-13 at the paper's shape) is ~1e-5 of the MSE
    gradient it would be added to and rounds away; it is then added separately, exactly, in fp32 (fused_backward),
    and both paths' products get a zero L1 term."""
    lam64 = torch.as_tensor(lam, dtype=torch.float64, device=device)
    per_token64 = lam64 / (B if form == "sum" else B * d_sae)
    l1_apart = form == "mean" and cd not in (torch.float32, torch.float64)
    per_token = (per_token64 * (not l1_apart)).to(cd)
    return lam64, per_token64, l1_apart, per_token


def _dense_products(z, xa, x, W_dec, b_dec, per_token, g_enc_block, g_dec):
    """The dense step after the encoder (see fused_backward); the same contract as sae_sparse.sparse_products."""
    B, d_in = x.shape
    d_sae = z.shape[1]
    cd = z.dtype
    err = torch.addmm(b_dec, z, W_dec).sub_(x)  # x_hat - x, [B, d_in]
    mse = err.float().square().mean()
    # Per-latent sums of z >= 0: the L1 term, and a latent fired on the batch iff its sum is > 0.
    colsum = (
        torch.mv(z.T, z.new_ones(B)) if cd in (torch.float32, torch.float64) else z.sum(0, dtype=torch.float32)
    ).float()
    g_err = err.mul_(2.0 / (B * d_in))  # dLoss/dx_hat
    _mm_into(g_dec, z.T, g_err)  # W_dec gradient
    # dLoss/dpre = (g_err W_dec^T + lam/B) masked by z > 0: the L1 term rides in the matmul's bias (a contiguous
    # vector, which CUDA adds in the matmul's epilogue), the mask is applied in place.
    g_pre = torch.addmm(per_token.expand(d_sae).contiguous(), g_err, W_dec.T)
    torch.ops.aten.threshold_backward.grad_input(g_pre, z, 0, grad_input=g_pre)
    _mm_into(g_enc_block, xa.T, g_pre)  # [W_enc | b_enc | 0...] gradient
    return g_err, mse, colsum.sum(), colsum > 0


def _addmm_relu(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """relu(bias + a @ b): on CUDA the ReLU runs in the matmul's epilogue; elsewhere addmm then relu_."""
    if bias.device.type == "cuda":
        return torch._addmm_activation(bias, a, b)
    return torch.addmm(bias, a, b).relu_()


def _padded(d_in: int, align: int = _ALIGN) -> int:
    """d_in + 1 rounded up to a multiple of `align`."""
    return -(-(d_in + 1) // align) * align


def _mm_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dtype == out.dtype:
        torch.mm(a, b, out=out)
    else:
        out.copy_(a @ b)


def _grad_buffers(sae: SAE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradient buffers of an SAE, created once and kept as its parameters' `.grad`:
    ([_padded(d_in), d_sae] block whose first d_in rows are W_enc.grad and whose next row is b_enc.grad (the
    remaining rows are zero), W_dec.grad, b_dec.grad).
    Recreated when something else has replaced or cleared a `.grad` (autograd, zero_grad(set_to_none=True))."""
    cached = getattr(sae, "_grad_block", None)
    params = (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)
    if cached is not None and all(p.grad is g for p, g in zip(params, cached[1])):
        return cached[0]
    kw = dict(dtype=sae.W_enc.dtype, device=sae.W_enc.device)
    block = torch.empty(_padded(sae.d_in), sae.d_sae, **kw)
    g_dec = torch.empty(sae.d_sae, sae.d_in, **kw)
    g_b_dec = torch.empty(sae.d_in, **kw)
    views = (block[: sae.d_in], block[sae.d_in], g_dec, g_b_dec)
    for p, g in zip(params, views):
        p.grad = g
    object.__setattr__(sae, "_grad_block", ((block, g_dec, g_b_dec), views))
    return block, g_dec, g_b_dec


class SAEUnit:
    """One SAE of a run (a trial at a layer) with its optimizer, its controller and its firing record."""

    def __init__(
        self,
        trial: TrialSpec,
        layer: int,
        d_in: int,
        d_sae: int,
        seed: int,
        lr: float,
        grad_clip: float,
        device="cpu",
        compute_dtype: torch.dtype | None = None,
        step_path: str = "auto",
    ):
        trial.validate()
        self.trial, self.layer, self.lr, self.grad_clip = trial, int(layer), float(lr), float(grad_clip)
        self.compute_dtype = compute_dtype
        self.step_path = step_path  # auto | dense | sparse (fused_backward); auto picks per batch
        # the density under which auto goes sparse; a resumed run sets the one it started with (its config.json)
        self.sparse_below = sae_sparse.sparse_below_density(d_in, d_sae, torch.device(device).type)
        self.sae = SAE.initialised(d_in, d_sae, seed, device=device)
        self.opt = torch.optim.Adam(
            self.sae.parameters(), lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, fused=_fused_adam_ok(device)
        )
        self.controller = L1Controller(trial, device)
        self.last_fired = torch.full((d_sae,), -1, dtype=torch.int64, device=device)  # step a latent last fired
        self.steps = 0

    @property
    def key(self) -> str:
        return f"{self.trial.name}/layer{self.layer:02d}"

    def step(self, x: torch.Tensor) -> StepStats:
        lam = self.controller.lam
        stats = fused_backward(
            self.sae, x, lam, self.trial.l1_form, self.compute_dtype, self.step_path, self.sparse_below
        )
        if self.grad_clip > 0:
            self._clip_gradients()
        self.opt.step()
        self.sae.normalize_decoder_()
        self.controller.update(stats.l0)
        self.last_fired.masked_fill_(stats.fired, self.steps)  # no host sync (a boolean index would need one)
        self.steps += 1
        return stats

    def _clip_gradients(self) -> None:
        """clip_grad_norm_(max_norm=grad_clip): the same coefficient, min(1, clip / (norm + 1e-6)). With fused
        Adam the scaling is folded into the optimizer's own pass over the gradients (its `grad_scale`, which
        divides them), instead of a separate pass that multiplies every gradient."""
        grads = [p.grad for p in self.sae.parameters()]
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        if self.opt.defaults.get("fused"):
            self.opt.grad_scale = ((norm + 1e-6) / self.grad_clip).clamp_(min=1.0)
        else:
            torch.nn.utils.clip_grads_with_norm_(grads, self.grad_clip, norm, foreach=True)

    def alive_fraction(self, window_steps: int) -> torch.Tensor:
        return (self.last_fired >= self.steps - window_steps).float().mean()

    # -- resumable state (tensors only, so it fits in one safetensors file) -------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        out = {f"param.{n}": t.cpu().contiguous() for n, t in self.sae.tensors().items()}
        for n, p in zip(PARAM_NAMES, self.sae.parameters()):
            st = self.opt.state.get(p, {})
            if st:
                out[f"adam.{n}.exp_avg"] = st["exp_avg"].cpu().contiguous()
                out[f"adam.{n}.exp_avg_sq"] = st["exp_avg_sq"].cpu().contiguous()
                out[f"adam.{n}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1).cpu()
        out.update({f"controller.{k}": v for k, v in self.controller.state().items()})
        out["last_fired"] = self.last_fired.cpu()
        out["steps"] = torch.tensor([self.steps], dtype=torch.int64)
        return out

    def load_state(self, st: dict[str, torch.Tensor]) -> None:
        dev = self.sae.W_enc.device
        self.sae.load_tensors({n: st[f"param.{n}"] for n in PARAM_NAMES})
        for n, p in zip(PARAM_NAMES, self.sae.parameters()):
            if f"adam.{n}.exp_avg" in st:
                self.opt.state[p] = {
                    "step": st[f"adam.{n}.step"]
                    .reshape(())
                    .clone()
                    .to(dev if self.opt.defaults.get("fused") else "cpu"),
                    "exp_avg": st[f"adam.{n}.exp_avg"].to(dev).clone(),
                    "exp_avg_sq": st[f"adam.{n}.exp_avg_sq"].to(dev).clone(),
                }
        self.controller.load_state({"lambda": st["controller.lambda"], "l0_ema": st["controller.l0_ema"]})
        self.last_fired = st["last_fired"].to(dev).clone()
        self.steps = int(st["steps"][0])


def _fused_adam_ok(device) -> bool:
    # Fused Adam is one pass over each parameter (4.6x faster than foreach at the paper shape on CPU).
    return torch.device(device).type in ("cpu", "cuda")
