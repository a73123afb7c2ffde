"""Figure-data regression: drifts are found, named and sized; exact copies pass."""

import json
import shutil

import pandas as pd
import pytest

from kdsae_core.figures.regression import EXACT, RETRAIN_TOLERANCES, compare


def make_figures(folder):
    (folder / "trial_a").mkdir(parents=True)
    pd.DataFrame({"layer": [0, 1, 2], "L0": [100.0, 120.0, 140.0], "mse": [0.01, 0.02, 0.03]}).to_csv(
        folder / "trial_a" / "summary_card.csv", index=False
    )
    (folder / "toy_floors.json").write_text(json.dumps({"widths": [1, 2], "floor": [0.5, 0.25], "label": "n=10"}))


def test_identical_data_passes(tmp_path):
    make_figures(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert compare(tmp_path / "a", tmp_path / "b") == []


def test_a_perturbed_value_names_the_figure_and_the_quantity(tmp_path):
    make_figures(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    df = pd.read_csv(tmp_path / "b" / "trial_a" / "summary_card.csv")
    df.loc[1, "mse"] = 0.021
    df.to_csv(tmp_path / "b" / "trial_a" / "summary_card.csv", index=False)
    drifts = compare(tmp_path / "a", tmp_path / "b")
    assert len(drifts) == 1
    d = drifts[0]
    assert d.figure == "trial_a/summary_card.csv" and d.quantity == "mse"
    assert "1/3 values" in d.detail and "5%" in d.detail
    # a 5% move is inside the re-training tolerance for losses
    assert compare(tmp_path / "a", tmp_path / "b", RETRAIN_TOLERANCES) == []


def test_missing_and_changed_labels_are_reported(tmp_path):
    make_figures(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "trial_a" / "summary_card.csv").unlink()
    (tmp_path / "b" / "toy_floors.json").write_text(
        json.dumps({"widths": [1, 2], "floor": [0.5, 0.25], "label": "n=20"})
    )
    drifts = {str(d) for d in compare(tmp_path / "a", tmp_path / "b", EXACT)}
    assert "trial_a/summary_card.csv: -: missing from the new figures" in drifts
    assert any("toy_floors.json: label: 'n=10' became 'n=20'" == d for d in drifts)


def test_redrawn_figures_of_a_run_match_their_committed_data_and_a_perturbed_copy_is_named(tmp_path):
    """The whole path of `kdsae verify --figures`: draw every figure of a run, keep the data, redraw and compare."""
    from pathlib import Path

    from kdsae_core.figures.regression import check_committed, draw_figure_data, only_data

    fixture = Path(__file__).parent / "fixtures" / "exp2_run"
    groups = draw_figure_data(tmp_path / "drawn", fixture, None)
    only_data(groups["exp2"], tmp_path / "reference" / "exp2")
    assert not list((tmp_path / "reference").rglob("*.png"))
    assert check_committed(tmp_path / "reference", fixture, None) == []  # drawing is deterministic: exact
    card = next((tmp_path / "reference" / "exp2").rglob("*summary_card*.csv"))
    df = pd.read_csv(card)
    df.loc[0, "mse"] *= 1.5
    df.to_csv(card, index=False)
    drifts = check_committed(tmp_path / "reference", fixture, None)
    assert [(d.figure.split("/")[-1], d.quantity) for d in drifts] == [(card.name, "mse")]
    assert "33.3% relative" in drifts[0].detail  # relative to the committed value: 0.005 / 0.015


def test_the_committed_figure_data_are_what_the_committed_run_draws():
    """results/figures/exp2 (the reference of `kdsae verify --figures`) redraws exactly from results/exp2/embedded,
    and that run still matches its manifest; regenerate both with `make results-exp2`."""
    from kdsae_core.common import paths
    from kdsae_core.figures.regression import check_committed
    from kdsae_core.runs import manifest

    run = paths.RESULTS / "exp2" / "embedded"
    if not run.is_dir():
        pytest.skip("no committed embedded run in this checkout")
    assert manifest.verify_manifest(run) == []
    assert check_committed(paths.RESULTS / "figures", run, None) == []
