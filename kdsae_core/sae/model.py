"""The sparse autoencoder of Experiment 2 (book/methods.md), its loss, the trials and their L1 controllers.

Parameterisation (SAELens "standard"): z = ReLU((x - b_dec) W_enc + b_enc), x_hat = z W_dec + b_dec,
W_enc [d_in, d_sae], W_dec [d_sae, d_in], decoder rows at unit norm after every step.
Loss = MSE (mean over tokens and dimensions) + lambda * L1, where L1 is `sum` (sum over latents of |z|,
mean over tokens: the paper-exact form) or `mean` (the sum form divided by d_sae). `sae_loss` computes it
through autograd: the reference the hand-written training step (kdsae_core.sae.step) is tested against.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from kdsae_core.common.errors import InvalidParameter

L1_FORMS = ("sum", "mean")
LAMBDA_BOUNDS = (1e-8, 1.0)  # the adaptive controller keeps lambda inside these
PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")  # SAELens' names, also our safetensors keys
_NORMALIZE_BLOCK_BYTES = 1 << 20  # rows per block of the CPU decoder renormalisation (fits in L2)


# ---- the trials -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialSpec:
    """One L1 regime: a fixed coefficient, or a start value driven towards a target mean L0."""

    name: str
    l1_coeff: float
    l1_form: str
    controller: str = "fixed"  # fixed | target_l0
    target_l0: float | None = None
    rate: float = 0.01  # controller gain: lambda <- lambda * exp(rate * e), e = (L0_ema - T) / T
    ema: float = 0.99  # controller smoothing: L0_ema <- ema * L0_ema + (1 - ema) * L0
    # e is clipped to [-error_bound, error_bound] (None: unclipped). L0_ema >= 0 already bounds e below by -1; the
    # default bound 1 makes the law symmetric, so lambda moves at most 1% per step either way. Unclipped, an SAE
    # that starts far above its target (L0 ~ 1,000 of 2,048 latents against T = 150) winds lambda up 6% a step
    # for the ~100 steps the EMA lags, overshoots, and its latents all die: the embedded run's layers reached
    # L0 = 0 by step 300 with lambda ~ 0.3 and never recovered (see the trial C chapter).
    error_bound: float | None = 1.0

    def validate(self) -> None:
        if self.l1_form not in L1_FORMS:
            raise InvalidParameter(
                f"trial {self.name}: the L1 form must be one of {', '.join(L1_FORMS)} (got {self.l1_form!r})."
            )
        if not (math.isfinite(self.l1_coeff) and self.l1_coeff >= 0):
            raise InvalidParameter(
                f"trial {self.name}: the L1 coefficient must be finite and >= 0 (got {self.l1_coeff!r})."
            )
        if self.controller not in ("fixed", "target_l0"):
            raise InvalidParameter(
                f"trial {self.name}: controller must be fixed or target_l0 (got {self.controller!r})."
            )
        if self.controller == "target_l0":
            if self.target_l0 is None or not (math.isfinite(self.target_l0) and self.target_l0 > 0):
                raise InvalidParameter(
                    f"trial {self.name}: the target L0 must be a positive number (got {self.target_l0!r})."
                )
            if not LAMBDA_BOUNDS[0] <= self.l1_coeff <= LAMBDA_BOUNDS[1]:
                raise InvalidParameter(f"trial {self.name}: the starting lambda must lie in {LAMBDA_BOUNDS}.")
            if not (0 < self.rate <= 1 and 0 <= self.ema < 1):
                raise InvalidParameter(f"trial {self.name}: controller rate must be in (0, 1] and ema in [0, 1).")
            if self.error_bound is not None and not (math.isfinite(self.error_bound) and self.error_bound > 0):
                raise InvalidParameter(f"trial {self.name}: the controller's error bound must be positive or None.")

    def to_json(self) -> dict:
        return asdict(self)


TRIAL_NAMES = ("A", "B", "C")


def paper_trials(target_l0: float = 150.0) -> dict[str, TrialSpec]:
    """The three trials of the paper (book/methods.md)."""
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
    (the first step sets L0_ema = L0), then lambda <- clamp(lambda exp(rate e), 1e-8, 1) with the relative error
    e = clip((L0_ema - T) / T, -error_bound, error_bound) (TrialSpec.error_bound; None leaves e unclipped).
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
        bound = 1e3 if s.error_bound is None else s.error_bound  # 1e3: no overflow in exp when unclipped
        rel = ((self.l0_ema - s.target_l0) / s.target_l0).clamp(-bound, bound)
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
        """Decoder rows random at unit norm, W_enc = W_dec^T, biases zero (book/methods.md). Drawn on the
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
        """Decoder rows to unit norm. On the CPU in blocks of rows that stay in cache between the norm and the
        division, so each weight is read from memory once (per-row results are the same for any block size)."""
        W = self.W_dec
        if W.device.type != "cpu":
            W.div_(torch.linalg.vector_norm(W, dim=1, keepdim=True).clamp_min_(1e-12))
            return
        rows = max(1, _NORMALIZE_BLOCK_BYTES // max(1, W.shape[1] * W.element_size()))
        for block in W.split(rows):
            block.div_(torch.linalg.vector_norm(block, dim=1, keepdim=True).clamp_min_(1e-12))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, n).detach() for n in PARAM_NAMES}

    @torch.no_grad()
    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for n in PARAM_NAMES:
            p = getattr(self, n)
            t = tensors[n]
            if tuple(t.shape) != tuple(p.shape):
                raise InvalidParameter(
                    f"{n} has shape {tuple(t.shape)}, this SAE needs {tuple(p.shape)} "
                    f"(d_in {self.d_in}, d_sae {self.d_sae})."
                )
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


def allow_tf32_on_cuda(enabled: bool = True) -> None:
    """TF32 for fp32 matrix products on CUDA GPUs (about 8x the fp32 rate on an H100, 10-bit mantissa
    products). CUDA only: CPU results stay exact and deterministic."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
