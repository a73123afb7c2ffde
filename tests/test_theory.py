"""The closed-form theory (book/methods.md) against independent values and the released data."""

import json
import math

import numpy as np
import pytest

from kdsae_core import theory
from kdsae_core.cli.main import main
from kdsae_core.common.errors import BadFile, InvalidParameter

from .reference import require_reference


def sig(x, digits=4):
    return float(f"{x:.{digits}g}")


@pytest.mark.parametrize("alpha", [0.5, 0.8, 0.9, 0.95, 0.99, 0.999])
def test_g_alpha_matches_independent_closed_form(alpha):
    # g(alpha) = -1 / ((1 - alpha) ln(1 - alpha)), computed with math.log1p independently of numpy.
    expected = -1.0 / ((1.0 - alpha) * math.log1p(-alpha))
    assert theory.g_alpha(alpha) == pytest.approx(expected, rel=1e-12)


def test_g_alpha_known_values_and_vectorised():
    # 1 / (0.2 ln 5) and 1 / (0.01 ln 100), by hand.
    assert theory.g_alpha(0.8) == pytest.approx(3.1066746727980594, rel=1e-12)
    assert theory.g_alpha(0.99) == pytest.approx(21.714724095162587, rel=1e-12)
    v = theory.g_alpha(np.array([0.8, 0.99]))
    assert v.shape == (2,) and v[1] > v[0]


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_alpha_outside_unit_interval_is_refused(bad):
    with pytest.raises(InvalidParameter, match="strictly between 0 and 1"):
        theory.g_alpha(bad)


def test_widths_and_importances_are_validated():
    with pytest.raises(InvalidParameter, match="positive"):
        theory.feature_budget(10, [-1], 0.9)
    with pytest.raises(InvalidParameter, match="descending"):
        theory.refined_floor([0.1, 0.5], 1, 0.9)


def test_budget_floor_and_critical_width_on_a_hand_example():
    # n = 10, alpha = 0.8: g = 3.1067, so d_S = 2 keeps floor(6.213) = 6 features; d* = 10 / g = 3.219.
    terms = 1.0 / np.arange(1, 11)
    assert theory.feature_budget(10, 2, 0.8) == 6
    assert theory.refined_floor(terms, 2, 0.8) == pytest.approx(sum(1 / i for i in range(7, 11)))
    assert theory.refined_floor(terms, 4, 0.8) == 0.0  # 12 > 10 features: nothing dropped
    assert theory.critical_width(10, 0.8) == pytest.approx(3.2188758, rel=1e-7)
    L_inf = terms.sum()
    assert theory.naive_floor(L_inf, 10, 2, 0.8) == pytest.approx(L_inf * (1 - 2 * 3.1066746728 / 10))
    assert theory.naive_floor(L_inf, 10, 4, 0.8) == 0.0


def test_accuracy_definitions():
    assert theory.accuracy_rel(0.9, 1.0) == pytest.approx(0.9)
    assert theory.accuracy_rel(3.0, 1.0) == 0.0  # clipped at 0
    assert theory.accuracy_norm(0.0, 0.05, 1.0) == pytest.approx(0.95)


@pytest.mark.parametrize(
    "layer, F, alpha, g, d_star",
    [
        (12, 28_665, 0.99238, 26.92, 1_064.7),
        (16, 29_169, 0.99146, 24.60, 1_185.9),
    ],
)
def test_released_pythia_measurements_reproduce_design_values(layer, F, alpha, g, d_star):
    ref = require_reference()
    m = theory.load_measurement(ref / f"measurements_layer{layer}.json")
    assert m.F_alive == F and m.layer == layer
    assert sig(m.alpha, 5) == alpha  # 0.99238 (5 significant digits: 4 would be 0.9924 for both)
    assert sig(m.g_alpha) == g
    assert sig(m.d_star_S, 5) == d_star


def test_layer12_feature_loss_at_128_is_88_percent():
    ref = require_reference()
    m = theory.load_measurement(ref / "measurements_layer12.json")
    p = m.predictions([128])[128]
    assert p["features_kept"] == 3_446 and p["features_dropped"] == 25_219
    assert p["features_dropped"] / m.F_alive == pytest.approx(0.88, abs=0.005)
    # the refined floor is the importance mass of the dropped latents
    assert p["predicted_floor"] == pytest.approx(float(m.sorted_importance[3_446:].sum()), rel=1e-9)


def test_rounded_alpha_would_give_a_different_critical_width():
    # Always use the unrounded alpha; 0.992 would give about 1,107.
    assert theory.critical_width(28_665, 0.992) == pytest.approx(1_107, abs=1.0)


def test_kdsae_theory_prints_json(capsys):
    ref = require_reference()
    assert (
        main(["theory", "--measurements", str(ref / "measurements_layer12.json"), "--widths", "128,1024", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert sig(out["d_star_S"], 5) == 1_064.7 and out["F_alive"] == 28_665
    assert set(out["predictions"]) == {"128", "1024"}
    assert set(out["predictions"]["128"]) == {"features_kept", "features_dropped", "predicted_floor", "naive_floor"}
    assert out["predictions"]["1024"]["predicted_floor"] < out["predictions"]["128"]["predicted_floor"]


def test_kdsae_theory_prints_a_table_with_floors_as_fractions_of_l_inf(capsys):
    """Issue 21, item 8: people get a table (JSON is for --json): each floor beside its share of L_inf."""
    ref = require_reference()
    assert main(["theory", "--measurements", str(ref / "measurements_layer12.json"), "--widths", "128,1024"]) == 0
    out = capsys.readouterr().out
    assert out.lstrip()[0] != "{" and "critical width d*_S = F/g(alpha) = 1,064.7" in out
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["128"])
    assert row == ["128", "3,446", "25,219", "0.07949", "0.0092%", "757.8", "88.0%"]
    assert "--json prints every number" in " ".join(out.split())


def test_kdsae_theory_widths_default_to_fractions_of_the_sae_width(capsys, tmp_path):
    """{1/8, ..., 1} x d_in from the file (book/methods.md); the released Pythia-410M files hold no d_in: 1024."""
    f = tmp_path / "m.json"
    f.write_text(json.dumps({"d_in": 384, "F_alive": 3, "avg_active": 1.0, "sorted_importance": [3, 2, 1]}))
    assert main(["theory", "--measurements", str(f), "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)["predictions"]) == ["48", "96", "144", "192", "288", "384"]
    f.write_text(json.dumps({"F_alive": 3, "avg_active": 1.0, "sorted_importance": [3, 2, 1]}))
    assert main(["theory", "--measurements", str(f), "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)["predictions"]) == ["128", "256", "384", "512", "768", "1024"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"F_alive": 3, "avg_active": 1.0}', "lacks the field"),
        ('{"F_alive": 3, "avg_active": 1.0, "sorted_importance": [1, 2, 3]}', "descending"),
        ('{"F_alive": 2, "avg_active": 5.0, "sorted_importance": [2, 1]}', "L0 must lie"),
    ],
)
def test_malformed_measurement_file_gives_one_clear_line(tmp_path, capsys, content, message):
    f = tmp_path / "m.json"
    f.write_text(content)
    with pytest.raises(BadFile, match=message):
        theory.load_measurement(f)
    assert main(["theory", "--measurements", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(f) in err


def test_bad_widths_on_the_command_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["theory", "--measurements", "x.json", "--widths", "0,128"])
    assert e.value.code == 2
    assert "widths must be positive" in capsys.readouterr().err


def test_g_is_smallest_at_one_minus_one_over_e_and_the_cli_warns_below_it(tmp_path, capsys):
    from kdsae_core.cli.main import main
    from kdsae_core.theory import G_MINIMUM_ALPHA, below_capacity_minimum, g_alpha

    assert g_alpha(G_MINIMUM_ALPHA) == pytest.approx(math.e)
    assert g_alpha(0.5) > g_alpha(G_MINIMUM_ALPHA) < g_alpha(0.75)  # it falls, then rises
    assert below_capacity_minimum(0.6) and not below_capacity_minimum(0.7)
    for l0, warned in ((60.0, True), (20.0, False)):  # alpha = 0.4 and 0.8 with F = 100
        path = tmp_path / f"m{int(l0)}.json"
        path.write_text(
            json.dumps(
                {"layer": 0, "F_alive": 100, "avg_active": l0, "sorted_importance": [1.0 / (i + 1) for i in range(100)]}
            )
        )
        assert main(["theory", "--measurements", str(path), "--widths", "8"]) == 0
        assert ("warning: alpha" in capsys.readouterr().out) == warned
