"""Experiment 1: data, gradients, the batched program against one model at a time, resume, CLI."""

import hashlib
import json

import numpy as np
import pytest
import torch

from benchmarks.toy_autograd import AutogradModel
from kdsae_core.cli.main import main
from kdsae_core.common.errors import InvalidParameter
from kdsae_core.toy.config import REPRESENTED_THRESHOLDS, ToyConfig
from kdsae_core.toy.model import Block, DataStream, Workspace, cosine_lr, expected_x_squared, importance_profile
from kdsae_core.toy.results import assemble_results
from kdsae_core.toy.sweep import ToySweep, _Interrupted, run_sweep

TINY = dict(n=[6], d_teacher=[2, 3], alpha=[0.8, 0.95], seeds=2, steps=60, batch=256, eval_samples=2048)


@pytest.mark.parametrize("alpha", [0.5, 0.9])
def test_data_distribution(alpha):
    x = DataStream(20, [alpha], ("test",)).sample(50_000)[0].double()
    # E[x^2] = (1 - alpha) / 3 with standard error ~ sqrt(Var/N); 5% relative is > 4 sigma here.
    assert x.square().mean().item() == pytest.approx(expected_x_squared(alpha), rel=0.05)
    assert (x > 0).double().mean().item() == pytest.approx(1 - alpha, abs=0.01)
    assert x.min() >= 0 and x.max() <= 1


def test_streams_are_reproducible_and_independent_of_the_other_levels():
    a = DataStream(5, [0.8, 0.9], ("k",)).sample(16)
    b = DataStream(5, [0.9], ("k",)).sample(16)
    assert torch.equal(a[1], b[0])


def test_importance_profiles():
    assert importance_profile("zipf:1", 4).tolist() == [1, 1 / 2, 1 / 3, 1 / 4]
    assert importance_profile("geometric:0.5", 3).tolist() == [1, 0.5, 0.25]
    assert importance_profile("uniform", 3).tolist() == [1, 1, 1]
    for bad in ("foo", "zipf:x", "geometric:2", "uniform:3"):
        with pytest.raises(InvalidParameter, match="importance profile"):
            importance_profile(bad, 3)


def test_hand_written_gradients_match_autograd():
    n, (A, S, K), d = 7, (2, 3, 4), 4
    widths = [[[1, 2, 3, 4] for _ in range(S)] for _ in range(A)]
    seeds = [[[100 * a + 10 * s + k for k in range(K)] for s in range(S)] for a in range(A)]
    blk = Block(n, d, widths, seeds, importance_profile("zipf:1", n))
    blk.b = torch.randn(blk.b.shape, generator=torch.Generator().manual_seed(1)) * 0.1
    x = DataStream(n, [0.5, 0.7], ("grad",)).sample(64)
    mask = torch.zeros_like(blk.W)
    for a in range(A):
        for s in range(S):
            for k in range(K):
                mask[a, s, k, : widths[a][s][k]] = 1
    for y in (None, torch.rand(A, S, 1, 64, n, generator=torch.Generator().manual_seed(2))):
        gW, gb = blk.gradients(x, y)
        W, b = blk.W.clone().requires_grad_(), blk.b.clone().requires_grad_()
        h = torch.einsum("abn,askdn->askbd", x, W)
        out = torch.relu(torch.einsum("askbd,askdn->askbn", h, W) + b[:, :, :, None, :])
        target = x[:, None, None] if y is None else y
        (((out - target) ** 2) * blk.importance).sum(-1).mean(-1).sum().backward()
        torch.testing.assert_close(gW, W.grad * mask, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gb, b.grad, rtol=1e-5, atol=1e-6)
        assert torch.all(gW[mask == 0] == 0)  # padded rows never move


def test_workspace_reuses_memory_per_role_and_never_aliases_two_roles():
    ws = Workspace()
    a = ws.get("pre", 3, 4)
    assert ws.get("pre", 2, 5).data_ptr() == a.data_ptr()  # same role, fits: the same memory
    assert ws.get("residual", 3, 4).data_ptr() != a.data_ptr()  # another role: its own memory
    bigger = ws.get("pre", 5, 7)
    assert bigger.shape == (5, 7) and bigger.is_contiguous()


def test_blocks_sharing_scratch_memory_train_as_if_alone():
    # Two blocks of different shapes stepped alternately (the workspace regrows and shrinks between them)
    # end bit for bit where each ends when trained by itself.
    def make(n, d):
        widths = [[[w for w in range(1, d + 1)] for _ in range(2)] for _ in range(2)]
        seeds = [[[7 * a + 3 * s + w for w in range(1, d + 1)] for s in range(2)] for a in range(2)]
        return Block(n, d, widths, seeds, importance_profile("zipf:1", n))

    def batches(n):
        return DataStream(n, [0.8, 0.9], ("workspace-test", n))

    def step(blk, stream):  # against a target of the block's own making: forward and step both use scratch
        x = stream.sample(64)
        blk.step(x, blk.forward(x)[:, :, :1] * 0.5, 1e-2)

    together, alone = [make(12, 3), make(7, 2)], [make(12, 3), make(7, 2)]
    streams = [batches(12), batches(7)]
    for _ in range(5):
        for blk, st in zip(together, streams):
            step(blk, st)
    for blk, st in zip(alone, [batches(12), batches(7)]):
        for _ in range(5):
            step(blk, st)
    for t, a in zip(together, alone):
        assert torch.equal(t.P, a.P) and torch.equal(t.v, a.v)


def test_batched_program_equals_one_model_at_a_time():
    cfg = ToyConfig.from_profile("quick", **TINY)
    batched = ToySweep(cfg, progress=False)
    batched.train()
    full = batched.evaluate()
    for s, width in [(1, 2), (0, 1)]:
        single = ToySweep(cfg, progress=False, only=(s, width))
        single.train()
        alone = single.evaluate()
        for key in full:  # (n, d_T)
            d_t = key[1]
            if width > d_t:
                continue
            k = cfg.student_widths(d_t, key[0], cfg.alpha[0]).index(width)
            for a in range(len(cfg.alpha)):
                np.testing.assert_allclose(
                    alone[key]["student"]["floor"][a][0, 0], full[key]["student"]["floor"][a][s, k], rtol=1e-4
                )
            torch.testing.assert_close(
                single.students[(*key, width)].W[:, 0, 0],
                batched.students[(*key, width)].W[:, s, 0],
                rtol=1e-4,
                atol=1e-5,
            )


def test_full_width_model_reaches_the_zero_floor_it_is_predicted():
    # d_S = n keeps every feature (F_S = n), so the predicted floor is 0; a trained model gets close.
    cfg = ToyConfig.from_profile(
        "quick",
        n=[5],
        d_teacher=[5],
        widths=[5],
        alpha=[0.5],
        seeds=1,
        mode="direct",
        steps=1500,
        batch=512,
        lr=1e-2,
        eval_samples=8192,
    )
    r = run_sweep(cfg, progress=False)
    c = r["configs"][0]
    assert c["predicted_floor"] == [0.0]
    assert c["measured_floor_median"][0] < 0.02 * c["L_inf"]
    assert c["kept_features"][0] == [5]


def test_higher_sparsity_packs_more_features_into_one_dimension():
    # A width-1 student on n = 10: at alpha = 0.95 the theory keeps floor(g) = 6 features, at 0.8 only 3,
    # and the measured floor (as a fraction of L_inf) must be lower at the higher sparsity.
    cfg = ToyConfig.from_profile(
        "quick",
        n=[10],
        d_teacher=[1],
        alpha=[0.8, 0.95],
        seeds=2,
        mode="direct",
        steps=800,
        batch=512,
        eval_samples=8192,
    )
    r = run_sweep(cfg, progress=False)
    frac = {c["alpha"]: c["measured_floor_median"][0] / c["L_inf"] for c in r["configs"]}
    assert frac[0.95] < frac[0.8]


def test_results_have_the_documented_shape(tmp_path):
    cfg = ToyConfig.from_profile("quick", **TINY)
    r = run_sweep(cfg, tmp_path, progress=False)
    assert json.loads((tmp_path / "toy_results.json").read_text()) == json.loads(json.dumps(r))
    assert len(r["configs"]) == 4
    c = next(c for c in r["configs"] if c["d_teacher"] == 3 and c["alpha"] == 0.8)
    assert c["widths"] == [1, 2, 3]
    assert np.array(c["measured_floor"]).shape == (3, 2)  # widths x seeds
    assert np.array(c["kept_features"]).shape == (3, 2)
    assert len(c["accuracy_norm"]) == 3
    # d*_S = 6 / g(0.8) = 1.93: only width 1 is below it, so only it has accuracy_rel
    assert c["d_star_S"] == pytest.approx(1.9313, rel=1e-4)
    assert c["accuracy_rel"][0] is not None and c["accuracy_rel"][1:] == [None, None]
    assert set(r["median_accuracy_by_alpha"]) == {"rel", "norm"}
    assert r["median_accuracy_by_alpha"]["rel"]["0.95"] == "no pairs"  # d*_S = 6 / 6.68 < 1
    assert r["excluded"]["0.95"]["rel_excluded_at_or_above_d_star"] == 5
    assert r["settings"]["matches_paper_grid"] is False
    assert not (tmp_path / "toy_state.pt").exists()


def test_interrupted_sweep_resumes_to_identical_results(tmp_path):
    cfg = ToyConfig.from_profile("quick", **TINY)
    reference = run_sweep(cfg, progress=False)
    for phase, step in (("teacher", 25), ("student", 40)):
        out = tmp_path / phase
        first = ToySweep(cfg, out, progress=False)
        with pytest.raises(_Interrupted):
            first.train(stop_after=(phase, step))
        assert (out / "toy_state.pt").exists()
        resumed = run_sweep(cfg, out, progress=False)
        assert resumed == reference


def test_identical_runs_give_identical_bytes(tmp_path):
    cfg = ToyConfig.from_profile("quick", **TINY)
    digests = []
    for name in ("a", "b"):
        run_sweep(cfg, tmp_path / name, progress=False)
        digests.append(hashlib.sha256((tmp_path / name / "toy_results.json").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_assemble_results_uses_seed_medians():
    cfg = ToyConfig.from_profile("quick", n=[4], d_teacher=[1], alpha=[0.5], seeds=3)
    per_level = {"floor": [np.array([[0.1], [0.3], [0.2]])], "kept": [np.array([[1], [1], [1]])]}
    for t in REPRESENTED_THRESHOLDS:
        per_level.update(
            {
                f"represented@{t}": [np.array([[1], [1], [1]])],
                f"dropped@{t}": [np.array([[0.05], [0.05], [0.05]])],
                f"interference@{t}": [np.array([[0.05], [0.25], [0.15]])],
            }
        )
    measured = {(4, 1): {"student": per_level, "teacher": per_level}}
    c = assemble_results(cfg, measured)["configs"][0]
    assert c["measured_floor_median"] == [pytest.approx(0.2)]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--alpha", "1.5"], "alpha must lie strictly between 0 and 1"),
        (["--widths", "0"], "widths must be positive"),
        (["--importance", "pareto:2"], "unknown importance profile"),
        (["--d-teacher", "30"], "must not exceed the feature count"),
        (["--steps", "0"], "--steps must be a whole number"),
    ],
)
def test_bad_cli_input_gives_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert exit_code(["toy", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def exit_code(argv):
    """The exit status of `kdsae ARGV`, whether argparse exits or the verb returns."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_existing_results_are_not_overwritten_without_force(tmp_path, capsys):
    (tmp_path / "toy_results.json").write_text("{}")
    assert main(["toy", "--out", str(tmp_path), "--steps", "1"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "toy_results.json").read_text() == "{}"


@pytest.mark.parametrize("distill", [False, True])
def test_textbook_autograd_model_trains_like_one_model_of_the_block(distill):
    # The one-at-a-time baseline of benchmarks/toy_sweep.py must compute what the batched program computes.
    n, d, steps = 12, 3, 60
    importance = importance_profile("zipf:1", n)
    block = Block(n, d, [[[d]]], [[[7]]], importance)
    start = block.W[0, 0, 0].clone()
    textbook = AutogradModel(start, importance)
    teacher = Block(n, 5, [[[5]]], [[[8]]], importance)
    stream = DataStream(n, [0.8], ("textbook",))
    for step in range(steps):
        x = stream.sample(256)
        y = teacher.forward(x) if distill else None  # [1, 1, 1, B, n]
        lr = cosine_lr(1e-2, step, steps)
        block.step(x, y, lr)
        textbook.step(x[0], None if y is None else y[0, 0, 0], lr)
    assert (block.W[0, 0, 0] - start).abs().max() > 0.05  # the models did train
    torch.testing.assert_close(textbook.W.detach(), block.W[0, 0, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(textbook.b.detach(), block.b[0, 0, 0], rtol=1e-4, atol=1e-5)


def test_a_sweep_split_over_processes_writes_the_same_bytes(tmp_path):
    """Feature counts share nothing, so two processes (n = 6 | n = 8, 9) must give the one-process file."""
    from kdsae_core.toy.parallel import run_parallel, split_feature_counts

    assert split_feature_counts([10, 20, 40], 2) == [[40], [10, 20]]
    assert split_feature_counts([10, 20], 5) == [[20], [10]]
    cfg = ToyConfig.from_profile("quick", **{**TINY, "n": [6, 8, 9], "steps": 40})
    threads = torch.get_num_threads()
    try:  # the same bytes for the same threads per process: here one, as each of the two parts gets
        torch.set_num_threads(1)
        run_sweep(cfg, tmp_path / "one", progress=False)
        torch.set_num_threads(2)  # two to share: one per part
        run_parallel(cfg, tmp_path / "two", jobs=2, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "two" / "toy_results.json").read_bytes() == (tmp_path / "one" / "toy_results.json").read_bytes()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["toy_results.json"]  # parts and lock gone


def test_knee_widths_train_each_level_exactly_as_an_explicit_widths_run_of_that_level():
    """--widths knee trains widths 1..min(n, ceil(1.5 d*_S) + 1) per (n, alpha): each level's students equal, bit for
    bit, those of a direct run of that level alone with those widths written out."""
    common = dict(n=[10], seeds=2, steps=40, batch=256, eval_samples=2048)
    knee = run_sweep(ToyConfig.from_profile("direct", alpha=[0.8, 0.95], **common), progress=False)
    assert [c["widths"] for c in knee["configs"]] == [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4]]  # d*_S = 3.22 and 1.50
    for c in knee["configs"]:
        alone = run_sweep(
            ToyConfig.from_profile("direct", alpha=[c["alpha"]], widths=c["widths"], **common), progress=False
        )["configs"][0]
        for key in ("measured_floor", "represented_features", "floor_dropped", "floor_interference"):
            assert alone[key] == c[key], key


def test_one_model_at_a_time_refuses_knee_widths():
    with pytest.raises(InvalidParameter, match="not --widths knee"):
        ToySweep(ToyConfig.from_profile("direct", n=[6], alpha=[0.8], seeds=1, steps=2), progress=False, only=(0, 1))


def test_the_command_prints_a_table_that_says_what_rel_norm_and_no_pairs_mean(tmp_path, capsys):
    """Issue 21, item 8: the summary is read by people; --json keeps the numbers for programs."""
    from kdsae_core.cli.main import main

    argv = [
        "toy",
        "--n",
        "6",
        "--d-teacher",
        "2,3",
        "--alpha",
        "0.8,0.95",
        "--seeds",
        "2",
        "--steps",
        "30",
        "--eval-samples",
        "1024",
    ]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    text = " ".join(out.split())
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] in (["0.8"], ["0.95"])}
    assert "no pairs" in rows["0.95"] and "(0 of" not in rows["0.95"] and "(5 pairs)" in rows["0.95"]
    assert "of 5 pairs)" in rows["0.8"]
    assert "median over the (teacher, student width) pairs below the critical width d*_S" in text
    assert '"no pairs": d*_S is below every student width' in text and "L_inf: the loss of predicting zero" in text
    assert main([*argv, "--out", str(tmp_path / "b"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["median_accuracy_by_alpha"]["rel"]["0.95"] == "no pairs"
