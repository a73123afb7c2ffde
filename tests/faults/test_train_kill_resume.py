"""Issue 7, item 1: `kdsae train` killed anywhere resumes with --resume to the uninterrupted run, byte for byte
(weights, cfg, metrics log, measurements, summaries, manifest); SIGTERM/SIGINT stop cleanly with a state.

Two chains of processes on one run folder, each ending in a complete run compared with the reference:
- signals from outside at seeded random moments (SIGTERM, SIGINT, then SIGKILLs);
- SIGKILLs from inside at exact points of the file writes (see sae_helpers.kill_at_write): half-way through a
  checkpoint, a state file, the LATEST pointer, the manifest, status.json, a measurement file, a summary.
"""

from __future__ import annotations

import random
import signal
import time

import pytest

from kdsae_core.runs import layout, manifest
from kdsae_core.runs.checkpoints import load_checkpoint
from kdsae_core.train import state as train_state

from .sae_helpers import (
    KILLED,
    assert_same_files,
    error_lines,
    finish,
    kdsae,
    kill_at_write,
    latest_step,
    run_files,
    send,
    train_args,
    wait_for_state_after,
)

pytestmark = pytest.mark.slow


def check_killed_folder(run, pid):
    """What must hold in a folder whose process was just SIGKILLed."""
    assert (run / ".lock").read_text() == str(pid), "the dead process's lock is left for the next run to recover"
    for cfg in run.glob("checkpoints/*/layer*/*/cfg.json"):  # a checkpoint with a cfg.json is always whole
        listed = manifest.read_manifest(run).get(str(cfg.parent.relative_to(run) / "sae_weights.safetensors"))
        load_checkpoint(cfg.parent, expected_sha256=listed)
    # the manifest may only lag behind the metrics log, which grows between snapshots
    assert all("metrics.jsonl" in p for p in manifest.verify_manifest(run)), manifest.verify_manifest(run)


def assert_same_as_reference(run, reference):
    files, _ = reference
    assert_same_files(run_files(run), files)
    assert not layout.train_state_dir(run).exists() and not (run / ".lock").exists()
    assert manifest.verify_manifest(run) == []


# The signal chain needs a run long enough that four signals always land before its last state: 128 steps
# with a state every 2 (the shared reference run has 16; its tiny SAEs train a step in milliseconds).
LONG = ("--tokens", "32768")


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory, tiny_model, corpus):
    out = tmp_path_factory.mktemp("long-reference") / "run"
    code, err = finish(kdsae(train_args(tiny_model, corpus, out, *LONG)))
    assert code == 0, err[-3000:]
    return run_files(out), out


def test_signals_from_outside_at_random_moments(tmp_path, tiny_model, corpus, long_reference):
    rng = random.Random(2604_04037)  # the moments are random, and the same at every run of the test
    reference = long_reference
    run = tmp_path / "run"
    args = train_args(tiny_model, corpus, run, *LONG)
    plan = [signal.SIGTERM, signal.SIGINT, signal.SIGKILL, signal.SIGKILL]
    for i, sig in enumerate(plan):
        p = kdsae(args + (["--resume"] if i else []))
        before = latest_step(run)
        wait_for_state_after(p, run, before + rng.choice([0, 2]))
        time.sleep(rng.uniform(0.0, 0.1 if sig != signal.SIGKILL else 0.3))
        assert p.poll() is None, "the run ended before the signal"
        code, err = send(p, sig)
        if sig == signal.SIGKILL:
            assert code == KILLED
            check_killed_folder(run, p.pid)
        else:
            assert code == 130, err[-2000:]
            msg = error_lines(err)[-1]
            assert "training stopped at step" in msg and "state saved, resume with --resume" in msg
            step = int(msg.split("training stopped at step ")[1].split(";")[0])
            meta, _ = train_state.load_latest_state(run)
            assert meta["step"] == step > before and latest_step(run) == step
            assert not (run / ".lock").exists(), "a clean stop releases the folder"
            assert not (run / "measurements").exists()
    code, err = finish(kdsae(args + ["--resume"]))
    assert code == 0, err[-3000:]
    assert_same_as_reference(run, reference)


# (file pattern, nth matching write in that process, check of the folder after the kill)
def _stage_checks():
    def half_written_checkpoint(run):
        snap = layout.checkpoint_dir(run, "C", 0, "1.024k")
        assert list(snap.glob(".sae_weights.safetensors.*.tmp")) and not (snap / "cfg.json").exists()
        assert latest_step(run) == 2

    def half_written_state(run):
        assert latest_step(run) == 4
        gen = train_state.generation_dir(run, 6)
        assert gen.is_dir() and not (gen / train_state.TRAINER_FILE).exists()
        assert train_state.load_latest_state(run)[0]["step"] == 4

    def stale_latest(run):
        assert latest_step(run) == 6 and (train_state.generation_dir(run, 8) / train_state.TRAINER_FILE).exists()

    def half_written_manifest(run):
        assert latest_step(run) == 10 and (layout.checkpoint_dir(run, "C", 2, "3.072k") / "cfg.json").exists()

    def before_status(run):
        assert not (run / "status.json").exists()
        assert train_state.load_latest_state(run) is not None, "work is kept until the run is marked complete"

    def before_final_manifest(run):
        assert (run / "status.json").exists()

    def half_measured(run):
        assert not layout.train_state_dir(run).exists()
        files = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and not p.name.startswith(".")}
        unlisted = files - set(manifest.read_manifest(run)) - {"MANIFEST.sha256"}
        assert unlisted and all(f.startswith("measurements/") for f in unlisted), unlisted
        assert len(list(run.glob("measurements/*/*.json"))) == 4

    def half_summarised(run):
        assert (run / "summary_A.csv").exists() and not (run / "summary_C.csv").exists()

    def no_config_yet(run):
        assert [p.name for p in run.iterdir() if p.name != ".lock"][0].startswith(".config.json.")

    return [
        ("*/config.json", 1, no_config_yet),  # the very first write: a folder holding only a temporary
        ("*/checkpoints/*/sae_weights.safetensors", 3, half_written_checkpoint),
        ("*/state/step*/C_layer00.safetensors", 2, half_written_state),
        ("*/state/LATEST", 2, stale_latest),
        ("*/MANIFEST.sha256", 2, half_written_manifest),
        ("*/status.json", 1, before_status),
        ("*/MANIFEST.sha256", 2, before_final_manifest),
        ("*/measurements/*/*.json", 5, half_measured),
        ("*/summary_C.csv", 1, half_summarised),
    ]


def test_sigkill_in_the_middle_of_every_kind_of_write(tmp_path, tiny_model, corpus, reference):
    run = tmp_path / "run"
    args = train_args(tiny_model, corpus, run)
    for i, (pattern, nth, check) in enumerate(_stage_checks()):
        p = kdsae(args + (["--resume"] if i else []), prelude=kill_at_write(pattern, nth))
        code, err = finish(p)
        assert code == KILLED, f"stage {i} ({pattern} #{nth}) was never reached: exit {code}\n{err[-3000:]}"
        check_killed_folder(run, p.pid)
        check(run)
    code, err = finish(kdsae(args + ["--resume"]))
    assert code == 0, err[-3000:]
    assert "truncated or corrupted" not in err  # every half-written file was a temporary, never loaded
    assert_same_as_reference(run, reference)
    assert not list(run.rglob("*.tmp")), "temporaries of killed writes are cleaned up on resume"


def test_resume_with_no_other_flags_uses_the_runs_own_settings(tmp_path, tiny_model, corpus, reference):
    """Issue 21, item 4: `kdsae train --out RUN --resume` alone continues RUN with the settings in its config.json
    and ends as the uninterrupted run; an option that disagrees with them is refused in one line, before the model
    loads (a model name that does not exist would fail to load, so a refusal proves nothing was loaded)."""
    run = tmp_path / "run"
    p = kdsae(train_args(tiny_model, corpus, run), prelude=kill_at_write("*/cfg.json", 5))
    assert finish(p)[0] == KILLED
    code, err = finish(kdsae(["train", "--out", str(run), "--resume", "--model", "no/such-model", "--tokens", "8192"]))
    msg = error_lines(err)
    assert code == 2 and len(msg) == 1, err[-2000:]
    assert "--model 'no/such-model' (the run has" in msg[0] and "--tokens 8192 (the run has 4096)" in msg[0]
    assert "`kdsae train --out" in msg[0] and "--resume` alone" in msg[0]
    code, err = finish(kdsae(["train", "--out", str(run), "--resume", "--measure"]))
    assert code == 0, err[-3000:]
    assert_same_as_reference(run, reference)
