"""The claims ledger: verdicts follow the evidence, never the other way round, and every check can fail."""

import copy
import json

import numpy as np
import pytest

from kdsae_core.book import claims, claims_lm
from kdsae_core.cli.main import main
from kdsae_core.common.paths import toy_results_file
from kdsae_core.toy import analysis as ta
from kdsae_core.toy import evidence as toy_evidence
from kdsae_core.toy.config import ToyConfig
from kdsae_core.toy.profiles import PROFILES
from kdsae_core.toy.results import load_results
from kdsae_core.toy.sweep import run_sweep

from .reference import require_reference

# The committed paper grid's per-alpha medians, recomputed from its per-seed floors (results/toy/paper). A change of
# any of them, or of the verdict they give, is a change in the science and must be made on purpose.
COMMITTED_MEDIANS = {
    "rel": {0.8: 0.659099, 0.9: 0.530992, 0.95: 0.366721, 0.99: 0.225839},
    "norm": {0.8: 0.883909, 0.9: 0.817068, 0.95: 0.753396, 0.99: 0.788052},
}
# The affine reading of the same grid: (a, b) per alpha fitted on n = 10, 20, and the held-out (n = 40) medians.
COMMITTED_AFFINE = {
    "fits": {
        0.8: (0.989766, 0.124610),
        0.9: (1.240046, 0.131406),
        0.95: (1.612087, 0.149860),
        0.99: (1.064992, 0.157659),
    },
    "rel": {0.8: 0.940779, 0.9: 0.865166, 0.95: 0.843360, 0.99: 0.481110},
    "norm": {0.8: 0.979697, 0.9: 0.943533, 0.95: 0.938651, 0.99: 0.833950},
}


@pytest.fixture(scope="module")
def tiny_results():
    cfg = ToyConfig.from_profile(
        "quick", n=[6], d_teacher=[2, 3], alpha=[0.8, 0.9], seeds=2, steps=60, batch=256, eval_samples=2048
    )
    return run_sweep(cfg, progress=False)


@pytest.fixture(scope="module")
def committed():
    path = toy_results_file("paper")
    if not path.exists():
        pytest.skip("the committed paper-grid results are not in this checkout")
    return load_results(path)


def by_id(ledger):
    return {c.id: c for c in ledger.claims}


def on_paper_grid(results, floors):
    """A copy of `results` whose settings are the paper grid's (the ledger recomputes that from the settings), each
    pair's per-seed floors set by floors(config, k)."""
    out = copy.deepcopy(results)
    out["settings"].update(PROFILES["paper"], profile="paper", mode="distill", widths=None)
    for c in out["configs"]:
        c["measured_floor"] = [list(floors(c, k)) for k in range(len(c["widths"]))]
    return out


# ---- the 93% claim -----------------------------------------------------------------------------------------------
def test_the_committed_93_percent_verdict_and_its_eight_medians_are_pinned(committed):
    m = ta.accuracy_medians(ta.pairs(committed))
    for kind, expected in COMMITTED_MEDIANS.items():
        assert m[kind] == pytest.approx(expected, abs=1e-6), kind
    assert by_id(claims.build_ledger(committed))["toy-accuracy"].verdict == claims.NOT_REPRODUCED


def test_accuracy_is_recomputed_from_per_seed_floors_not_read_from_the_stored_medians(tiny_results):
    exact = on_paper_grid(tiny_results, lambda c, k: [c["predicted_floor"][k] * 1.01] * 2)
    exact["median_accuracy_by_alpha"] = {"rel": {"0.8": 0.1, "0.9": 0.1}, "norm": {"0.8": 0.1, "0.9": 0.1}}
    assert by_id(claims.build_ledger(exact))["toy-accuracy"].verdict == claims.REPRODUCED


def test_accuracy_verdict_fails_when_one_level_misses_under_both_readings(tiny_results):
    def floors(c, k):
        p = c["predicted_floor"][k]
        return [p + (0.5 * c["L_inf"] if c["alpha"] == 0.9 else 0.001 * p)] * 2

    claim = by_id(claims.build_ledger(on_paper_grid(tiny_results, floors)))["toy-accuracy"]
    assert claim.verdict == claims.NOT_REPRODUCED and "does not clear" in claim.why


def test_toy_accuracy_on_another_grid_is_not_a_paper_verdict(tiny_results):
    claimed = copy.deepcopy(tiny_results)
    claimed["settings"]["matches_paper_grid"] = True  # a stored flag that the settings do not bear out is not believed
    c = by_id(claims.build_ledger(claimed))["toy-accuracy"]
    assert c.verdict == claims.NOT_TESTABLE
    assert "not the paper grid" in c.why and "alpha 0.8" in c.measured


# ---- the other toy checks ------------------------------------------------------------------------------------------
def test_sparsity_order_is_judged_on_fractions_of_l_inf(committed):
    o = ta.sparsity_order(committed)
    assert (o["pairs"], o["wrong_absolute"], o["wrong_fraction"], len(o["beyond"])) == (234, 0, 48, 12)
    assert all(b["width"] <= 2 for b in o["beyond"])
    claim = by_id(claims.build_ledger(committed))["toy-sparsity-order"]
    assert claim.verdict == claims.NOT_REPRODUCED and "12 rise by more than 0.02 L_inf" in claim.measured


def test_sparsity_order_passes_when_fractions_fall_with_alpha(tiny_results):
    ordered = on_paper_grid(tiny_results, lambda c, k: [c["L_inf"] * (1.0 - c["alpha"]) / (k + 1)] * 2)
    assert by_id(claims.build_ledger(ordered))["toy-sparsity-order"].verdict == claims.REPRODUCED


def test_lower_bound_counts_only_pairs_with_a_prediction(committed):
    b = ta.lower_bound(committed)
    assert (b["pairs"], b["trivial"], b["nonzero"], b["nonzero_at_or_above"]) == (312, 172, 140, 140)
    assert b["largest_bias_gap"] == pytest.approx(0.15)  # Var/E[x^2] = 1 - 3(1 - alpha)/4 at alpha 0.8


def test_lower_bound_fails_when_a_pair_measures_below_its_prediction(tiny_results):
    under = on_paper_grid(tiny_results, lambda c, k: [0.5 * c["predicted_floor"][k]] * 2)
    assert by_id(claims.build_ledger(under))["toy-lower-bound"].verdict == claims.NOT_REPRODUCED


def test_knee_is_not_judged_in_distill_mode_and_says_why(committed):
    claim = by_id(claims.build_ledger(committed))["toy-knee"]
    assert claim.verdict == claims.NOT_TESTABLE
    assert "in 48 of 48 configurations" in claim.why


def test_knee_verdict_comes_from_a_direct_mode_sweep(tiny_results):
    cfg = ToyConfig.from_profile("direct", n=[6], alpha=[0.8, 0.9], seeds=2, steps=80, batch=256, eval_samples=2048)
    direct = run_sweep(cfg, progress=False)
    # d*_S = 6 / g(alpha) = 1.93 and 1.38: widths 1 .. ceil(1.5 d*_S) + 1 = 4 at both levels, ceil(d*_S) = 2
    assert [c["widths"] for c in direct["configs"]] == [[1, 2, 3, 4], [1, 2, 3, 4]]

    def judged(floors):
        ev = copy.deepcopy(direct)
        for c in ev["configs"]:
            c["measured_floor"] = [[f] * 2 for f in floors]
        return by_id(claims.build_ledger(claims.ToyEvidence(tiny_results, "tiny", ev, "direct")))["toy-knee"]

    bottoms_at_2 = judged([0.4, 0.1, 0.1, 0.1])  # the knee at width 2 = ceil(d*_S)
    assert bottoms_at_2.verdict == claims.REPRODUCED and "2/2 configurations" in bottoms_at_2.measured
    falling = judged([0.4, 0.3, 0.2, 0.1])  # still falling at the widest student: knee 4, two past ceil(d*_S)
    assert falling.verdict == claims.NOT_REPRODUCED and "median |knee - ceil(d*_S)| = 2" in falling.measured


def test_feature_budget_counts_only_students_that_could_exceed_it(tiny_results):
    s = ta.budget_summary(tiny_results)
    countable = sum(2 for c in tiny_results["configs"] for b in c["feature_budget"] if b < 6)  # F_S < n = 6
    trivial = sum(2 for c in tiny_results["configs"] for b in c["feature_budget"] if b == 6)
    assert (s["models"], s["trivial"]) == (countable, trivial) and countable > 0 and trivial > 0
    assert s["above_budget"] + s["at_budget"] + s["below_budget"] == countable
    over = on_paper_grid(tiny_results, lambda c, k: c["measured_floor"][k])
    for c in over["configs"]:
        c["represented_features"]["0.5"] = [[b + 1] * 2 for b in c["feature_budget"]]
    assert by_id(claims.build_ledger(over))["toy-feature-budget"].verdict == claims.NOT_REPRODUCED


def test_floor_split_adds_up_to_the_measured_floor(tiny_results):
    for c in tiny_results["configs"]:
        for t in ("0.3", "0.5", "0.7"):
            total = np.array(c["floor_dropped"][t]) + np.array(c["floor_interference"][t])
            np.testing.assert_allclose(total, c["measured_floor"], rtol=1e-5)
        assert np.all(np.array(c["represented_features"]["0.3"]) >= np.array(c["represented_features"]["0.7"]))


def test_the_committed_affine_reading_is_pinned_and_fails(committed):
    r = ta.affine_reading(committed)
    for a, (slope, intercept) in COMMITTED_AFFINE["fits"].items():
        assert (r["per_alpha"][a]["a"], r["per_alpha"][a]["b"]) == (
            pytest.approx(slope, abs=1e-6),
            pytest.approx(intercept, abs=1e-6),
        )
    assert r["per_alpha"][0.99]["fit"] == "all levels"  # every n <= 20 pair is predicted 0 at alpha 0.99
    for kind in ("rel", "norm"):
        assert r["accuracy"][kind] == pytest.approx(COMMITTED_AFFINE[kind], abs=1e-6)
    assert by_id(claims.build_ledger(committed))["toy-affine-reading"].verdict == claims.CALIBRATED_FAILS


def test_affine_reading_holds_on_held_out_data_that_are_affine_in_the_prediction(tiny_results):
    """Feature counts 10, 20 and 40 whose floors are exactly 0.8 L* + 0.05 L_inf: the fit on 10 and 20 finds the
    constants and predicts 40 exactly, so the calibrated reading holds (and stays a calibrated reading)."""
    results = copy.deepcopy(tiny_results)
    results["configs"] = [dict(c, n=n) for n in (10, 20, 40) for c in copy.deepcopy(tiny_results["configs"])]
    for c in results["configs"]:
        c["measured_floor"] = [[(0.8 * p / c["L_inf"] + 0.05) * c["L_inf"]] * 2 for p in c["predicted_floor"]]
    r = ta.affine_reading(results)
    for v in r["per_alpha"].values():
        assert (v["a"], v["b"]) == (pytest.approx(0.8), pytest.approx(0.05))
    assert by_id(claims.build_ledger(results))["toy-affine-reading"].verdict == claims.CALIBRATED_HOLDS


# ---- released data and the hub --------------------------------------------------------------------------------------
def test_released_data_checks_are_consistent_never_reproduced(tiny_results):
    require_reference()
    entries = by_id(claims.build_ledger(tiny_results))
    for cid in (
        "pythia-l12-F",
        "pythia-l12-alpha",
        "pythia-l12-dstar",
        "pythia-l12-loss128",
        "pythia-dstar-above-dmodel",
    ):
        assert entries[cid].verdict == claims.CONSISTENT, entries[cid]
    assert "25,219" in entries["pythia-l12-loss128"].measured
    assert claims.REPRODUCED not in {c.verdict for c in entries.values() if c.id.startswith("pythia")}


def test_every_abstract_claim_has_an_entry_even_when_untestable(tiny_results):
    entries = by_id(claims.build_ledger(tiny_results))
    for cid in ("distill-floor-order", "distill-affine-r2", "probing-coarse-concepts"):
        assert entries[cid].verdict == claims.NOT_TESTABLE and "needs Experiment" in entries[cid].why
    assert "R^2 = 0.993" in entries["distill-affine-r2"].text


def test_reference_claims_without_the_data_are_not_testable(tiny_results, monkeypatch):
    monkeypatch.setattr(claims_lm, "reference_dir", lambda: None)  # the released files are missing
    entries = by_id(claims.build_ledger(tiny_results))
    for cid in ("pythia-l12-F", "pythia-dstar-above-dmodel"):  # never the published values against themselves
        assert entries[cid].verdict == claims.NOT_TESTABLE and "KDSAE_REFERENCE_DIR" in entries[cid].why


def test_paper_scale_claims_are_never_reproduced_without_the_hub(tiny_results):
    entries = by_id(claims.build_ledger(tiny_results, source="local"))
    for cid in ("exp2-trialA-L0", "exp2-trialC-target"):
        assert entries[cid].verdict == claims.NOT_TESTABLE and "--source hub" in entries[cid].why


def test_hub_claims_use_the_published_measurements(tiny_results):
    fake = {"A": [{"avg_active": 6_100.0, "dead": 0}] * 24, "C": [{"avg_active": 149.0, "dead": 7_000}] * 24}
    entries = by_id(claims.build_ledger(tiny_results, source="hub", hub_measurements=fake.__getitem__))
    assert entries["exp2-trialA-L0"].verdict == claims.REPRODUCED
    assert entries["exp2-trialC-target"].verdict == claims.REPRODUCED


def test_a_failing_check_is_an_error_not_a_verdict(tiny_results):
    def broken(trial):
        raise RuntimeError("boom")

    entries = by_id(claims.build_ledger(tiny_results, source="hub", hub_measurements=broken))
    assert entries["exp2-trialA-L0"].verdict == claims.ERROR and "boom" in entries["exp2-trialA-L0"].why


# ---- the command line ------------------------------------------------------------------------------------------------
def test_verify_with_no_options_judges_the_committed_results(committed, tmp_path, capsys):
    assert main(["verify", "--json", str(tmp_path / "l.json")]) == 0
    out = capsys.readouterr().out
    printed = {c["id"]: c for c in json.loads((tmp_path / "l.json").read_text())}
    expected = by_id(claims.build_ledger(toy_evidence.committed_evidence(), embedded_run=None))
    for cid in ("toy-accuracy", "toy-sparsity-order", "toy-lower-bound", "toy-affine-reading", "toy-knee"):
        assert printed[cid]["verdict"] == expected[cid].verdict, cid
    assert "inputs: results/toy/paper/toy_results.json" in out and "a quick sweep run now" not in out


def test_verify_cli_judges_a_given_results_file(tmp_path, capsys):
    cfg = ToyConfig.from_profile(
        "quick", n=[6], d_teacher=[2], alpha=[0.8], seeds=1, steps=20, batch=128, eval_samples=512
    )
    run_sweep(cfg, tmp_path / "toy", progress=False)
    assert main(["verify", "--toy-results", str(tmp_path / "toy"), "--json", str(tmp_path / "l.json")]) == 0
    out = capsys.readouterr().out
    assert "toy-accuracy" in out and "not testable here" in out and f"inputs: {tmp_path / 'toy'}" in out
    assert (tmp_path / "l.json").exists()
