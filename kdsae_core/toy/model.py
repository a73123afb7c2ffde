"""Elhage et al. (2022) toy model of superposition, trained as many models at once.

Model: x_hat = ReLU(W^T W x + b), W in R^{d x n}; loss = mean over samples of sum_i I_i (y_i - x_hat_i)^2,
with y = x (task) or y = the teacher's output (distillation).

A `Block` holds every model that shares the feature count n and the padded width d, laid out as
[A, S, K, d, n]: A sparsity levels (each with its own data stream, shared by the block), S seeds and
K widths per seed. Rows of W beyond a model's width start at zero and provably stay zero (their
gradient and Adam update are exactly zero), so padding does not change any model. Forward and backward
are written out by hand: autograd would keep more [models, batch, n] buffers alive, and this program is
bound by memory traffic over those buffers.
"""

from __future__ import annotations

import math

import torch

from kdsae_core.common.adam import ADAM_BETAS, ADAM_EPS
from kdsae_core.common.errors import InvalidParameter
from kdsae_core.common.seeding import stream_seed

CACHE_BYTES = 12 << 20  # working set per chunk: well inside a 32 MiB L3, leaving room for the rest


class Workspace:
    """Reused scratch memory for the [models, batch, n] results of a step, one flat buffer per role.

    Allocating those results afresh (megabytes each, hundreds of times per step) sends glibc to mmap and the
    kernel to fault in and zero new pages every time: a third of the student step on these machines under
    glibc's default settings. The Makefile's MALLOC_ settings avoid it for `make` runs; this makes every caller
    (kdsae toy run directly, notebooks, tests) as fast. Buffers only grow; views are handed out, so a caller
    must be done with one before asking for the same role again."""

    def __init__(self):
        self._flat: dict[str, torch.Tensor] = {}

    def get(self, role: str, *shape: int) -> torch.Tensor:
        size = math.prod(shape)
        flat = self._flat.get(role)
        if flat is None or flat.numel() < size:
            flat = self._flat[role] = torch.empty(size)
        return flat[:size].view(shape)


WORKSPACE = Workspace()  # one per process: the sweep runs its blocks one after another on one thread


# ---- importance profiles and data ---------------------------------------------------------------
def importance_profile(spec: str, n: int) -> torch.Tensor:
    """`zipf:s` (I_i = i^-s), `geometric:r` (I_i = r^(i-1)) or `uniform`, i = 1..n, float64."""
    i = torch.arange(1, n + 1, dtype=torch.float64)
    name, _, arg = spec.partition(":")
    try:
        if name == "uniform" and not arg:
            return torch.ones(n, dtype=torch.float64)
        if name == "zipf" and float(arg) >= 0:
            return i.pow(-float(arg))
        if name == "geometric" and 0 < float(arg) <= 1:
            return torch.tensor(float(arg), dtype=torch.float64).pow(i - 1)
    except ValueError:
        pass
    raise InvalidParameter(
        f"unknown importance profile {spec!r}: use zipf:S (S >= 0), geometric:R (0 < R <= 1) or uniform."
    )


def expected_x_squared(alpha: float) -> float:
    """E[x_i^2] for x_i = u_i b_i, u ~ U[0, 1], b ~ Bernoulli(1 - alpha)."""
    return (1.0 - alpha) / 3.0


class DataStream:
    """Samples x in R^n for several sparsity levels, each from its own seeded generator."""

    def __init__(self, n: int, alphas: list[float], key: tuple):
        self.n = n
        self.alphas = list(alphas)
        self.generators = [torch.Generator().manual_seed(stream_seed(*key, n, a)) for a in alphas]

    def sample(self, batch: int) -> torch.Tensor:
        """[A, batch, n] float32."""
        out = torch.empty(len(self.alphas), batch, self.n)
        for k, (a, g) in enumerate(zip(self.alphas, self.generators)):
            u = torch.rand(batch, self.n, generator=g)
            active = torch.rand(batch, self.n, generator=g) < (1.0 - a)
            out[k] = u * active
        return out

    def state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def load_state(self, states: list[torch.Tensor]) -> None:
        for g, s in zip(self.generators, states):
            g.set_state(s)


# ---- a block of models ----------------------------------------------------------------------------
def init_weights(d: int, n: int, width: int, seed: int) -> torch.Tensor:
    """Xavier-normal init of one model's W [width, n], zero-padded to [d, n]."""
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(d, n)
    w[:width] = torch.randn(width, n, generator=g) * math.sqrt(2.0 / (n + width))
    return w


class Block:
    """Models [A, S, K] of feature count n, padded width d, trained together.

    The parameters live in one tensor P [A, S, K, d + 1, n]: rows :d are W, row d is the bias b. With a
    column of ones appended to the hidden state, h' = [W x, 1], the decoder product h' P gives W^T W x + b
    in one matrix product (no pass that broadcasts b over the batch), and its gradient h'^T g gives the
    bias gradient as its last row (no separate sum over the batch); Adam then runs over P in one pass.
    """

    def __init__(
        self, n: int, d: int, widths: list[list[list[int]]], seeds: list[list[list[int]]], importance: torch.Tensor
    ):
        A, S, K = len(widths), len(widths[0]), len(widths[0][0])
        self.shape = (A, S, K)
        self.n, self.d = n, d
        self.widths = widths
        self.P = torch.zeros(A, S, K, d + 1, n)
        self.P[..., :d, :] = torch.stack(
            [init_weights(d, n, widths[a][s][k], seeds[a][s][k]) for a in range(A) for s in range(S) for k in range(K)]
        ).view(A, S, K, d, n)
        self.importance = importance.to(torch.float32)
        self.m, self.v = torch.zeros_like(self.P), torch.zeros_like(self.P)
        self.t = 0
        self._ones: dict[tuple[int, int], torch.Tensor] = {}
        self._grad: torch.Tensor | None = None

    # W, b and their Adam moments are views of P, m and v (assigning to them writes into P, m, v).
    W = property(lambda self: self.P[..., : self.d, :], lambda self, value: self.P[..., : self.d, :].copy_(value))
    b = property(lambda self: self.P[..., self.d, :], lambda self, value: self.P[..., self.d, :].copy_(value))
    m_W = property(lambda self: self.m[..., : self.d, :], lambda self, value: self.m[..., : self.d, :].copy_(value))
    v_W = property(lambda self: self.v[..., : self.d, :], lambda self, value: self.v[..., : self.d, :].copy_(value))
    m_b = property(lambda self: self.m[..., self.d, :], lambda self, value: self.m[..., self.d, :].copy_(value))
    v_b = property(lambda self: self.v[..., self.d, :], lambda self, value: self.v[..., self.d, :].copy_(value))

    @property
    def count(self) -> int:
        A, S, K = self.shape
        return A * S * K

    def _augmented_hidden(self, h: torch.Tensor, m: int, B: int) -> torch.Tensor:
        """[h, 1] for m models: h [B, m * d] (one matmul's output) -> [m, B, d + 1], in a reused buffer
        whose column of ones is written once."""
        buf = self._ones.get((m, B))
        if buf is None:
            buf = self._ones[(m, B)] = torch.empty(m, B, self.d + 1)
            buf[..., self.d] = 1.0
        buf[..., : self.d] = h.view(B, m, self.d).transpose(0, 1)
        return buf

    def _hidden(self, a: int, x: torch.Tensor, s0: int = 0, s1: int | None = None) -> torch.Tensor:
        """[W x, 1] for the models of sparsity level a and seeds s0:s1: x [B, n] -> [m, B, d + 1]."""
        W = self.W[a, s0:s1].reshape(-1, self.n)  # [m * d, n] (a small copy)
        m = W.shape[0] // self.d
        h = torch.mm(x, W.T, out=WORKSPACE.get("hidden", x.shape[0], W.shape[0]))  # one matmul: x is shared
        return self._augmented_hidden(h, m, x.shape[0])

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [A, B, n] -> x_hat [A, S, K, B, n]."""
        A, S, K = self.shape
        return torch.stack([self.forward_level(a, x[a]) for a in range(A)]).view(A, S, K, x.shape[1], self.n)

    @torch.no_grad()
    def forward_level(self, a: int, xa: torch.Tensor, scratch: bool = False) -> torch.Tensor:
        """The models of sparsity level a on their inputs xa [B, n] -> x_hat [S * K, B, n]; with scratch=True
        the result lives in the workspace and is valid until the next forward_level(..., scratch=True)."""
        A, S, K = self.shape
        out = WORKSPACE.get("forward", S * K, xa.shape[0], self.n) if scratch else None
        return torch.bmm(self._hidden(a, xa), self.P[a].view(S * K, self.d + 1, self.n), out=out).relu_()

    @torch.no_grad()
    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Per-model loss [A, S, K] (float64): mean over samples of sum_i I_i (y_i - x_hat_i)^2."""
        return self.loss_terms(x, y)[0]

    @torch.no_grad()
    def loss_terms(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-model loss [A, S, K] and its per-feature parts [A, S, K, n] (float64): the mean over samples of
        I_i (y_i - x_hat_i)^2 for each feature i. The loss is summed in the order `loss` always used (its bytes
        are what the committed results hold); the parts add up to it up to float rounding."""
        y = x[:, None, None] if y is None else y
        squares = self.forward(x).sub_(y).square_()
        loss = (squares @ self.importance).sum(-1, dtype=torch.float64) / x.shape[1]
        parts = squares.sum(-2, dtype=torch.float64).mul_(self.importance.to(torch.float64)) / x.shape[1]
        return loss, parts

    def _seed_chunks(self, B: int):
        """(s0, s1) ranges of seeds whose [models, B, n] buffers fit in the last-level cache.

        The arithmetic per byte is tiny (d <= 10), so keeping each chunk's buffers in cache between
        the elementwise ops and the matmuls matters more than anything else (3-4x here)."""
        S, K = self.shape[1:]
        per_seed = K * B * (2 * self.n + self.d) * 4
        step = max(1, min(S, CACHE_BYTES // max(per_seed, 1)))
        for s0 in range(0, S, step):
            yield s0, min(S, s0 + step)

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor | None, lr: float) -> None:
        """One Adam step on the importance-weighted loss against y ([A, S, 1|K, B, n]; None = x)."""
        self.apply_gradient(self.gradient(x, y, out=self.gradient_buffer()), lr)

    def gradient_buffer(self) -> torch.Tensor:
        """A tensor of P's shape kept for this block's training gradients (allocated once)."""
        if self._grad is None:
            self._grad = torch.empty_like(self.P)
        return self._grad

    def apply_gradient(self, grad: torch.Tensor, lr: float) -> None:
        """One Adam step with a gradient of P's shape."""
        self._adam(self.P, self.m, self.v, grad, lr)
        self.t += 1

    @torch.no_grad()
    def gradients(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """d loss / d W and d loss / d b for every model (views of `gradient`)."""
        grad = self.gradient(x, y)
        return grad[..., : self.d, :], grad[..., self.d, :]

    @torch.no_grad()
    def gradient(self, x: torch.Tensor, y: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
        """d loss / d P for every model (into out if given), written out by hand (checked against autograd)."""
        grad = torch.empty_like(self.P) if out is None else out
        for a in range(self.shape[0]):
            self.gradient_level(a, x[a], None if y is None else y[a], grad)
        return grad

    @torch.no_grad()
    def gradient_level(self, a: int, xa: torch.Tensor, ya: torch.Tensor | None, grad: torch.Tensor) -> None:
        """Write d loss / d P of the models of sparsity level a into grad[a]: inputs xa [B, n], targets ya
        [S, 1|K, B, n] (None = xa). A caller that has several blocks to train on the same targets (the
        students of one teacher) can run them level by level while ya is still in cache."""
        A, S, K = self.shape
        B, n, d = xa.shape[0], self.n, self.d
        scale = self.importance * (2.0 / B)  # d loss / d x_hat = scale * residual; applied to small results
        for s0, s1 in self._seed_chunks(B):
            P = self.P[a, s0:s1].reshape(-1, d + 1, n)  # [m, d + 1, n]
            m = P.shape[0]
            h = self._hidden(a, xa, s0, s1)  # [m, B, d + 1]
            pre = torch.bmm(h, P, out=WORKSPACE.get("pre", m, B, n))  # W^T W x + b, before the ReLU
            target = xa if ya is None else ya[s0:s1]  # [B, n] or [s, 1|K, B, n]
            # relu(pre) - target where pre > 0, else 0: relu(pre) = pre there, so no ReLU pass is needed.
            g = torch.sub(pre.view(s1 - s0, K, B, n), target, out=WORKSPACE.get("residual", s1 - s0, K, B, n))
            torch.ops.aten.threshold_backward.grad_input(g, pre.view_as(g), 0.0, grad_input=g)
            g = g.view(m, B, n)
            g_dec = torch.bmm(h.transpose(1, 2), g)  # [m, d + 1, n]; row d: sum of g
            # Through the encoder W: (W diag(scale) g^T) x costs 4Bnd per model; forming g^T x first
            # would cost 2Bn^2 (4x more at n = 40, d = 5) and was 40% of the step.
            wg = torch.bmm(P[:, :d] * scale, g.transpose(1, 2), out=WORKSPACE.get("through_encoder", m, d, B))
            g_dec.mul_(scale)[:, :d].add_((wg.view(m * d, B) @ xa).view(m, d, n))
            grad[a, s0:s1] = g_dec.view(s1 - s0, K, d + 1, n)

    def _adam(self, p, m, v, grad, lr) -> None:
        b1, b2 = ADAM_BETAS
        t = self.t + 1
        m.mul_(b1).add_(grad, alpha=1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = torch.div(v, 1 - b2**t, out=WORKSPACE.get("adam", *v.shape)).sqrt_().add_(ADAM_EPS)
        p.addcdiv_(m, denom, value=-lr / (1 - b1**t))

    def kept_features(self) -> torch.Tensor:
        """[A, S, K] number of features with ||W_i||^2 > 0.5."""
        return (self.W.square().sum(-2) > 0.5).sum(-1)

    def feature_norms(self) -> torch.Tensor:
        """[A, S, K, n] the norm ||W_i|| of each feature's column: how strongly the model represents it."""
        return self.W.square().sum(-2).sqrt()

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("W", "b", "m_W", "v_W", "m_b", "v_b", "t")}

    def load_state(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def cosine_lr(lr: float, step: int, total: int) -> float:
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
