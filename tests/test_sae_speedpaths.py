"""The fast paths of the SAE step (kdsae_core/sae/step.py) against the autograd reference `sae_loss`.

fused_backward (encoder-bias gradient folded into the last product, per-latent sums as a matrix-vector
product, the L0 count in place, gradients written into reused buffers), the clipping folded into fused Adam,
and the blocked decoder renormalisation: each must give what the plain autograd + clip_grad_norm_ + Adam +
renormalise step gives.
"""

from __future__ import annotations

import pytest
import torch

import kdsae_core.sae.model as sae_mod
from kdsae_core.common.adam import ADAM_BETAS, ADAM_EPS
from kdsae_core.sae import sparse as sae_sparse
from kdsae_core.sae.model import PARAM_NAMES, SAE, TrialSpec, sae_loss
from kdsae_core.sae.step import SAEUnit, fused_backward


def perturbed_sae(d_in=24, d_sae=96, seed=3, dtype=torch.float32) -> SAE:
    s = SAE.initialised(d_in, d_sae, seed=seed).to(dtype)
    with torch.no_grad():
        s.b_dec.normal_()
        s.b_enc.normal_(0, 0.3)
    return s


def poison_grads(s: SAE) -> None:
    """Fill every existing `.grad` with NaN in place, so a gradient the fast path fails to write shows."""
    with torch.no_grad():
        for p in s.parameters():
            if p.grad is not None:
                p.grad.fill_(float("nan"))


def autograd_grads(s: SAE, x: torch.Tensor, lam: float, form: str) -> tuple[dict, tuple]:
    for p in s.parameters():
        p.grad = None
    loss, mse, l1 = sae_loss(s, x, lam, form)
    loss.backward()
    return {n: getattr(s, n).grad.clone() for n in PARAM_NAMES}, (loss.item(), mse.item(), l1.item())


@pytest.mark.parametrize("form", ["sum", "mean"])
def test_fused_gradients_equal_autograd_on_repeated_calls(form):
    torch.manual_seed(0)
    s = perturbed_sae()
    for call in range(3):  # the first call allocates the buffers, the next ones write into them
        x = torch.randn(64, 24) * 2
        ref, (loss, mse, l1) = autograd_grads(s, x, 3e-3, form)
        if call == 2:  # buffers from the previous call are reused, not autograd's
            fused_backward(s, x, 3e-3, form)
            ptrs = [p.grad.data_ptr() for p in s.parameters()]
        poison_grads(s)
        stats = fused_backward(s, x, 3e-3, form)
        if call == 2:
            assert [p.grad.data_ptr() for p in s.parameters()] == ptrs
        for n in PARAM_NAMES:
            torch.testing.assert_close(getattr(s, n).grad, ref[n], rtol=1e-5, atol=1e-6)
        assert stats.loss.item() == pytest.approx(loss, rel=1e-6)
        assert stats.mse.item() == pytest.approx(mse, rel=1e-6)
        assert stats.l1.item() == pytest.approx(l1, rel=1e-6)
        z = s.encode(x)
        assert stats.l0.item() == pytest.approx(torch.count_nonzero(z).item() / 64, rel=1e-7)
        assert torch.equal(stats.fired, (z > 0).any(0))


def test_fused_gradients_equal_autograd_in_float64():
    """In float64 the two differ only by rounding of a much smaller size: an exactness check of the algebra."""
    torch.manual_seed(1)
    s = perturbed_sae(16, 40, dtype=torch.float64)
    x = torch.randn(50, 16, dtype=torch.float64) * 3
    ref, _ = autograd_grads(s, x, 1e-2, "sum")
    poison_grads(s)
    fused_backward(s, x, 1e-2, "sum")
    for n in PARAM_NAMES:
        torch.testing.assert_close(getattr(s, n).grad, ref[n], rtol=1e-12, atol=1e-14)


def test_gradient_buffers_are_reused_and_recreated_after_zero_grad():
    s = perturbed_sae(8, 32)
    x = torch.randn(16, 8)
    fused_backward(s, x, 1e-3, "sum")
    ptrs = [p.grad.data_ptr() for p in s.parameters()]
    assert s.W_enc.grad.is_contiguous() and s.b_enc.grad.is_contiguous()
    first = {n: getattr(s, n).grad.clone() for n in PARAM_NAMES}
    poison_grads(s)
    fused_backward(s, x, 1e-3, "sum")
    assert [p.grad.data_ptr() for p in s.parameters()] == ptrs
    for n in PARAM_NAMES:  # rewritten in place, with the same values
        assert torch.equal(getattr(s, n).grad, first[n])
    torch.optim.SGD(s.parameters(), lr=0.1).zero_grad()  # set_to_none
    ref, _ = autograd_grads(s, x, 1e-3, "sum")
    for p in s.parameters():
        p.grad = None
    fused_backward(s, x, 1e-3, "sum")
    for n in PARAM_NAMES:
        torch.testing.assert_close(getattr(s, n).grad, ref[n], rtol=1e-5, atol=1e-6)


def test_l0_count_is_exact_with_many_inactive_latents():
    s = perturbed_sae(12, 300)
    with torch.no_grad():
        s.b_enc.fill_(-1.5)  # most latents off
    x = torch.randn(200, 12)
    stats = fused_backward(s, x, 1e-3, "sum")
    z = s.encode(x)
    assert stats.l0.item() == pytest.approx(torch.count_nonzero(z).item() / 200, rel=1e-7)
    assert torch.equal(stats.fired, (z > 0).any(0)) and not stats.fired.all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_fast_count_equals_torch_count_nonzero(dtype):
    """The step counts z's non-zeros in sparse.nonzero_scan(z) (z's bits as integers on the CPU): the count must
    equal torch.count_nonzero for every z, including negative zeros (non-zero bits, but == 0: ReLU passes them
    through) and NaNs of either sign."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 96, generator=g).relu_().to(dtype)
    cases = [z, torch.zeros(0, 96, dtype=dtype), torch.zeros(5, 7, dtype=dtype)]
    for special in (-0.0, float("nan"), -float("nan")):
        w = z.clone()
        w[3, :50] = special
        cases.append(w)
    cases.append(torch.full((9, 13), -0.0, dtype=dtype).relu_())
    for c in cases:
        got = torch.count_nonzero(sae_sparse.nonzero_scan(c))
        assert got.dtype == torch.int64 and got.shape == ()
        assert int(got) == int(torch.count_nonzero(c))


def reference_step(s: SAE, opt: torch.optim.Optimizer, x, lam, form, clip) -> None:
    """The plain step the fast one must equal: autograd, clip_grad_norm_, Adam, renormalise the decoder."""
    opt.zero_grad()
    sae_loss(s, x, lam, form)[0].backward()
    torch.nn.utils.clip_grad_norm_(s.parameters(), clip)
    opt.step()
    with torch.no_grad():
        s.W_dec.div_(s.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))


@pytest.mark.parametrize("scale", [0.05, 5.0])  # gradient norm below and above the clip
def test_unit_step_equals_autograd_clip_adam_renormalise(scale):
    d_in, d_sae = 16, 64
    spec = TrialSpec("t", 3e-3, "sum")
    unit = SAEUnit(spec, 0, d_in, d_sae, seed=5, lr=1e-3, grad_clip=1.0)
    ref = SAE.initialised(d_in, d_sae, seed=5)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3, betas=ADAM_BETAS, eps=ADAM_EPS)
    g = torch.Generator().manual_seed(2)
    clipped = []
    for _ in range(15):
        x = torch.randn(128, d_in, generator=g) * scale
        _, (loss, _, _) = autograd_grads(ref, x, 3e-3, "sum")
        clipped.append(torch.nn.utils.get_total_norm([p.grad for p in ref.parameters()]).item() > 1.0)
        stats = unit.step(x)
        assert stats.loss.item() == pytest.approx(loss, rel=1e-5)
        reference_step(ref, opt, x, 3e-3, "sum", 1.0)
        for n in PARAM_NAMES:
            torch.testing.assert_close(getattr(unit.sae, n), getattr(ref, n), rtol=1e-5, atol=1e-6)
    assert all(clipped) if scale > 1 else not any(clipped)


def test_blocked_renormalisation_equals_whole_tensor(monkeypatch):
    w = torch.randn(1000, 24) * 3
    s = SAE(24, 1000)
    expected = w / torch.linalg.vector_norm(w, dim=1, keepdim=True)
    for block_bytes in (1 << 20, 24 * 4 * 7, 1):  # one block, blocks of 7 rows, one row per block
        monkeypatch.setattr(sae_mod, "_NORMALIZE_BLOCK_BYTES", block_bytes)
        with torch.no_grad():
            s.W_dec.copy_(w)
        s.normalize_decoder_()
        assert torch.equal(s.W_dec.detach(), expected)


def test_last_fired_records_the_step_each_latent_last_fired():
    unit = SAEUnit(TrialSpec("t", 1e-3, "sum"), 0, 8, 32, seed=0, lr=1e-3, grad_clip=1.0)
    g = torch.Generator().manual_seed(0)
    expected = torch.full((32,), -1)
    for step in range(4):
        x = torch.randn(4, 8, generator=g)
        fired = (unit.sae.encode(x) > 0).any(0)
        unit.step(x)
        expected[fired] = step
    assert torch.equal(unit.last_fired, expected)


def test_bf16_compute_path_runs_and_stays_close():
    """The GPU users' bf16 path (fp32 master weights, bf16 products), checked on the CPU at bf16 accuracy.

    lambda 3e-2 gives the L1 term 23% of the loss, so a bf16 path that dropped or misscaled it would show:
    measured here, bf16 is within 0.05% on the loss and 0.6% on every gradient, while lambda off by 10%
    moves the loss 3% and the encoder gradients 2%."""
    torch.manual_seed(0)
    s = perturbed_sae(32, 128)
    x = torch.randn(256, 32)
    ref, (loss, _, _) = autograd_grads(s, x, 3e-2, "sum")
    poison_grads(s)
    stats = fused_backward(s, x, 3e-2, "sum", compute_dtype=torch.bfloat16)
    assert all(getattr(s, n).grad.dtype == torch.float32 for n in PARAM_NAMES)
    assert stats.loss.item() == pytest.approx(loss, rel=3e-3)
    for n in PARAM_NAMES:
        rel = (getattr(s, n).grad - ref[n]).norm() / ref[n].norm()
        assert rel < 1.5e-2, n
