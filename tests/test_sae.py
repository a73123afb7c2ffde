"""The SAE, its loss, the hand-written gradient and the L1 controllers (book/methods.md)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from kdsae_core.common.errors import InvalidParameter
from kdsae_core.common.paths import RESULTS
from kdsae_core.sae.model import LAMBDA_BOUNDS, PARAM_NAMES, SAE, L1Controller, TrialSpec, paper_trials, sae_loss
from kdsae_core.sae.step import SAEUnit, fused_backward


def hand_sae() -> SAE:
    """d_in 2, d_sae 3 with round numbers, so the forward pass can be done on paper."""
    s = SAE(2, 3)
    with torch.no_grad():
        s.W_enc.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 1.0]]))
        s.b_enc.copy_(torch.tensor([0.0, -0.5, 0.0]))
        s.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
        s.b_dec.copy_(torch.tensor([0.5, 0.0]))
    return s


def test_forward_and_loss_on_a_hand_checked_case():
    s = hand_sae()
    x = torch.tensor([[1.5, 1.0], [0.5, 2.0]])
    # token 1: x - b_dec = (1, 1): pre = (1, 0.5, 0) -> z = (1, 0.5, 0); x_hat = (1, 0.5) + b_dec = (1.5, 0.5)
    # token 2: x - b_dec = (0, 2): pre = (0, 1.5, 2) -> z = (0, 1.5, 2); x_hat = (1.2, 1.5 + 1.6) + b_dec = (1.7, 3.1)
    z = s.encode(x)
    assert torch.allclose(z, torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.5, 2.0]]))
    assert torch.allclose(s(x), torch.tensor([[1.5, 0.5], [1.7, 3.1]]))
    # MSE over tokens and dims: ((0)^2 + 0.5^2 + 1.2^2 + 1.1^2) / 4 = (0.25 + 1.44 + 1.21) / 4 = 0.725
    # sum-form L1: (1.5 + 3.5) / 2 = 2.5; mean form: 2.5 / 3
    for form, l1 in (("sum", 2.5), ("mean", 2.5 / 3)):
        loss, mse, got_l1 = sae_loss(s, x, 0.1, form)
        assert mse.item() == pytest.approx(0.725, rel=1e-6)
        assert got_l1.item() == pytest.approx(l1, rel=1e-6)
        assert loss.item() == pytest.approx(0.725 + 0.1 * l1, rel=1e-6)


@pytest.mark.parametrize("form", ["sum", "mean"])
def test_fused_backward_equals_autograd(form):
    torch.manual_seed(0)
    s = SAE.initialised(24, 96, seed=3)
    with torch.no_grad():
        s.b_dec.normal_()
        s.b_enc.normal_(0, 0.3)
    x = torch.randn(64, 24) * 2
    loss, mse, l1 = sae_loss(s, x, 3e-3, form)
    loss.backward()
    ref = {n: getattr(s, n).grad.clone() for n in PARAM_NAMES}
    with torch.no_grad():  # autograd's gradients become NaN: fused_backward must write its own
        for p in s.parameters():
            p.grad.fill_(float("nan"))
    stats = fused_backward(s, x, 3e-3, form)
    for n in PARAM_NAMES:
        torch.testing.assert_close(getattr(s, n).grad, ref[n], rtol=1e-5, atol=1e-6)
    assert stats.loss.item() == pytest.approx(loss.item(), rel=1e-6)
    assert stats.mse.item() == pytest.approx(mse.item(), rel=1e-6)
    assert stats.l1.item() == pytest.approx(l1.item(), rel=1e-6)
    z = s.encode(x)
    assert stats.l0.item() == pytest.approx((z > 0).float().sum(-1).mean().item())
    assert torch.equal(stats.fired, (z > 0).any(0))


def test_initialisation_and_decoder_norm_invariant():
    s = SAE.initialised(16, 64, seed=1)
    assert torch.allclose(s.W_dec.norm(dim=1), torch.ones(64), atol=1e-6)
    assert torch.equal(s.W_enc, s.W_dec.T)
    assert not s.b_enc.any() and not s.b_dec.any()
    unit = SAEUnit(paper_trials()["B"], 0, 16, 64, seed=1, lr=1e-2, grad_clip=1.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        unit.step(torch.randn(128, 16, generator=g) * 3)
        assert torch.allclose(unit.sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)


def test_same_seed_same_weights_and_steps_are_deterministic():
    a = SAEUnit(paper_trials()["C"], 0, 8, 32, seed=7, lr=1e-3, grad_clip=1.0)
    b = SAEUnit(paper_trials()["C"], 0, 8, 32, seed=7, lr=1e-3, grad_clip=1.0)
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        x = torch.randn(64, 8, generator=g)
        a.step(x)
        b.step(x)
    for n in PARAM_NAMES:
        assert torch.equal(getattr(a.sae, n), getattr(b.sae, n))
    assert torch.equal(a.controller.lam, b.controller.lam)


def test_unit_state_round_trip_continues_identically():
    spec = paper_trials()["C"]
    a = SAEUnit(spec, 2, 8, 32, seed=7, lr=1e-3, grad_clip=1.0)
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(64, 8, generator=g) for _ in range(12)]
    for x in xs[:5]:
        a.step(x)
    b = SAEUnit(spec, 2, 8, 32, seed=99, lr=1e-3, grad_clip=1.0)
    b.load_state(a.state())
    for x in xs[5:]:
        a.step(x)
        b.step(x)
    for n in PARAM_NAMES:
        assert torch.equal(getattr(a.sae, n), getattr(b.sae, n))
    assert torch.equal(a.last_fired, b.last_fired) and a.steps == b.steps == 12


# ---- controllers -------------------------------------------------------------------------------------
def test_fixed_controller_never_moves():
    c = L1Controller(paper_trials()["B"])
    for l0 in (1.0, 1e4, float("nan")):
        c.update(torch.tensor(l0))
    assert c.lam.item() == 8e-5


def test_target_controller_converges_on_a_synthetic_stream():
    """A stand-in SAE whose L0 falls with lambda (L0 = 2000 exp(-lambda / 4e-4), plus seeded noise): the
    controller must bring the smoothed L0 within 10% of the target and hold it there."""
    spec = paper_trials(target_l0=150)["C"]
    c = L1Controller(spec)
    g = torch.Generator().manual_seed(0)
    seen = []
    for _ in range(3000):
        l0 = 2000 * math.exp(-c.lam.item() / 4e-4) * (1 + 0.05 * torch.randn((), generator=g).item())
        c.update(torch.tensor(l0))
        seen.append(l0)
    tail = seen[-500:]
    assert abs(sum(tail) / len(tail) / 150 - 1) < 0.10
    assert abs(c.l0_ema.item() / 150 - 1) < 0.10
    expected_lam = 4e-4 * math.log(2000 / 150)  # where L0(lambda) = 150
    assert c.lam.item() == pytest.approx(expected_lam, rel=0.05)


@pytest.mark.parametrize(
    "sequence",
    [
        [float("inf")] * 50,
        [float("nan")] * 50,
        [0.0] * 5000,
        [1e30] * 5000,
        [-1e6] * 500,
        [1e12, 0.0] * 2000,
        [float("inf"), float("nan"), 0.0, 1e308] * 100,
    ],
)
def test_target_controller_stays_bounded_on_adversarial_l0(sequence):
    c = L1Controller(paper_trials()["C"])
    for v in sequence:
        c.update(torch.tensor(v, dtype=torch.float64))
        lam = c.lam.item()
        assert math.isfinite(lam) and LAMBDA_BOUNDS[0] <= lam <= LAMBDA_BOUNDS[1]


def test_trial_specs_reject_bad_values():
    with pytest.raises(InvalidParameter, match="L1 form"):
        TrialSpec("X", 1e-4, "median").validate()
    with pytest.raises(InvalidParameter, match="target L0"):
        TrialSpec("X", 1e-4, "sum", controller="target_l0", target_l0=-1).validate()
    with pytest.raises(InvalidParameter, match="coefficient"):
        TrialSpec("X", float("nan"), "sum").validate()
    with pytest.raises(InvalidParameter, match="shapes"):
        SAE(0, 4)
    t = paper_trials()
    assert (t["A"].l1_coeff, t["A"].l1_form, t["B"].l1_coeff, t["B"].l1_form) == (3e-4, "mean", 8e-5, "sum")
    assert (t["C"].l1_coeff, t["C"].target_l0, t["C"].rate, t["C"].ema) == (5e-4, 150.0, 0.01, 0.99)


def _replay(spec, logged: list[dict]) -> list[float]:
    """lambda after every step when the controller is fed a run's logged L0, each logged value held until the next
    logged step (the run logs every 5th step)."""
    c, j, lams = L1Controller(spec), 0, []
    for step in range(1, logged[-1]["step"] + 1):
        while j + 1 < len(logged) and logged[j + 1]["step"] <= step:
            j += 1
        c.update(torch.tensor(logged[j]["L0"]))
        lams.append(c.lam.item())
    return lams


@pytest.mark.parametrize("layer", range(6))
def test_the_controller_reproduces_the_overshoot_of_the_committed_embedded_run(layer):
    """The committed embedded run's trial C (results/exp2/embedded/metrics.jsonl): its logged L0 fed through the
    controller gives back its logged lambda, overshoot included: lambda climbs ~20x its start over ~350 steps (the
    error clipped at +1 lets it grow at most 1% a step) while L0 falls towards single digits, then settles."""
    rows = [json.loads(line) for line in (RESULTS / "exp2" / "embedded" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if r["trial"] == "C" and r["layer"] == layer]
    spec = TrialSpec(**json.loads((RESULTS / "exp2" / "embedded" / "config.json").read_text())["trials"]["C"])
    lams = _replay(spec, logged)
    peak = max(r["lambda"] for r in logged)
    assert 15 < peak / spec.l1_coeff < 25 and min(r["L0"] for r in logged) < 25  # the overshoot, in the data
    assert max(lams) == pytest.approx(peak, rel=0.05)
    assert abs(lams.index(max(lams)) + 1 - max(logged, key=lambda r: r["lambda"])["step"]) <= 10
    assert max(abs(lams[r["step"] - 1] / r["lambda"] - 1) for r in logged[1:]) < 0.25
    unclipped = _replay(dataclasses.replace(spec, error_bound=None), logged)
    assert max(unclipped) > 2 * peak  # without the clip the same L0 would have wound lambda far higher
