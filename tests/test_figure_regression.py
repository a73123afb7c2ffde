"""Figure-data regression: drifts are found, named and sized; exact copies pass."""

import json
import shutil

import pandas as pd

from kdsae_core.figure_regression import EXACT, RETRAIN_TOLERANCES, compare


def make_figures(folder):
    (folder / "trial_a").mkdir(parents=True)
    pd.DataFrame({"layer": [0, 1, 2], "L0": [100.0, 120.0, 140.0], "mse": [0.01, 0.02, 0.03]}).to_csv(
        folder / "trial_a" / "summary_card.csv", index=False)
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
    (tmp_path / "b" / "toy_floors.json").write_text(json.dumps({"widths": [1, 2], "floor": [0.5, 0.25], "label": "n=20"}))
    drifts = {str(d) for d in compare(tmp_path / "a", tmp_path / "b", EXACT)}
    assert "trial_a/summary_card.csv: -: missing from the new figures" in drifts
    assert any("toy_floors.json: label: 'n=10' became 'n=20'" == d for d in drifts)
