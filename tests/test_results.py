"""Committing a run into results/: no weights, no state, thinned metrics, a fresh manifest that verifies."""

from __future__ import annotations

import json

import pytest

from benchmarks.random_pythia import random_pythia
from kdsae_core.book.commit import commit_exp2_run, thin_metrics
from kdsae_core.common.errors import RunFolderError
from kdsae_core.data import activations as acts
from kdsae_core.measure import measure_run
from kdsae_core.runs import manifest
from kdsae_core.runs.tables import load_run
from kdsae_core.train.trainer import SAETrainConfig, Trainer


def test_thin_metrics_keeps_first_last_every_kth_and_snapshot_steps():
    lines = [json.dumps({"step": s, "trial": "A", "layer": 0}) for s in range(1, 24)]
    kept = [json.loads(line)["step"] for line in thin_metrics(lines, 5, {7})]
    assert kept == [1, 5, 7, 10, 15, 20, 23]


def test_a_committed_run_has_no_weights_and_renders(tmp_path):
    folder = random_pythia(tmp_path / "random-pythia14m-shape")
    model = acts.load_model(str(folder))
    cfg = SAETrainConfig.from_profile(
        "embedded",
        model=str(folder),
        layers=[1],
        trials=["B", "C"],
        d_sae=32,
        tokens=2560,
        batch_tokens=128,
        context=64,
        n_snapshots=2,
        measure_tokens=512,
    )
    run = Trainer(cfg, tmp_path / "run", progress=False, model=model).run()
    with pytest.raises(RunFolderError, match="no measurements"):
        commit_exp2_run(run, tmp_path / "results")
    measure_run(run, progress=False, model=model)
    dest = commit_exp2_run(run, tmp_path / "results", every=4)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".safetensors", ".pt")) or f.startswith(("checkpoints", "state"))]
    assert "measurements/C/layer01_final.json" in files and "summary_B.csv" in files
    steps = sorted({json.loads(line)["step"] for line in (dest / "metrics.jsonl").read_text().splitlines()})
    assert steps == [1, 4, 8, 10, 12, 16, 20]  # every 4th, the first, the last and the snapshot step 10
    assert manifest.verify_manifest(dest) == [] and "metrics.jsonl" in manifest.read_manifest(dest)
    data = load_run(dest)
    assert sorted(data.trials) == ["B", "C"] and data.layers == [1]


def test_committed_toy_results_are_the_runs_bytes_with_its_wall_time(tmp_path):
    from kdsae_core.book.commit import commit_toy_results
    from kdsae_core.common.errors import BadFile
    from kdsae_core.common.paths import TOY_WALL_FILE
    from kdsae_core.toy.config import ToyConfig
    from kdsae_core.toy.sweep import run_sweep

    cfg = ToyConfig(n=[4], alpha=[0.9], d_teacher=[2], seeds=1, steps=5, eval_samples=64)
    run = tmp_path / "run"
    run_sweep(cfg, run, progress=False)
    (run / TOY_WALL_FILE).write_text(json.dumps({"wall_seconds": 1.5, "threads": 1, "command": "kdsae toy"}))
    dest = commit_toy_results(run, tmp_path / "results" / "toy" / "paper")
    assert (dest / "toy_results.json").read_bytes() == (run / "toy_results.json").read_bytes()
    assert json.loads((dest / TOY_WALL_FILE).read_text())["wall_seconds"] == 1.5
    assert not list(dest.glob("*.pt"))
    (run / TOY_WALL_FILE).write_text(json.dumps({"wall": "long"}))
    with pytest.raises(BadFile, match="wall_seconds"):
        commit_toy_results(run, tmp_path / "other")
