"""The sparse autoencoder of Experiment 2 (DESIGN.md section 4), its loss, the training step and the L1
controllers.

Parameterisation (SAELens "standard"): z = ReLU((x - b_dec) W_enc + b_enc), x_hat = z W_dec + b_dec,
W_enc [d_in, d_sae], W_dec [d_sae, d_in], decoder rows at unit norm after every step.
Loss = MSE (mean over tokens and dimensions) + lambda * L1, where L1 is `sum` (sum over latents of |z|,
mean over tokens: the paper-exact form) or `mean` (the sum form divided by d_sae).

`fused_backward` writes the exact gradients of that loss by hand: no input gradient, no autograd graph, the
L1 term and the ReLU mask folded into one pass over the [batch, d_sae] activations (`sae_loss` is the
autograd reference the tests compare it with).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .errors import InvalidParameter

L1_FORMS = ("sum", "mean")
LAMBDA_BOUNDS = (1e-8, 1.0)  # the adaptive controller keeps lambda inside these
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")  # SAELens' names, also our safetensors keys


# ---- the trials -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialSpec:
    """One L1 regime: a fixed coefficient, or a start value driven towards a target mean L0."""

    name: str
    l1_coeff: float
    l1_form: str
    controller: str = "fixed"  # fixed | target_l0
    target_l0: float | None = None
    rate: float = 0.01  # controller gain: lambda <- lambda * exp(rate * (L0_ema - T) / T)
    ema: float = 0.99  # controller smoothing: L0_ema <- ema * L0_ema + (1 - ema) * L0

    def validate(self) -> None:
        if self.l1_form not in L1_FORMS:
            raise InvalidParameter(f"trial {self.name}: the L1 form must be one of {', '.join(L1_FORMS)} "
                                   f"(got {self.l1_form!r}).")
        if not (math.isfinite(self.l1_coeff) and self.l1_coeff >= 0):
            raise InvalidParameter(f"trial {self.name}: the L1 coefficient must be finite and >= 0 (got {self.l1_coeff!r}).")
        if self.controller not in ("fixed", "target_l0"):
            raise InvalidParameter(f"trial {self.name}: controller must be fixed or target_l0 (got {self.controller!r}).")
        if self.controller == "target_l0":
            if self.target_l0 is None or not (math.isfinite(self.target_l0) and self.target_l0 > 0):
                raise InvalidParameter(f"trial {self.name}: the target L0 must be a positive number (got {self.target_l0!r}).")
            if not LAMBDA_BOUNDS[0] <= self.l1_coeff <= LAMBDA_BOUNDS[1]:
                raise InvalidParameter(f"trial {self.name}: the starting lambda must lie in {LAMBDA_BOUNDS}.")
            if not (0 < self.rate <= 1 and 0 <= self.ema < 1):
                raise InvalidParameter(f"trial {self.name}: controller rate must be in (0, 1] and ema in [0, 1).")

    def to_json(self) -> dict:
        return asdict(self)


def paper_trials(target_l0: float = 150.0) -> dict[str, TrialSpec]:
    """The three trials of the paper (DESIGN.md section 4)."""
    return {
        "A": TrialSpec("A", 3e-4, "mean"),
        "B": TrialSpec("B", 8e-5, "sum"),
        "C": TrialSpec("C", 5e-4, "sum", controller="target_l0", target_l0=float(target_l0)),
    }


def pilot_trial(l1_coeff: float) -> TrialSpec:
    """A pilot coefficient in trial A's `mean` form, named like `P7e-04`."""
    return TrialSpec(f"P{l1_coeff:.0e}", float(l1_coeff), "mean")


def trial_from_json(d: dict) -> TrialSpec:
    spec = TrialSpec(**{k: d[k] for k in TrialSpec.__dataclass_fields__ if k in d})
    spec.validate()
    return spec


# ---- L1 controllers -----------------------------------------------------------------------------------
class L1Controller:
    """lambda for one SAE, as a 0-dim float64 tensor on the SAE's device (no host round-trip per step).

    Fixed: lambda never changes. Target L0 (trial C): after every step, L0_ema <- ema L0_ema + (1 - ema) L0
    (the first step sets L0_ema = L0), then lambda <- clamp(lambda exp(rate (L0_ema - T) / T), 1e-8, 1).
    A NaN L0 leaves lambda unchanged (the trainer stops the run on a non-finite loss before that matters).
    """

    def __init__(self, spec: TrialSpec, device: torch.device | str = "cpu"):
        self.spec = spec
        self.lam = torch.tensor(spec.l1_coeff, dtype=torch.float64, device=device)
        self.l0_ema = torch.tensor(float("nan"), dtype=torch.float64, device=device)

    @property
    def adaptive(self) -> bool:
        return self.spec.controller == "target_l0"

    @torch.no_grad()
    def update(self, l0: torch.Tensor) -> None:
        if not self.adaptive:
            return
        s = self.spec
        l0 = l0.to(torch.float64)
        ok = torch.isfinite(l0)
        first = torch.isnan(self.l0_ema)
        ema = torch.where(first, l0, s.ema * self.l0_ema + (1 - s.ema) * l0)
        self.l0_ema = torch.where(ok, ema, self.l0_ema)
        rel = ((self.l0_ema - s.target_l0) / s.target_l0).clamp(-1e3, 1e3)  # no overflow in exp
        new = (self.lam * torch.exp(s.rate * rel)).clamp(*LAMBDA_BOUNDS)
        self.lam = torch.where(ok & torch.isfinite(new), new, self.lam)

    def state(self) -> dict[str, torch.Tensor]:
        return {"lambda": self.lam.detach().cpu().reshape(1), "l0_ema": self.l0_ema.detach().cpu().reshape(1)}

    def load_state(self, st: dict[str, torch.Tensor]) -> None:
        self.lam = st["lambda"].reshape(()).to(torch.float64).to(self.lam.device)
        self.l0_ema = st["l0_ema"].reshape(()).to(torch.float64).to(self.lam.device)


# ---- the SAE --------------------------------------------------------------------------------------------
class SAE(nn.Module):
    """SAELens "standard" SAE. Parameters are named as in SAELens (W_enc, b_enc, W_dec, b_dec)."""

    def __init__(self, d_in: int, d_sae: int, device: torch.device | str = "cpu", dtype=torch.float32):
        super().__init__()
        if d_in < 1 or d_sae < 1:
            raise InvalidParameter(f"SAE shapes must be positive (got d_in={d_in}, d_sae={d_sae}).")
        self.d_in, self.d_sae = int(d_in), int(d_sae)
        kw = dict(device=device, dtype=dtype)
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae, **kw))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, **kw))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in, **kw))
        self.b_dec = nn.Parameter(torch.zeros(d_in, **kw))

    @classmethod
    def initialised(cls, d_in: int, d_sae: int, seed: int, device="cpu") -> "SAE":
        """Decoder rows random at unit norm, W_enc = W_dec^T, biases zero (DESIGN.md section 4). Drawn on the
        CPU from `seed`, so every device starts from the same weights."""
        g = torch.Generator().manual_seed(int(seed))
        w = torch.randn(d_sae, d_in, generator=g)
        w /= w.norm(dim=1, keepdim=True)
        sae = cls(d_in, d_sae, device=device)
        with torch.no_grad():
            sae.W_dec.copy_(w)
            sae.W_enc.copy_(w.T)
        return sae

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        self.W_dec.div_(torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True).clamp_min(1e-12))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, n).detach() for n in PARAM_NAMES}

    @torch.no_grad()
    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for n in PARAM_NAMES:
            p = getattr(self, n)
            t = tensors[n]
            if tuple(t.shape) != tuple(p.shape):
                raise InvalidParameter(f"{n} has shape {tuple(t.shape)}, this SAE needs {tuple(p.shape)} "
                                       f"(d_in {self.d_in}, d_sae {self.d_sae}).")
            p.copy_(t)


def l1_penalty(z: torch.Tensor, form: str) -> torch.Tensor:
    s = z.abs().sum(-1).mean()
    return s if form == "sum" else s / z.shape[-1]


def sae_loss(sae: SAE, x: torch.Tensor, l1_coeff: float, form: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, mse, l1) through autograd: the reference the hand-written step must agree with."""
    z = sae.encode(x)
    mse = (sae.decode(z) - x).pow(2).mean()
    l1 = l1_penalty(z, form)
    return mse + l1_coeff * l1, mse, l1


@dataclass
class StepStats:
    """Per-step quantities, left on the device until they are logged."""

    mse: torch.Tensor
    l1: torch.Tensor
    loss: torch.Tensor
    l0: torch.Tensor
    fired: torch.Tensor  # [d_sae] bool: latents active on at least one token of the batch


@torch.no_grad()
def fused_backward(sae: SAE, x: torch.Tensor, lam: torch.Tensor | float, form: str,
                   compute_dtype: torch.dtype | None = None) -> StepStats:
    """Set `.grad` of every SAE parameter to the exact gradient of MSE + lam * L1 on the batch x [B, d_in].

    Five matrix products (encoder, decoder, two weight gradients, the latent gradient): 10 d_in d_sae FLOPs
    per token, no gradient with respect to x. b_dec enters the encoder as a bias correction, so its
    gradient needs no [B, d_in] product.
    """
    B = x.shape[0]
    cd = compute_dtype or sae.W_enc.dtype
    W_enc, b_enc, W_dec, b_dec = (t.to(cd) for t in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    x = x.to(cd)
    xc = x - b_dec
    z = torch.addmm(b_enc, xc, W_enc).relu_()                      # [B, d_sae]
    err = torch.addmm(b_dec, z, W_dec).sub_(x)                      # x_hat - x, [B, d_in]
    counts = torch.count_nonzero(z, dim=0)                          # per-latent firing count
    mse = err.float().square().mean()
    l1 = z.float().sum() / B
    if form == "mean":
        l1 = l1 / sae.d_sae
    lam_t = torch.as_tensor(lam, dtype=torch.float32, device=z.device)
    per_token = lam_t / (B if form == "sum" else B * sae.d_sae)
    g_err = err.mul_(2.0 / (B * sae.d_in))                          # dLoss/dx_hat
    sae.W_dec.grad = (z.T @ g_err).to(sae.W_dec.dtype)
    g_dec_bias = g_err.sum(0)
    # dLoss/dpre = (g_err W_dec^T + lam/B) masked by z > 0: the L1 term rides in the matmul's bias.
    bias = per_token.to(cd).expand(sae.d_sae)
    g_pre = torch.ops.aten.threshold_backward(torch.addmm(bias, g_err, W_dec.T), z, 0)
    sae.W_enc.grad = (xc.T @ g_pre).to(sae.W_enc.dtype)
    g_enc_bias = g_pre.sum(0)
    sae.b_enc.grad = g_enc_bias.to(sae.b_enc.dtype)
    sae.b_dec.grad = (g_dec_bias - W_enc @ g_enc_bias).to(sae.b_dec.dtype)
    l0 = counts.sum().float() / B
    return StepStats(mse=mse, l1=l1, loss=mse + lam_t * l1, l0=l0, fired=counts > 0)


class SAEUnit:
    """One SAE of a run (a trial at a layer) with its optimizer, its controller and its firing record."""

    def __init__(self, trial: TrialSpec, layer: int, d_in: int, d_sae: int, seed: int, lr: float,
                 grad_clip: float, device="cpu", compute_dtype: torch.dtype | None = None):
        trial.validate()
        self.trial, self.layer, self.lr, self.grad_clip = trial, int(layer), float(lr), float(grad_clip)
        self.compute_dtype = compute_dtype
        self.sae = SAE.initialised(d_in, d_sae, seed, device=device)
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS,
                                    fused=_fused_adam_ok(device))
        self.controller = L1Controller(trial, device)
        self.last_fired = torch.full((d_sae,), -1, dtype=torch.int64, device=device)  # step a latent last fired
        self.steps = 0

    @property
    def key(self) -> str:
        return f"{self.trial.name}/layer{self.layer:02d}"

    def step(self, x: torch.Tensor) -> StepStats:
        lam = self.controller.lam
        stats = fused_backward(self.sae, x, lam, self.trial.l1_form, self.compute_dtype)
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.sae.parameters(), self.grad_clip, foreach=True)
        self.opt.step()
        self.sae.normalize_decoder_()
        self.controller.update(stats.l0)
        self.last_fired[stats.fired] = self.steps
        self.steps += 1
        return stats

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
                self.opt.state[p] = {"step": st[f"adam.{n}.step"].reshape(()).clone().to(dev if self.opt.defaults.get("fused") else "cpu"),
                                     "exp_avg": st[f"adam.{n}.exp_avg"].to(dev).clone(),
                                     "exp_avg_sq": st[f"adam.{n}.exp_avg_sq"].to(dev).clone()}
        self.controller.load_state({"lambda": st["controller.lambda"], "l0_ema": st["controller.l0_ema"]})
        self.last_fired = st["last_fired"].to(dev).clone()
        self.steps = int(st["steps"][0])


def _fused_adam_ok(device) -> bool:
    # Fused Adam is one pass over each parameter (4.6x faster than foreach at the paper shape on CPU).
    return torch.device(device).type in ("cpu", "cuda")
