"""Every Experiment 2 figure, drawn from the synthetic fixture: its saved data equal the measurement files it
came from, its title names model, layers and budget, and no two texts overlap."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from kdsae_core import theory
from kdsae_core.cli.main import main  # noqa: E402
from kdsae_core.figures import catalog as cat  # noqa: E402
from kdsae_core.runs import tables as run_data

FIXTURE = Path(__file__).parent / "fixtures" / "exp2_run"
FINAL_KEYS = {
    "L0": "avg_active",
    "alpha": "alpha",
    "g_alpha": "g_alpha",
    "d_star_S": "d_star_S",
    "mse": "mse",
    "explained_variance": "explained_variance",
    "dead": "dead",
    "F_alive": "F_alive",
}


def raw(trial, layer, snapshot="final"):
    return json.loads((FIXTURE / "measurements" / trial / f"layer{layer:02d}_{snapshot}.json").read_text())


def raw_metrics(trial):
    rows = [json.loads(x) for x in (FIXTURE / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["trial"] == trial]


@pytest.fixture(scope="module")
def run():
    return run_data.load_run(FIXTURE)


@pytest.fixture(scope="module")
def drawn(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("figs")
    return {s.key: cat.draw(s.key, run, out, trial) for s, trial in cat.run_figures_for(run)}


def check_per_layer(data: pd.DataFrame, trial: str, metrics):
    assert list(data["layer"]) == [0, 1, 2]
    for r in data.itertuples(index=False):
        f = raw(trial, r.layer)
        for m in metrics:
            assert getattr(r, m) == f[FINAL_KEYS[m]], (trial, r.layer, m)


def drawn_texts(fig) -> list[Text]:
    """The texts a render actually draws (tick labels only for ticks inside the view)."""
    texts = [fig._suptitle, fig._supxlabel, fig._supylabel, *fig.texts]
    for leg in fig.legends:
        texts += [*leg.get_texts(), leg.get_title()]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        if ax.axison:
            texts += [ax.xaxis.label, ax.yaxis.label]
            for axis in (ax.xaxis, ax.yaxis):
                for tick in axis._update_ticks():
                    texts += [tick.label1, tick.label2]
        if ax.get_legend():
            texts += [*ax.get_legend().get_texts(), ax.get_legend().get_title()]
    unique = {id(t): t for t in texts if t is not None and t.get_visible() and t.get_text().strip()}
    return list(unique.values())


def overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of drawn texts whose rendered boxes overlap by more than 1 pixel each way."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = []
    for t in drawn_texts(fig):
        bb = t.get_window_extent(renderer)
        boxes.append((t.get_text(), bb.x0 + 1, bb.x1 - 1, bb.y0 + 1, bb.y1 - 1))
    bad = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if a[1] < b[2] and b[1] < a[2] and a[3] < b[4] and b[3] < a[4]:
                bad.append((a[0], b[0]))
    return bad


def test_the_catalog_has_every_figure_of_the_issue():
    chapters = {}
    for s in cat.RUN_FIGURES + cat.REFERENCE_FIGURES:
        chapters.setdefault(s.chapter, []).append(s.key)
    assert len(chapters["02_trial_a"]) == 5
    assert chapters["03_trial_b"] == [
        "paper_heatmap",
        "slides_heatmap",
        "appendix_sidecar",
        "small_multiples",
        "smooth_depth",
        "correlation",
        "headline",
    ]
    assert chapters["04_trial_c"] == ["dashboard", "depth_landscape", "controller"]
    assert chapters["05_trials_compared"] == ["frontier"] and len(chapters["06_pythia_reference"]) == 3
    anchors = [s.anchor for s in cat.RUN_FIGURES + cat.REFERENCE_FIGURES]
    assert all(anchors) and len(set(anchors)) == len(anchors)


def test_one_catalog_holds_every_figure_of_both_experiments_with_its_sentence():
    keys = [s.key for s in cat.ALL_FIGURES]
    assert len(keys) == len(set(keys))
    assert {s.chapter for s in cat.ALL_FIGURES} == {
        "01_toy_validation",
        "02_trial_a",
        "03_trial_b",
        "04_trial_c",
        "05_trials_compared",
        "06_pythia_reference",
    }
    assert all(callable(s.data) and callable(s.draw) and callable(s.sentence) for s in cat.ALL_FIGURES)
    assert [s.key for s in cat.ALL_FIGURES if s.in_paper] == ["paper_heatmap"]


def test_figures_import_nothing_from_the_layers_above_them():
    import ast

    for path in (Path(cat.__file__).parent).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            assert not [n for n in names if n.startswith(("kdsae_core.book", "kdsae_core.cli"))], path.name


def test_every_figure_names_model_layers_budget_and_trial(drawn):
    for key, d in drawn.items():
        title = d.figure._suptitle.get_text().replace("\n", " ")
        assert "synthetic-test-fixture" in title and "layers 0\u20132" in title and "20k training tokens" in title, key
        assert "Pythia" not in title, key
        if d.spec.trial:
            assert f"trial {d.spec.trial}" in title, key


def test_no_overlapping_text(drawn):
    problems = {key: overlapping_texts(d.figure) for key, d in drawn.items()}
    assert {k: v for k, v in problems.items() if v} == {}


def test_saved_png_and_data_files(drawn):
    for key, d in drawn.items():
        png = d.files["png"].read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, key
        saved = pd.read_csv(d.files["data"])
        assert len(saved) == len(d.data) and list(saved.columns) == list(d.data.columns), key
    assert drawn["paper_heatmap"].files["svg"].read_text().lstrip().startswith("<?xml")


def test_trial_a_training_curves_are_the_logged_steps(drawn):
    data = drawn["training_curves"].data
    rows = raw_metrics("A")
    assert len(data) == len(rows) == 30
    for col in ("mse", "l1", "loss", "tokens"):
        got = data.sort_values(["layer", "step"])[col].to_numpy()
        want = [r[col] for r in sorted(rows, key=lambda r: (r["layer"], r["step"]))]
        np.testing.assert_array_equal(got, want)


def test_trial_a_per_layer_figures(drawn):
    check_per_layer(drawn["summary_card"].data, "A", FINAL_KEYS)
    check_per_layer(drawn["kd_quantities"].data, "A", ["alpha", "g_alpha", "d_star_S", "F_alive", "L0"])
    check_per_layer(drawn["l0_vs_mse"].data, "A", ["L0", "mse"])


def test_trial_a_predicted_floors_match_file_and_theory(drawn):
    data = drawn["predicted_floors"].data
    for layer in (0, 1, 2):
        f = raw("A", layer)
        mine = data[data["layer"] == layer]
        file_pts = mine[mine["source"] == "file"].set_index("width")
        assert sorted(file_pts.index) == sorted(int(w) for w in f["predictions"])
        for w, p in f["predictions"].items():
            assert file_pts.loc[int(w), "predicted_floor"] == p["predicted_floor"]
        curve = mine[mine["source"] == "curve"]
        expect = theory.refined_floor(f["sorted_importance"], curve["width"].to_numpy(), f["alpha"])
        np.testing.assert_allclose(curve["predicted_floor"], expect, rtol=1e-12)
        on_both = curve[curve["width"].isin(file_pts.index)]
        np.testing.assert_allclose(
            on_both["predicted_floor"], file_pts.loc[on_both["width"], "predicted_floor"], rtol=1e-12
        )
        np.testing.assert_allclose(
            mine["floor_frac"], mine["predicted_floor"] / sum(f["sorted_importance"]), rtol=1e-12
        )
        assert curve["width"].max() >= f["d_star_S"] and curve["predicted_floor"].iloc[-1] == 0.0


def test_trial_b_variants(drawn):
    for key in ("paper_heatmap", "slides_heatmap"):
        check_per_layer(drawn[key].data, "B", FINAL_KEYS)
    side = drawn["appendix_sidecar"].data
    check_per_layer(side, "B", FINAL_KEYS)
    for r in side.itertuples(index=False):
        f = raw("B", r.layer)
        imp = np.array(f["sorted_importance"])
        assert r.top10pct_share == pytest.approx(imp[: int(np.ceil(0.1 * imp.size))].sum() / imp.sum(), rel=1e-12)
        assert r.features_kept_at_d_model == f["predictions"][str(f["d_in"])]["features_kept"]
    sm = drawn["small_multiples"].data
    assert len(sm) == 3 * len(FINAL_KEYS)
    for m, g in sm.groupby("metric"):
        assert g["relative"].min() == 0.0 and g["relative"].max() == 1.0
        assert list(g.sort_values("layer")["value"]) == [raw("B", layer)[FINAL_KEYS[m]] for layer in (0, 1, 2)]
    smooth = drawn["smooth_depth"].data
    at_layers = smooth[smooth["measured"]].set_index("depth")
    assert list(at_layers.index) == [0.0, 1.0, 2.0]
    for m in FINAL_KEYS:
        v = np.array([raw("B", layer)[FINAL_KEYS[m]] for layer in (0, 1, 2)], float)
        np.testing.assert_allclose(at_layers[m], (v - v.min()) / (v.max() - v.min()), atol=1e-12)
    assert smooth["depth"].is_monotonic_increasing and len(smooth) > 100
    corr = drawn["correlation"].data
    a = [raw("B", layer)["alpha"] for layer in (0, 1, 2)]
    dead = [raw("B", layer)["dead"] for layer in (0, 1, 2)]
    r = corr[(corr["metric_x"] == "alpha") & (corr["metric_y"] == "dead")]["r"].iloc[0]
    assert r == pytest.approx(np.corrcoef(a, dead)[0, 1], abs=1e-12)
    h = drawn["headline"].data.iloc[0]
    assert h["mean_alpha"] == pytest.approx(np.mean(a), rel=1e-12) and h["total_dead"] == sum(dead)
    assert h["mean_L0"] == pytest.approx(np.mean([raw("B", layer)["avg_active"] for layer in (0, 1, 2)]), rel=1e-12)


def test_trial_c_figures(drawn):
    dash = drawn["dashboard"].data
    check_per_layer(dash, "C", ["L0", "alpha", "g_alpha", "mse", "dead"])
    assert set(dash["target_L0"]) == {10.0}
    check_per_layer(drawn["depth_landscape"].data, "C", FINAL_KEYS)
    ctrl = drawn["controller"].data
    rows = sorted(raw_metrics("C"), key=lambda r: (r["layer"], r["tokens"]))
    np.testing.assert_array_equal(ctrl["lambda"], [r["lambda"] for r in rows])
    np.testing.assert_array_equal(ctrl["L0"], [r["L0"] for r in rows])


def test_frontier_has_every_layer_of_every_trial(drawn):
    data = drawn["frontier"].data
    assert len(data) == 12 and set(data["trial"]) == {"A", "B", "C", "P7e-04"}
    assert list(data[data["pilot"]]["trial"].unique()) == ["P7e-04"]
    for r in data.itertuples(index=False):
        f = raw(r.trial, r.layer)
        assert (r.L0, r.mse) == (f["avg_active"], f["mse"])


def test_one_layer_draws_too(run):
    for s, trial in cat.run_figures_for(run):
        d = cat.draw(s.key, run, None, trial, layers=[1])
        assert set(d.data["layer"]) == {1} if "layer" in d.data else True, s.key
        assert "layer 1" in d.figure._suptitle.get_text(), s.key


@pytest.mark.slow
def test_many_layers_stay_legible(run):
    """24 layers (Pythia-410M shape): the same code, without a crowded legend or overlapping labels."""
    m = run.measurements
    rows = []
    for layer in range(24):
        rows.append(m[(m["trial"] == "A") & (m["layer"] == layer % 3)].assign(layer=layer))
    big = run_data.RunData(
        run.folder,
        {**run.config, "layers": list(range(24))},
        run.metrics,
        pd.concat(rows, ignore_index=True),
        run.predictions,
        run.importance,
        run.summaries,
    )
    for key in ("summary_card", "paper_heatmap", "small_multiples", "dashboard"):
        d = cat.draw(key, big, None, "A")
        assert overlapping_texts(d.figure) == [], key


@pytest.mark.slow
def test_kdsae_figures_writes_every_figure_with_its_data(tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["figures", "--run", str(FIXTURE), "--out", str(out)]) == 0
    index = json.loads((out / "figures.json").read_text())
    assert len(index["figures"]) == 16 and index["skipped"] == []
    for f in index["figures"]:
        files = f["files"]
        assert any(x.endswith(".png") for x in files) and any(x.endswith(".csv") for x in files), f
        for x in files:
            assert (out / x).stat().st_size > 0
    saved = pd.read_csv(out / "trialB_headline.csv").iloc[0]
    assert saved["total_dead"] == sum(raw("B", layer)["dead"] for layer in (0, 1, 2))
    # the saved files hold the measurement files' numbers exactly (full float precision)
    check_per_layer(pd.read_csv(out / "trialA_summary_card.csv"), "A", FINAL_KEYS)
    check_per_layer(pd.read_csv(out / "trialC_dashboard.csv"), "C", ["L0", "alpha", "g_alpha", "mse", "dead"])
    ctrl = pd.read_csv(out / "trialC_controller.csv")
    rows = sorted(raw_metrics("C"), key=lambda r: (r["layer"], r["tokens"]))
    assert ctrl["lambda"].tolist() == [r["lambda"] for r in rows]
    floors = pd.read_csv(out / "trialA_predicted_floors.csv")
    f = floors[(floors["source"] == "file") & (floors["layer"] == 2)]
    assert f["predicted_floor"].tolist() == [raw("A", 2)["predictions"][str(w)]["predicted_floor"] for w in f["width"]]
    assert "16 figures" in capsys.readouterr().out


def test_kdsae_figures_refuses_bad_targets(tmp_path, capsys):
    assert main(["figures", "--run", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["figures", "--run", str(FIXTURE), "--out", str(FIXTURE / "figs")]) == 2
    assert "inside the run folder" in capsys.readouterr().err
    assert not (FIXTURE / "figs").exists()
    (tmp_path / "file").write_text("x")
    assert main(["figures", "--run", str(FIXTURE), "--out", str(tmp_path / "file")]) == 2
    assert (tmp_path / "file").read_text() == "x"


def test_the_correlation_sentence_never_reports_a_relation_that_holds_by_definition():
    """Issue 21, item 9: alpha = 1 - L0/F makes L0 vs alpha r = -1 by arithmetic; the chapter reports the strongest
    relation among the others, and the figure marks the definitional pairs."""
    import pandas as pd

    from kdsae_core.book.chapters import sentence
    from kdsae_core.figures.exp2_trial_b import correlation, definitional

    r = {("L0", "alpha"): -1.0, ("dead", "F_alive"): -1.0, ("mse", "dead"): 0.7, ("L0", "mse"): 0.2}
    rows = [
        {"metric_x": x, "metric_y": y, "r": v, "n_layers": 6} for (a, b), v in r.items() for x, y in ((a, b), (b, a))
    ]
    data = pd.DataFrame(rows)
    text = sentence("correlation", data)
    assert "MSE vs dead" in text.replace("dead latents", "dead") or "dead vs MSE" in text, text
    assert "r = +0.70" in text and "r = -1.00" not in text and "not fixed by definition" in text
    assert definitional("alpha", "L0") and definitional("F_alive", "dead") and definitional("d_star_S", "L0")
    assert not definitional("mse", "dead")
    fig = correlation(
        pd.concat(
            [
                data,
                pd.DataFrame(
                    [
                        {"metric_x": m, "metric_y": m, "r": 1.0, "n_layers": 6}
                        for m in ("L0", "alpha", "dead", "F_alive", "mse")
                    ]
                ),
            ]
        ),
        "header",
    )
    assert "related by definition" in fig.axes[0].get_xlabel() and "1 \u2212 L0/F" in fig.axes[0].get_xlabel()


def test_the_sidecar_figure_is_readable_at_page_width(drawn):
    """Issue 21, item 9: the book shows a figure at page width (~7 in); its smallest text must stay >= 6 pt there
    (the earlier 8 pt at 13.5 in came out at about 4 pt)."""
    from matplotlib.image import imread

    png = drawn["appendix_sidecar"].files["png"]
    from kdsae_core.figures.exp2_trial_b import appendix_sidecar

    fig = appendix_sidecar(drawn["appendix_sidecar"].data, "header")
    width = fig.get_size_inches()[0]
    sizes = [
        t.get_fontsize()
        for ax in fig.axes
        for t in ax.texts + (ax.get_xticklabels() + ax.get_yticklabels() if ax.axison else [])
        if t.get_text()
    ]
    assert min(sizes) * 7.0 / width >= 6.0, (min(sizes), width)
    assert imread(png).shape[1] > 1000
