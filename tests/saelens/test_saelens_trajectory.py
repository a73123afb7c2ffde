"""kdsae's training step computes what SAELens' standard SAE training step computes.

From the same initial weights and the same batches, 100 steps of kdsae's SAEUnit and of SAELens' own
SAETrainer.step (StandardTrainingSAE: its forward pass, loss, autograd backward, clip_grad_norm_(1.0), torch
Adam) give the same loss trajectory to rtol 1e-4, once the conventions are matched as
benchmarks.saelens_compare explains: SAELens' loss is d_in x ours (MSE summed over d_in, l1_coefficient =
lambda d_in, or lambda d_in / d_sae for the `mean` form), which our unit follows with clip 1 / d_in and Adam eps
1e-8 / d_in; SAELens' decoder rows are renormalised after each step (ours are) and its decoder-norm-weighted L1
is read at its unit-norm value.

SAELens lives in .venv-saelens (it pins transformer-lens < 4); `make test-saelens` sets KDSAE_SAELENS_PYTHON.
Without it the test is skipped, unless KDSAE_REQUIRE_SAELENS=1 (then it fails).
"""

from __future__ import annotations

import pytest

from benchmarks.saelens_compare import SAELensWorker, trajectory_comparison
from kdsae_core.sae.model import TrialSpec

RTOL = 1e-4
STEPS = 100
# (trial, activation scale): the scales put the gradient norm above the clip on most steps of the first case
# and on few steps of the second, so both branches of the clipping are compared.
CASES = [(TrialSpec("B", 8e-5, "sum"), 0.1), (TrialSpec("A", 3e-4, "mean"), 0.03)]


def test_loss_trajectory_matches_saelens_standard_sae(saelens_python):
    clipped = []
    with SAELensWorker(saelens_python) as worker:
        for spec, scale in CASES:
            r = trajectory_comparison(32, 128, 256, STEPS, spec, scale=scale, conventions=("unit_norm",), worker=worker)
            theirs, ours = r["saelens"]["unit_norm"], r["ours"]
            assert theirs["info"]["class"] == "UnitNormL1SAE"
            for part in ("loss", "mse", "l1"):
                assert len(theirs[part]) == len(ours[part]) == STEPS
                for step, (a, b) in enumerate(zip(ours[part], theirs[part])):
                    assert a == pytest.approx(b, rel=RTOL), f"{spec.name} {part} differs at step {step + 1}: {a} vs {b}"
            assert ours["loss"][-1] < 0.8 * ours["loss"][0]  # it trained
            clipped.append(ours["clipped"])
    assert clipped[0] > STEPS // 2 and 0 < clipped[1] < STEPS // 2, clipped
