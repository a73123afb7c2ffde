"""The sparse-aware SAE step (kdsae_core/sae/sparse.py) against the dense one and the autograd reference.

The sparse step must compute what the dense step computes: the same loss, L0, fired latents and gradients (only
the order of floating-point sums differs), hence the same clipping, Adam and decoder renormalisation; the
automatic choice must switch at the recorded crossover; a resumed unit must continue bit for bit.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from kdsae_core.common.paths import REPO_ROOT
from kdsae_core.sae import sparse as sae_sparse
from kdsae_core.sae.model import PARAM_NAMES, SAE, TrialSpec
from kdsae_core.sae.step import SAEUnit, fused_backward

from .test_sae_speedpaths import autograd_grads, poison_grads

DENSITY_RESULT = REPO_ROOT / "benchmarks" / "results" / "sae_step_density.json"


def grads_of(s: SAE, x, lam, form, path, compute_dtype=None):
    poison_grads(s)  # a gradient the path fails to write shows as NaN
    stats = fused_backward(s, x, lam, form, compute_dtype, path=path)
    return {n: getattr(s, n).grad.clone() for n in PARAM_NAMES}, stats


def hand_sae() -> SAE:
    s = SAE(2, 3)
    with torch.no_grad():
        s.W_enc.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0]]))
        s.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    return s


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_hand_checked_case(path):
    """x = [[1, 2], [-1, 0.5]], biases 0, lambda 0.1 (sum form). z = [[1, 2, 0], [0, .5, .5]] (latent 0 fires on one
    token only), x_hat = [[1, 2], [.5, 1]], err = [[0, 0], [1.5, .5]]: MSE 2.5 / 4, L1 4 / 2, L0 2.
    g_err = err / 2; dL/dpre = (g_err W_dec^T + 0.05) where z > 0 = [[.05, .05, 0], [0, .3, 1.05]]."""
    s = hand_sae()
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    g, st = grads_of(s, x, 0.1, "sum", path)
    assert st.path == path
    assert (st.mse.item(), st.l1.item(), st.l0.item()) == (0.625, 2.0, 2.0)
    assert st.loss.item() == pytest.approx(0.825, rel=1e-7)
    assert st.fired.tolist() == [True, True, True]
    expected = {
        "W_dec": [[0, 0], [0.375, 0.125], [0.375, 0.125]],
        "W_enc": [[0.05, -0.25, -1.05], [0.1, 0.25, 0.525]],
        "b_enc": [0.05, 0.35, 1.05],
        "b_dec": [1.75, 0.95],
    }  # sum of g_err minus W_enc (b_enc's gradient)
    for n, v in expected.items():
        torch.testing.assert_close(g[n], torch.tensor(v), rtol=1e-6, atol=1e-7)
    ref, _ = autograd_grads(s, x, 0.1, "sum")
    for n in PARAM_NAMES:
        torch.testing.assert_close(g[n], ref[n], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("density", [0.0, 0.004, 0.07, 0.5, 1.0])
@pytest.mark.parametrize("d_sae,index_bits", [(53, 32), (64, 32), (53, 64), (64, 64)])
def test_active_pairs_are_torchs_own_conversions(density, dtype, d_sae, index_bits, monkeypatch):
    """sparse.active_pairs builds both layouts from one scan of z: they must be exactly torch's to_sparse_csr and
    its CSC (same pointers, indices and values, in the same order), including z holding negative zeros (== 0: not
    a pair) and with no pair or every pair active; with d_sae a power of two (flat indices split by a shift) or
    not (by a division), and with 64-bit indices (a batch whose B d_sae does not fit 32 bits: the limit lowered)."""
    if index_bits == 64:
        monkeypatch.setattr(sae_sparse, "_INT32_INDICES_UP_TO", 37 * d_sae - 1)
    index_dtype = {32: torch.int32, 64: torch.int64}[index_bits]
    g = torch.Generator().manual_seed(5)
    z = torch.rand(37, d_sae, generator=g, dtype=dtype) * (torch.rand(37, d_sae, generator=g) < density)
    cases = [z, torch.where(z > 0, z, torch.tensor(-0.0, dtype=dtype))]
    for c in cases:
        pairs = sae_sparse.active_pairs(c)
        ref_token = c.to_sparse_csr()
        ref_latent = ref_token.to_sparse_csc()
        got, want = pairs.by_token, ref_token
        assert (got.shape, got.layout) == (want.shape, torch.sparse_csr)
        # 32-bit indices (MKL's) where they fit, the same numbers as torch's 64-bit ones
        assert got.crow_indices().dtype == got.col_indices().dtype == index_dtype
        assert torch.equal(got.crow_indices().long(), want.crow_indices())
        assert torch.equal(got.col_indices().long(), want.col_indices())
        assert torch.equal(got.values(), want.values())
        got = pairs.by_latent
        assert got.shape == (d_sae, 37)
        assert got.crow_indices().dtype == got.col_indices().dtype == index_dtype
        assert torch.equal(got.crow_indices().long(), ref_latent.ccol_indices())
        assert torch.equal(got.col_indices().long(), ref_latent.row_indices())
        assert torch.equal(got.values(), ref_latent.values())
        assert torch.equal(pairs.per_latent, (c > 0).sum(0))


def biased_sae(d_in, d_sae, shift, dtype=torch.float32, seed=3) -> SAE:
    s = SAE.initialised(d_in, d_sae, seed=seed).to(dtype)
    with torch.no_grad():
        s.b_dec.normal_(0, 0.5)
        s.b_enc.normal_(0, 0.3).add_(shift)
    return s


# encoder-bias shifts giving no active pair, about 1%, 10%, 50% and every pair active
SHIFTS = {"0%": -1e3, "~1%": -2.7, "~10%": -1.5, "~50%": 0.0, "100%": 8.0}


@pytest.mark.parametrize("form", ["sum", "mean"])
@pytest.mark.parametrize("shift", list(SHIFTS.values()), ids=list(SHIFTS))
def test_sparse_equals_dense_and_autograd_across_densities(shift, form):
    torch.manual_seed(1)
    s = biased_sae(24, 160, shift)
    x = torch.randn(96, 24)
    dense, ds = grads_of(s, x, 3e-3, form, "dense")
    sparse, ss = grads_of(s, x, 3e-3, form, "sparse")
    ref, (loss, mse, l1) = autograd_grads(s, x, 3e-3, form)
    density = ss.l0.item() / 160
    assert {"0%": density == 0, "100%": density == 1}.get(
        next(k for k, v in SHIFTS.items() if v == shift), 0 < density < 1
    )
    assert ss.l0.item() == ds.l0.item() and torch.equal(ss.fired, ds.fired)
    for a, b in ((ss.loss, ds.loss), (ss.mse, ds.mse), (ss.l1, ds.l1)):
        assert a.item() == pytest.approx(b.item(), rel=1e-6, abs=1e-12)
    assert ss.loss.item() == pytest.approx(loss, rel=1e-6)
    for n in PARAM_NAMES:  # relative to each gradient's norm: entries near 0 are sums that cancel
        for other in (dense[n], ref[n]):
            assert (sparse[n] - other).norm() <= 2e-6 * other.norm() + 1e-12, n


@pytest.mark.parametrize("shift", [-2.7, -1.5, 0.0])
def test_sparse_equals_autograd_in_float64(shift):
    """In float64 the two differ only by rounding far below float32's: a check of the algebra, not of tolerances."""
    torch.manual_seed(2)
    s = biased_sae(16, 120, shift, dtype=torch.float64)
    x = torch.randn(80, 16, dtype=torch.float64) * 2
    sparse, _ = grads_of(s, x, 1e-2, "sum", "sparse")
    ref, _ = autograd_grads(s, x, 1e-2, "sum")
    for n in PARAM_NAMES:
        torch.testing.assert_close(sparse[n], ref[n], rtol=1e-12, atol=1e-14)


def l1_part(s: SAE, x, lam, form, path, compute_dtype=None) -> torch.Tensor:
    """The L1 term's share of the W_enc and b_enc gradients: the gradients at lam minus those at lambda 0."""

    def grads(v):
        g, st = grads_of(s, x, torch.tensor(v, dtype=torch.float64), form, path, compute_dtype)
        return torch.cat([g["W_enc"].flatten(), g["b_enc"]]), st

    (at_lam, st), (at_0, _) = grads(lam), grads(0.0)
    return at_lam - at_0, st


@pytest.mark.parametrize("shift", [-2.7, -1.5, 0.0])
def test_trial_a_mean_form_l1_term_is_the_same_on_both_paths(shift):
    """Trial A (lambda 3e-4, `mean` form): its per-pair term lambda / (B d_sae) is ~1e-5 of the MSE gradient, so
    a path that dropped or misscaled it would pass the whole-gradient comparisons; its share alone must agree, and
    b_enc's share is lambda / (B d_sae) times the tokens each latent fired on. In float64, so that the difference of
    two gradients is not float32's cancellation."""
    torch.manual_seed(4)
    B, d_sae, lam = 128, 256, 3e-4
    s = biased_sae(32, d_sae, shift, dtype=torch.float64)
    x = torch.randn(B, 32, dtype=torch.float64)
    dense, ds = l1_part(s, x, lam, "mean", "dense")
    sparse, ss = l1_part(s, x, lam, "mean", "sparse")
    assert (ds.path, ss.path) == ("dense", "sparse") and 0 < ss.l0.item() < d_sae
    assert (sparse - dense).norm() <= 1e-9 * dense.norm()
    fires = (s.encode(x) > 0).sum(0).double()
    torch.testing.assert_close(sparse[-d_sae:], lam / (B * d_sae) * fires, rtol=1e-9, atol=0)


def test_the_bf16_step_stays_dense_and_keeps_the_mean_form_l1_in_fp32():
    """bf16 compute (the GPU path; here on the CPU): the automatic choice stays dense even far below the crossover,
    where trial A's `mean`-form L1 term is added apart in fp32 (issue 20), so its share of the encoder gradients
    matches the fp32 step's (sparse, at this density) to fp32 accuracy; forcing the sparse step in bf16 is refused."""
    torch.manual_seed(5)
    s = biased_sae(32, 256, -2.7)  # ~1% of the pairs active
    x = torch.randn(128, 32)
    exact, st32 = l1_part(s, x, 3e-4, "mean", "auto")
    bf16, st16 = l1_part(s, x, 3e-4, "mean", "auto", torch.bfloat16)
    assert st32.path == "sparse" and st16.path == "dense"  # (bf16 rounding moves a few pairs across 0)
    cos = torch.nn.functional.cosine_similarity
    assert float(cos(exact, bf16, dim=0)) >= 0.99
    with pytest.raises(ValueError, match="float32 or float64 only"):
        fused_backward(s, x, 3e-4, "mean", torch.bfloat16, path="sparse")


def test_a_latent_that_fires_on_one_token_only():
    torch.manual_seed(4)
    s = biased_sae(12, 40, -1e3)  # every latent off ...
    x = torch.randn(50, 12)
    pre = (x - s.b_dec) @ s.W_enc
    t = int(pre[:, 7].argmax())
    with torch.no_grad():  # ... but latent 7, which fires on its strongest token alone
        s.b_enc[7] = -(pre[:, 7].topk(2).values.mean())
    sparse, st = grads_of(s, x, 1e-3, "sum", "sparse")
    dense, _ = grads_of(s, x, 1e-3, "sum", "dense")
    assert st.l0.item() == pytest.approx(1 / 50) and st.fired.nonzero().flatten().tolist() == [7]
    z = s.encode(x)
    assert z[:, 7].nonzero().flatten().tolist() == [t]
    g_err = (s(x) - x) * (2 / (50 * 12))
    torch.testing.assert_close(sparse["W_dec"][7], z[t, 7] * g_err[t], rtol=1e-6, atol=1e-9)
    assert not sparse["W_dec"][torch.arange(40) != 7].any() and not sparse["W_enc"][:, torch.arange(40) != 7].any()
    for n in PARAM_NAMES:
        torch.testing.assert_close(sparse[n], dense[n], rtol=1e-6, atol=1e-9)


def test_an_all_dead_batch():
    """No pair active: only b_dec has a gradient (the reconstruction is b_dec alone), every other one is zero."""
    s = biased_sae(10, 30, -1e3)
    x = torch.randn(20, 10)
    g, st = grads_of(s, x, 1e-3, "sum", "sparse")
    assert st.path == "sparse" and st.l0.item() == 0 and st.l1.item() == 0 and not st.fired.any()
    assert all(not g[n].any() for n in ("W_enc", "b_enc", "W_dec"))
    torch.testing.assert_close(g["b_dec"], ((s.b_dec - x) * (2 / (20 * 10))).sum(0))
    assert st.mse.item() == pytest.approx((s.b_dec - x).pow(2).mean().item(), rel=1e-6)


def test_gradient_buffers_are_shared_by_both_paths():
    s = biased_sae(8, 32, -1.0)
    x = torch.randn(16, 8)
    fused_backward(s, x, 1e-3, "sum", path="dense")
    ptrs = [p.grad.data_ptr() for p in s.parameters()]
    fused_backward(s, x, 1e-3, "sum", path="sparse")
    assert [p.grad.data_ptr() for p in s.parameters()] == ptrs


def unit_with_active_latents(k: int, d_sae: int) -> SAEUnit:
    """A unit whose encoder ignores x and fires exactly latents 0..k-1 on every token (W_enc = 0, b_enc = +-1)."""
    unit = SAEUnit(TrialSpec("t", 1e-3, "sum"), 0, 4, d_sae, seed=0, lr=1e-3, grad_clip=1.0)
    with torch.no_grad():
        unit.sae.W_enc.zero_()
        unit.sae.b_enc.fill_(-1.0)[:k] = 1.0
    return unit


def test_the_automatic_choice_switches_at_the_recorded_crossover():
    """One token, 1,000 latents: the step is sparse with one active pair fewer than the crossover allows, dense
    from the crossover on."""
    d_sae = 1000
    below = unit_with_active_latents(0, d_sae).sparse_below
    smallest = min(sae_sparse.CPU_CROSSOVERS.items(), key=lambda kv: kv[0][0] * kv[0][1])[1]
    assert below == smallest > 0  # 4 x 1,000 is smaller than every measured shape
    edge = math.ceil(below * d_sae)  # the fewest active pairs that are not below it
    x = torch.randn(1, 4)
    assert unit_with_active_latents(edge - 1, d_sae).step(x).path == "sparse"
    assert unit_with_active_latents(edge, d_sae).step(x).path == "dense"
    f32, shape = torch.float32, (1, d_sae)
    assert sae_sparse.choose_path("auto", torch.tensor(0), shape, f32, below) == "sparse"
    assert sae_sparse.choose_path("auto", torch.tensor(0), shape, f32, 0.0) == "dense"  # no crossover: dense
    assert sae_sparse.choose_path("auto", torch.tensor(0), shape, torch.bfloat16, below) == "dense"  # no bf16 sparse
    assert sae_sparse.choose_path("dense", torch.tensor(0), shape, f32, below) == "dense"
    assert sae_sparse.choose_path("sparse", torch.tensor(d_sae), shape, f32, 0.0) == "sparse"
    with pytest.raises(ValueError, match="float32 or float64 only"):
        sae_sparse.choose_path("sparse", torch.tensor(0), shape, torch.bfloat16, below)
    with pytest.raises(ValueError, match="auto, dense, sparse"):
        sae_sparse.choose_path("fast", torch.tensor(0), shape, f32, below)


def test_the_threshold_follows_the_measured_crossover_of_the_shape():
    """At a measured shape the threshold is its crossover; between two it lies between theirs, log-linearly in the
    weight count; beyond them it is the nearest end's; off the CPU it is 0 (auto stays dense on a GPU)."""
    measured = sorted(sae_sparse.CPU_CROSSOVERS.items(), key=lambda kv: kv[0][0] * kv[0][1])
    assert len(measured) >= 2
    for (d_in, d_sae), c in measured:
        assert sae_sparse.sparse_below_density(d_in, d_sae) == pytest.approx(c, rel=1e-12)
        assert sae_sparse.sparse_below_density(d_in, d_sae, "cuda") == 0.0
    ((a_in, a_sae), a), ((b_in, b_sae), b) = measured[0], measured[1]
    mid = sae_sparse.sparse_below_density(a_in, int((a_in * a_sae * b_in * b_sae) ** 0.5 / a_in))
    assert mid == pytest.approx((a * b) ** 0.5, rel=1e-3)  # halfway in log size: the geometric mean
    assert sae_sparse.sparse_below_density(8, 16) == measured[0][1]
    assert sae_sparse.sparse_below_density(4096, 131072) == measured[-1][1]
    d_in, d_sae = measured[0][0]
    unit = SAEUnit(TrialSpec("t", 1e-3, "sum"), 0, d_in, d_sae, seed=0, lr=1e-3, grad_clip=1.0)
    assert unit.sparse_below == measured[0][1]


def test_a_shape_where_sparse_never_won_interpolates_linearly(monkeypatch):
    """A measured crossover of 0 (the sparse step slower at every density) has no logarithm: between it and the
    next shape the threshold falls linearly in log size, to 0 at that shape."""
    monkeypatch.setattr(sae_sparse, "CPU_CROSSOVERS", {(10, 10): 0.08, (10, 1000): 0.0})
    assert sae_sparse.sparse_below_density(10, 100) == pytest.approx(0.04)
    assert sae_sparse.sparse_below_density(10, 1000) == 0.0


@pytest.mark.parametrize("shift, expected", [(-1e3, "sparse"), (1e3, "dense")])
def test_a_unit_step_takes_the_path_of_its_batch_density(shift, expected):
    unit = SAEUnit(TrialSpec("t", 1e-3, "sum"), 0, 8, 64, seed=0, lr=1e-3, grad_clip=1.0)
    with torch.no_grad():
        unit.sae.b_enc.fill_(shift)
    assert unit.step(torch.randn(32, 8)).path == expected


def test_the_declared_crossovers_are_the_measured_ones():
    """CPU_CROSSOVERS holds, for every shape benchmarks/sae_step.py --densities measured on this machine, the
    crossover it measured (the lowest over batch sizes, rounded down), and no shape it did not measure."""
    result = json.loads(DENSITY_RESULT.read_text())
    chosen = {tuple(int(v) for v in k.split("x")): c for k, c in result["crossover"]["chosen"].items()}
    assert chosen == sae_sparse.CPU_CROSSOVERS, (
        "benchmarks/results/sae_step_density.json measured other crossovers: declare them in kdsae_core/sae/sparse.py "
        "and re-derive the result (benchmarks/sae_step.py --rederive)"
    )


def run_units(path, steps, d_in=16, d_sae=128, shift=-1.8, seed=6, split=None):
    """`steps` unit steps on fixed batches (optionally saved and loaded into a fresh unit after `split` steps)."""
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(64, d_in, generator=g) * 2 for _ in range(steps)]
    spec = TrialSpec("C", 5e-3, "sum", controller="target_l0", target_l0=3.0)

    def fresh():
        u = SAEUnit(spec, 0, d_in, d_sae, seed=seed, lr=3e-3, grad_clip=1.0, step_path=path)
        with torch.no_grad():
            u.sae.b_enc.fill_(shift)
        return u

    unit, log = fresh(), []
    for i, x in enumerate(xs):
        if i == split:
            state = {k: v.clone() for k, v in unit.state().items()}
            unit = fresh()
            unit.load_state(state)
        s = unit.step(x)
        log.append((s.loss.item(), s.path))
    return unit, log


def test_sparse_and_dense_units_train_alike_and_resume_bit_identically():
    dense, dlog = run_units("dense", 40)
    sparse, slog = run_units("sparse", 40)
    assert {p for _, p in slog} == {"sparse"} and {p for _, p in dlog} == {"dense"}
    rel = max(abs(a - b) / abs(b) for (a, _), (b, _) in zip(slog, dlog))
    assert rel < 1e-5
    for n in PARAM_NAMES:
        torch.testing.assert_close(getattr(sparse.sae, n), getattr(dense.sae, n), rtol=1e-4, atol=1e-6)
    resumed, rlog = run_units("sparse", 40, split=17)
    assert rlog == slog
    for k, v in sparse.state().items():
        assert torch.equal(resumed.state()[k], v), k
