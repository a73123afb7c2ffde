"""torchrun: 2 CPU processes (gloo) train the same run as one process, bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.random_pythia import random_pythia
from kdsae_core.runs import layout

BIN = Path(sys.executable).parent


def _train(args: list[str], out: Path, nproc: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    common = ["train", *args, "--out", str(out)]
    if nproc == 1:
        cmd = [str(BIN / "kdsae"), *common]
    else:
        cmd = [str(BIN / "torchrun"), "--standalone", f"--nproc-per-node={nproc}", "-m", "kdsae_core.cli", *common]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_gloo_processes_give_the_single_process_run(tmp_path):
    model = random_pythia(tmp_path / "random-pythia14m-shape")
    args = [
        "--model",
        str(model),
        "--layers",
        "0,1,2",
        "--trial",
        "A,C",
        "--d-sae",
        "64",
        "--tokens",
        "2048",
        "--batch-tokens",
        "256",
        "--context",
        "64",
        "--n-snapshots",
        "2",
    ]
    one = _train(args, tmp_path / "one", 1)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _train(args, tmp_path / "two", 2)
    assert two.returncode == 0, two.stderr[-2000:]
    for trial in "AC":
        for layer in (0, 1, 2):
            for snap in ("1.024k", "final"):
                rel = layout.checkpoint_dir(Path("."), trial, layer, snap) / "sae_weights.safetensors"
                assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel
    assert layout.run_metrics(tmp_path / "one").read_text() == layout.run_metrics(tmp_path / "two").read_text()
    assert (tmp_path / "two" / "status.json").exists() and not layout.train_state_dir(tmp_path / "two").exists()


@pytest.mark.slow
def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path):
    model = random_pythia(tmp_path / "random-pythia14m-shape")
    r = _train(
        [
            "--model",
            str(model),
            "--layers",
            "0",
            "--d-sae",
            "32",
            "--tokens",
            "1536",
            "--batch-tokens",
            "192",
            "--context",
            "64",
            "--n-snapshots",
            "1",
        ],
        tmp_path / "odd",
        2,
    )
    assert r.returncode != 0
    assert "3 sequences per batch do not split evenly over 2 processes" in r.stderr
    assert not (tmp_path / "odd").exists()  # refused before config.json (or the folder) was written
