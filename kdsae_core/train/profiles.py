"""Experiment 2's two profiles, `embedded` (this machine) and `paper` (as the authors ran it): the settings
`SAETrainConfig.from_profile` starts from, kept free of torch so that `kdsae train --help` can list them."""

from __future__ import annotations

PROFILES: dict[str, dict] = {
    # Sized so the three trials on all 6 MiniLM layers train and measure in under 30 minutes on 2 cores.
    # One 128-token sequence per step gives 2,344 steps: trial C's controller (EMA 0.99, gain 0.01) first
    # overshoots and needs ~1,500 steps to settle (a simulation with the pilot run's L0(lambda) response).
    "embedded": dict(
        model="embedded",
        dataset="embedded",
        d_sae=2048,
        tokens=300_000,
        n_snapshots=5,
        batch_tokens=128,
        context=128,
        device="cpu",
        dtype="fp32",
        measure_tokens=100_000,
        alive_window_tokens=100_000,
    ),
    # As the authors ran it (needs a GPU and the hub).
    "paper": dict(
        model="EleutherAI/pythia-410m",
        dataset="monology/pile-uncopyrighted",
        d_sae=32_768,
        tokens=300_000_000,
        n_snapshots=6,
        batch_tokens=32_768,
        context=1024,
        device="cuda",
        dtype="bf16",
        measure_tokens=1_000_000,
        alive_window_tokens=10_000_000,
    ),
}


def recorded_settings(settings: dict) -> dict:
    """A run folder's recorded settings as today's fields: a run recorded before the sparse step (issue 19) has no
    `sae_step`, and every one of its steps was dense."""
    return {"sae_step": "dense", **settings}
