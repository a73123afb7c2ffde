"""Issue 19: in the sparse regime too, `kdsae train` killed mid-run resumes to the uninterrupted run byte for byte.

The tiny run of sae_helpers has too few latents for its batches to fall below the crossover density on their own,
so every process of this test (the reference and the killed chain alike) starts with the crossover raised above
100%: every step then takes the sparse path, which the metrics log must show.
"""

from __future__ import annotations

import json

import pytest

from kdsae_core.runs import layout

from .sae_helpers import KILLED, finish, kdsae, kill_at_write, run_files, train_args
from .test_train_kill_resume import assert_same_as_reference, check_killed_folder

pytestmark = pytest.mark.slow

ALL_SPARSE = "\nimport kdsae_core.sae.sparse as _sparse\n_sparse.sparse_below_density = lambda *a: 1.01\n"


@pytest.fixture(scope="module")
def sparse_reference(tmp_path_factory, tiny_model, corpus):
    out = tmp_path_factory.mktemp("sparse-reference") / "run"
    code, err = finish(kdsae(train_args(tiny_model, corpus, out), prelude=ALL_SPARSE), timeout=900)
    assert code == 0, err[-3000:]
    return run_files(out), out


def test_the_sparse_reference_took_the_sparse_path_at_every_step(sparse_reference):
    _, run = sparse_reference
    rows = [json.loads(line) for line in layout.run_metrics(run).read_text().splitlines()]
    assert len(rows) == 16 * 4 and {r["sae_step"] for r in rows} == {"sparse"}
    assert json.loads(layout.run_config(run).read_text())["sparse_step_below_density"] == 1.01


def test_sigkill_mid_run_in_the_sparse_regime_resumes_bit_identically(tmp_path, tiny_model, corpus, sparse_reference):
    run = tmp_path / "run"
    args = train_args(tiny_model, corpus, run)
    kills = [
        ("*/state/step*/C_layer00.safetensors", 2),  # half-way through a resumable state
        ("*/checkpoints/*/sae_weights.safetensors", 7),
    ]  # half-way through a later snapshot
    for i, (pattern, nth) in enumerate(kills):
        p = kdsae(args + (["--resume"] if i else []), prelude=ALL_SPARSE + kill_at_write(pattern, nth))
        code, err = finish(p, timeout=900)
        assert code == KILLED, f"kill {i} ({pattern} #{nth}) was never reached: exit {code}\n{err[-3000:]}"
        check_killed_folder(run, p.pid)
    code, err = finish(kdsae(args + ["--resume"], prelude=ALL_SPARSE), timeout=900)
    assert code == 0, err[-3000:]
    assert_same_as_reference(run, sparse_reference)
