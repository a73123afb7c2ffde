"""One toy model trained the textbook way: autograd and torch.optim.Adam, one model per program.

This is how the toy sweep is usually written (and what "about 1 ms per step for one small model" in the
performance issue measured). `benchmarks/toy_sweep.py` times it as the one-at-a-time baseline, and the
tests check that it trains exactly like one model of the batched `toy.Block`, so the comparison is between
two programs that compute the same thing.
"""

from __future__ import annotations

import torch

from kdsae_core.common.adam import ADAM_BETAS, ADAM_EPS


class AutogradModel:
    """x_hat = ReLU(W^T W x + b) with W [d, n], trained on sum_i I_i (y_i - x_hat_i)^2 (mean over samples)."""

    def __init__(self, W: torch.Tensor, importance: torch.Tensor):
        d, n = W.shape
        self.W = torch.nn.Parameter(W.clone())
        self.b = torch.nn.Parameter(torch.zeros(n))
        self.importance = importance.to(torch.float32)
        self.opt = torch.optim.Adam([self.W, self.b], lr=1.0, betas=ADAM_BETAS, eps=ADAM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, n] -> x_hat [B, n]."""
        return torch.relu((x @ self.W.T) @ self.W + self.b)

    def step(self, x: torch.Tensor, y: torch.Tensor | None, lr: float) -> None:
        """One Adam step against y [B, n] (None: reconstruct x)."""
        target = x if y is None else y
        loss = ((self.forward(x) - target).square() * self.importance).sum(-1).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
