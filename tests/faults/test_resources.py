"""Issue 7, item 4: a disk that fills up while `kdsae train` writes (RLIMIT_FSIZE lowered mid-run, or a small
tmpfs) gives one clear line and exit 2, leaves the last good state and snapshots loadable, and the run resumes
to the uninterrupted result; a folder locked by a live process is refused untouched, a stale lock recovered.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from kdsae_core.runs import layout, manifest
from kdsae_core.runs.checkpoints import load_checkpoint
from kdsae_core.train import state as train_state

from .sae_helpers import (
    ENV,
    UNITS,
    assert_same_files,
    error_lines,
    finish,
    kdsae,
    limit_file_size_after_write,
    run_files,
    train_args,
)

pytestmark = pytest.mark.slow


def all_files(run):
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def assert_last_good_snapshot_loads(run, snapshot):
    listed = manifest.read_manifest(run)
    for trial, layer in UNITS:
        folder = layout.checkpoint_dir(run, trial, layer, snapshot)
        rel = str(folder.relative_to(run) / "sae_weights.safetensors")
        assert rel in listed
        load_checkpoint(folder, expected_sha256=listed[rel])
    assert not list(run.rglob("*.tmp")), "a failed write leaves no temporary behind"
    assert not (run / ".lock").exists()


def resume_to_reference(run, args, reference):
    code, err = finish(kdsae(args + ["--resume"]))
    assert code == 0, err[-3000:]
    assert_same_files(run_files(run), reference[0])
    assert manifest.verify_manifest(run) == [] and not layout.train_state_dir(run).exists()


def test_the_disk_fills_while_a_state_is_written_then_a_busy_folder_is_refused(tmp_path, tiny_model, corpus, reference):
    run = tmp_path / "run"
    args = train_args(tiny_model, corpus, run)
    # after the state of step 4 is committed, no file may grow past 50 kB: the state of step 6 (200 kB per SAE) fails
    code, err = finish(kdsae(args, prelude=limit_file_size_after_write("*/state/LATEST", 2, "50_000")))
    assert code == 2, err[-3000:]
    lines = error_lines(err)
    assert len(lines) == 1, lines
    gen6 = train_state.generation_dir(run, 6)
    assert lines[0].startswith(f"kdsae train: could not write {gen6}/") and "File too large" in lines[0]
    assert "disk full" in lines[0] and "intact" in lines[0]
    assert train_state.load_latest_state(run)[0]["step"] == 4
    assert_last_good_snapshot_loads(run, "1.024k")

    # the folder in use by a live process: refused, one line, nothing touched
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (run / ".lock").write_text(str(sleeper.pid))
        before = all_files(run)
        code, err = finish(kdsae(args + ["--resume"]))
        assert code == 2
        lines = error_lines(err)
        assert lines == [
            f"kdsae train: {run} is in use by another live process (pid {sleeper.pid}); wait for it or "
            "use another output folder."
        ]
        assert all_files(run) == before
    finally:
        sleeper.kill()
        sleeper.wait()
    # its process is gone: the lock is stale, recovered, and the run resumes from step 4
    resume_to_reference(run, args, reference)


def test_the_disk_fills_while_the_metrics_log_is_appended(tmp_path, tiny_model, corpus, reference):
    run = tmp_path / "run"
    args = train_args(tiny_model, corpus, run)
    metrics = layout.run_metrics(run)
    # snapshot 2.048k: the last checkpoint is written, then the log may not grow: its flush fails
    prelude = limit_file_size_after_write(
        "*/checkpoints/C/layer02/2.048k/cfg.json", 1, f"os.path.getsize({str(metrics)!r}) + 1"
    )
    code, err = finish(kdsae(args, prelude=prelude))
    assert code == 2, err[-3000:]
    lines = error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0].startswith(f"kdsae train: could not write {metrics}") and "File too large" in lines[0]
    assert train_state.load_latest_state(run)[0]["step"] == 6
    assert_last_good_snapshot_loads(run, "1.024k")
    for trial, layer in UNITS:  # the snapshot written before the log filled up is whole too
        load_checkpoint(layout.checkpoint_dir(run, trial, layer, "2.048k"))
    resume_to_reference(run, args, reference)


def _tmpfs_allowed(where) -> bool:
    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k none {where}"], capture_output=True)
    return r.returncode == 0


def test_a_small_filesystem_runs_out_of_space(tmp_path, tiny_model, corpus, reference):
    """A 1.2 MB tmpfs in a private mount namespace (`unshare -rm`): the run fills it (ENOSPC), then the folder
    is copied to a roomy disk and resumed there. The disk plan would refuse this run before it starts; the free
    space it is shown is overridden, as when another writer fills the disk after the check."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not _tmpfs_allowed(mnt):
        pytest.skip("mounting a tmpfs in a user namespace is not permitted here (the RLIMIT_FSIZE tests still run)")
    small, saved = mnt / "run", tmp_path / "saved"
    args = train_args(tiny_model, corpus, small)
    unplanned = (
        "import sys, kdsae_core.sae.plan as p; p.free_disk_bytes = lambda folder: 1 << 50; "
        "from kdsae_core.cli.main import main; sys.exit(main())"
    )
    cmd = " ".join(f"'{a}'" for a in [sys.executable, "-c", unplanned, *args])
    script = f"mount -t tmpfs -o size=1200k none {mnt} && {cmd}; code=$?; cp -a {small} {saved}; exit $code"
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and "No space left on device" in lines[0] and str(small) in lines[0], lines
    meta, _ = train_state.load_latest_state(saved)
    assert meta["step"] >= 2
    for cfg in saved.glob("checkpoints/*/layer*/*/cfg.json"):
        load_checkpoint(cfg.parent)
    assert not list(saved.rglob("*.tmp")) and not (saved / ".lock").exists()
    resume_to_reference(saved, train_args(tiny_model, corpus, saved), reference)
