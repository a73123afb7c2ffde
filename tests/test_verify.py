"""The claims ledger: verdicts follow the evidence, never the other way round."""

import copy

import pytest

from kdsae_core import verify
from kdsae_core.cli import main
from kdsae_core.toy_sweep import ToyConfig, run_sweep

from .reference import require_reference


@pytest.fixture(scope="module")
def tiny_results():
    cfg = ToyConfig.from_profile("quick", n=[6], d_teacher=[2, 3], alpha=[0.8, 0.9], seeds=2, steps=60,
                                 batch=256, eval_samples=2048)
    return run_sweep(cfg, progress=False)


def by_id(ledger):
    return {c.id: c for c in ledger.claims}


def test_toy_accuracy_on_another_grid_is_not_a_paper_verdict(tiny_results):
    claims = by_id(verify.build_ledger(tiny_results))
    c = claims["toy-accuracy"]
    assert c.verdict == verify.NOT_TESTABLE
    assert "not the paper grid" in c.why and "alpha 0.8" in c.measured


def test_toy_accuracy_verdict_follows_the_numbers_on_the_paper_grid(tiny_results):
    results = copy.deepcopy(tiny_results)
    results["settings"]["matches_paper_grid"] = True
    results["median_accuracy_by_alpha"]["rel"] = {"0.8": 0.95, "0.9": 0.97}
    assert by_id(verify.build_ledger(results))["toy-accuracy"].verdict == verify.REPRODUCED
    results["median_accuracy_by_alpha"]["rel"]["0.9"] = 0.90
    assert by_id(verify.build_ledger(results))["toy-accuracy"].verdict == verify.NOT_REPRODUCED


def test_paper_scale_claims_are_never_reproduced_without_the_hub(tiny_results):
    claims = by_id(verify.build_ledger(tiny_results, source="local"))
    for cid in ("exp2-trialA-L0", "exp2-trialC-target"):
        assert claims[cid].verdict == verify.NOT_TESTABLE and "--source hub" in claims[cid].why


def test_hub_claims_use_the_published_measurements(tiny_results):
    fake = {"A": [{"avg_active": 6_100.0, "dead": 0}] * 24, "C": [{"avg_active": 149.0, "dead": 7_000}] * 24}
    claims = by_id(verify.build_ledger(tiny_results, source="hub", hub_measurements=fake.__getitem__))
    assert claims["exp2-trialA-L0"].verdict == verify.REPRODUCED
    assert claims["exp2-trialC-target"].verdict == verify.REPRODUCED


def test_a_failing_check_is_an_error_not_a_verdict(tiny_results):
    def broken(trial):
        raise RuntimeError("boom")
    claims = by_id(verify.build_ledger(tiny_results, source="hub", hub_measurements=broken))
    assert claims["exp2-trialA-L0"].verdict == verify.ERROR and "boom" in claims["exp2-trialA-L0"].why


def test_reference_claims_reproduce_from_the_released_data(tiny_results):
    require_reference()
    claims = by_id(verify.build_ledger(tiny_results))
    for cid in ("pythia-l12-F", "pythia-l12-alpha", "pythia-l12-dstar", "pythia-l12-loss128",
                "pythia-dstar-above-dmodel"):
        assert claims[cid].verdict == verify.REPRODUCED, claims[cid]
    assert "25,219" in claims["pythia-l12-loss128"].measured


def test_reference_claims_without_the_data_are_not_testable(tiny_results, monkeypatch, tmp_path):
    monkeypatch.setattr(verify, "reference_dir", lambda: None)
    claims = by_id(verify.build_ledger(tiny_results))
    assert claims["pythia-l12-F"].verdict == verify.NOT_TESTABLE
    assert "KDSAE_REFERENCE_DIR" in claims["pythia-l12-F"].why


def test_verify_cli_prints_the_ledger_and_exits_by_the_rules(tmp_path, capsys):
    cfg = ToyConfig.from_profile("quick", n=[6], d_teacher=[2], alpha=[0.8], seeds=1, steps=20, batch=128,
                                 eval_samples=512)
    run_sweep(cfg, tmp_path / "toy", progress=False)
    assert main(["verify", "--toy-results", str(tmp_path / "toy"), "--json", str(tmp_path / "l.json")]) == 0
    out = capsys.readouterr().out
    assert "toy-accuracy" in out and "not testable here" in out
    assert (tmp_path / "l.json").exists()
