"""Issue 7, item 7: the same command with the same seed gives byte-identical files on CPU.

`kdsae train --measure`: a second run of the reference command, every file compared (weights, cfg.json,
metrics log, measurements, summaries, config, status, manifest). `kdsae toy`: a reduced sweep given with
explicit small options (not the quick profile, which takes about a minute), run twice; results hashed.
"""

from __future__ import annotations

import pytest

from .sae_helpers import finish, kdsae, run_files, sha256, train_args

pytestmark = pytest.mark.slow

TOY = [
    "toy",
    "--n",
    "6",
    "--d-teacher",
    "2,3",
    "--alpha",
    "0.8,0.95",
    "--seeds",
    "2",
    "--steps",
    "200",
    "--batch",
    "128",
    "--eval-samples",
    "1024",
    "--seed",
    "3",
]


def test_the_same_training_command_gives_identical_files(tmp_path, tiny_model, corpus, reference):
    run = tmp_path / "again"
    code, err = finish(kdsae(train_args(tiny_model, corpus, run)))
    assert code == 0, err[-3000:]
    again, first = run_files(run), reference[0]
    assert sorted(again) == sorted(first)
    assert {k: sha256(v) for k, v in again.items()} == {k: sha256(v) for k, v in first.items()}


def test_the_same_toy_command_gives_identical_results(tmp_path):
    digests = []
    for name in ("one", "two"):
        code, err = finish(kdsae([*TOY, "--out", str(tmp_path / name)]))
        assert code == 0, err[-3000:]
        digests.append(sha256((tmp_path / name / "toy_results.json").read_bytes()))
    assert digests[0] == digests[1]
