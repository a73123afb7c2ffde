"""`kdsae measure` on SAEs the theory does not apply to: one whose latents never fire (a collapsed trial C layer,
a pilot with a large lambda) is measured and written with alpha undefined, and the rest of the run is unaffected."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks.random_pythia import random_pythia
from kdsae_core.cli import main as cli
from kdsae_core.data import activations as acts
from kdsae_core.measure import MIN_MEASURE_TOKENS, alive_min_firings, measure_run
from kdsae_core.runs import checkpoints, layout, manifest
from kdsae_core.runs.layout import list_checkpoints
from kdsae_core.runs.tables import load_run
from tests.hubcache import tiny_run


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = random_pythia(tmp_path_factory.mktemp("models") / "random-pythia14m-shape")
    return folder, acts.load_model(str(folder))


@pytest.fixture(scope="module")
def run_with_a_dead_sae(tmp_path_factory, model):
    folder, model = model
    run = tiny_run(tmp_path_factory.mktemp("runs") / "run", folder, model=model, measure=False, trials=("B",))
    final = next(c for c in list_checkpoints(run) if c.snapshot == "final")
    sae, cfg = checkpoints.load_checkpoint(final.folder)
    with torch.no_grad():
        sae.b_enc.fill_(-1e4)  # no latent can fire on any input of this model
    checkpoints.save_checkpoint(final.folder, sae, cfg)
    manifest.update_manifest(run, [final.folder / layout.WEIGHTS_FILE, final.folder / layout.CFG_FILE])
    measure_run(run, progress=False, model=model)
    return run, final


def test_a_dead_sae_is_measured_with_alpha_undefined_and_the_others_normally(run_with_a_dead_sae):
    run, final = run_with_a_dead_sae
    dead = json.loads(layout.measurement_file(run, "B", final.layer, "final").read_text())
    assert dead["F_alive"] == 0 and dead["avg_active"] == 0 and dead["dead"] == dead["d_sae"] == 32
    assert dead["alpha"] is None and dead["d_star_S"] is None and dead["predictions"] == {}
    assert dead["sorted_importance"] == [] and "no latent fired on the 1,024 measurement tokens" in dead["note"]
    others = [c for c in list_checkpoints(run) if c.snapshot != "final"]
    assert others
    for c in others:
        m = json.loads(layout.measurement_file(run, c.trial, c.layer, c.snapshot).read_text())
        assert m["F_alive"] > 0 and 0 < m["alpha"] < 1 and m["predictions"]


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_run_with_a_dead_sae_loads_and_draws(run_with_a_dead_sae, tmp_path, capsys):
    run, final = run_with_a_dead_sae
    data = load_run(run, trials=["B"])
    table = data.layer_table("B")  # the final snapshot of each layer
    row = table[table["layer"] == final.layer].iloc[0]
    assert row["F_alive"] == 0 and row["dead"] == 32 and np.isnan(row["alpha"]) and np.isnan(row["d_star_S"])
    assert cli.main(["figures", "--run", str(run), "--out", str(tmp_path / "figs")]) == 0, capsys.readouterr().err
    assert list((tmp_path / "figs").glob("trialB_*.png"))


def test_alive_rule_and_a_short_measurement_says_what_alive_means(run_with_a_dead_sae, model, capsys):
    # fire rate > 1e-5: one firing is enough below 100k tokens, two at exactly 100k, 501 at the paper's 50M
    assert [alive_min_firings(n) for n in (1024, 99_999, 100_000, 50_000_000)] == [1, 1, 2, 501]
    run, _ = run_with_a_dead_sae
    measure_run(run, tokens=1024, progress=True, model=model[1])
    err = capsys.readouterr().err
    assert f"1,024 measurement tokens is fewer than {MIN_MEASURE_TOKENS:,}" in err
    assert "fires at least 1 time(s)" in err


def test_the_command_prints_the_per_layer_table(run_with_a_dead_sae, model, monkeypatch, capsys):
    """Issue 21, item 8: `kdsae measure` shows what it measured (L0, F, alpha, d*_S per trial, layer, snapshot),
    not only how many files it wrote; an SAE the theory does not apply to shows - for alpha and d*_S."""
    run, final = run_with_a_dead_sae
    monkeypatch.setattr(acts, "load_model", lambda *a, **k: model[1])
    assert cli.main(["measure", "--run", str(run)]) == 0
    out = capsys.readouterr().out
    rows = {(w[0], int(w[1]), w[2]): w[3:] for w in map(str.split, out.splitlines()) if len(w) == 7 and w[1].isdigit()}
    assert set(rows) == {(c.trial, c.layer, c.snapshot) for c in list_checkpoints(run)}
    assert rows[("B", final.layer, "final")] == ["0.00", "0", "-", "-"]
    for (trial, layer, snap), (l0, f, alpha, d_star) in rows.items():
        m = json.loads(layout.measurement_file(run, trial, layer, snap).read_text())
        if m["alpha"] is not None:
            assert (float(l0), int(f.replace(",", ""))) == (round(m["avg_active"], 2), m["F_alive"])
            assert float(alpha) == round(m["alpha"], 5) and float(d_star.replace(",", "")) == round(m["d_star_S"], 1)
    assert "over 1,024 fresh tokens" in out and "alpha = 1 - L0/F" in out and "d*_S = F/g(alpha)" in out
