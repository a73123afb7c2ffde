"""Faults in the toy sweep: SIGKILL and resume, SIGTERM, corrupted state, full disk, a busy folder."""

import os
import signal
import subprocess
import sys
import time

import pytest

from kdsae_core.common.errors import RunFolderError
from kdsae_core.common.fileio import atomic_write_bytes, load_verified, save_verified
from kdsae_core.common.locks import run_lock

ARGS = [
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
    "1000",
    "--batch",
    "256",
    "--eval-samples",
    "2048",
    "--checkpoint-every",
    "10",
]
pytestmark = pytest.mark.slow


def kdsae(*args):
    # One thread: tiny models gain nothing from two, and spinning OpenMP threads slow a busy machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "kdsae_core.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    p = kdsae(*ARGS, "--out", str(out))
    assert p.wait(120) == 0, p.stderr.read()
    return (out / "toy_results.json").read_bytes()


def wait_for_state(out, generations=1, timeout=60):
    """Until the state has been written `generations` times (so kills land at different points)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(list(out.glob("toy_state.pt*"))) >= 2 * generations:
            return
        time.sleep(0.02)
    raise AssertionError("the sweep never wrote its state")


@pytest.mark.parametrize("generations, extra_delay", [(1, 0.0), (2, 0.37), (2, 1.1)])
def test_sigkill_then_resume_gives_identical_results(tmp_path, reference, generations, extra_delay):
    p = kdsae(*ARGS, "--out", str(tmp_path))
    wait_for_state(tmp_path, generations)
    time.sleep(extra_delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (tmp_path / "toy_results.json").exists()
    again = kdsae(*ARGS, "--out", str(tmp_path))
    assert again.wait(120) == 0, again.stderr.read()
    assert (tmp_path / "toy_results.json").read_bytes() == reference
    assert not list(tmp_path.glob("toy_state*")) and not (tmp_path / ".lock").exists()


def test_sigterm_stops_cleanly_with_a_resumable_state(tmp_path, reference):
    p = kdsae(*ARGS, "--out", str(tmp_path))
    wait_for_state(tmp_path)
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 130
    assert "state saved" in p.stderr.read()
    assert load_verified(tmp_path / "toy_state.pt") is not None
    again = kdsae(*ARGS, "--out", str(tmp_path))
    assert again.wait(120) == 0
    assert (tmp_path / "toy_results.json").read_bytes() == reference


PARALLEL = [*ARGS[:2], "6,8", *ARGS[3:]]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_sweep_over_two_processes_stopped_resumes_to_the_one_process_bytes(tmp_path, sig):
    """SIGTERM: the parent stops both parts, which save their states. SIGKILL of the parent: the parts get
    SIGTERM from the kernel (parent-death signal) and do the same, leaving no orphan that holds a lock."""
    one = tmp_path / "one"
    p = kdsae(*PARALLEL, "--out", str(one))
    assert p.wait(180) == 0, p.stderr.read()
    out = tmp_path / "two"
    p = kdsae(*PARALLEL, "--jobs", "2", "--out", str(out))
    for part in ("n6", "n8"):
        wait_for_state(out / "parts" / part)
    p.send_signal(sig)
    assert p.wait(60) == (130 if sig == signal.SIGTERM else -signal.SIGKILL)
    if sig == signal.SIGTERM:
        assert "state saved in every part" in p.stderr.read()
    deadline = time.time() + 60  # the parts save and release their locks
    while any((out / "parts" / part / ".lock").exists() for part in ("n6", "n8")) and time.time() < deadline:
        time.sleep(0.05)
    for part in ("n6", "n8"):
        assert load_verified(out / "parts" / part / "toy_state.pt") is not None
        assert not (out / "parts" / part / ".lock").exists()
    assert not (out / "toy_results.json").exists()
    again = kdsae(*PARALLEL, "--jobs", "2", "--out", str(out))
    assert again.wait(180) == 0, again.stderr.read()
    assert (out / "toy_results.json").read_bytes() == (one / "toy_results.json").read_bytes()
    assert sorted(x.name for x in out.iterdir()) == ["toy_results.json"]


def test_a_split_sweep_is_not_resumed_another_way(tmp_path):
    out = tmp_path / "two"
    p = kdsae(*PARALLEL, "--jobs", "2", "--out", str(out))
    wait_for_state(out / "parts" / "n6")
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 130
    for args in ([*PARALLEL, "--out", str(out)], [*PARALLEL[:-2], "--steps", "999", "--jobs", "2", "--out", str(out)]):
        again = kdsae(*args)
        assert again.wait(60) != 0
        err = again.stderr.read().strip()
        assert len(err.splitlines()) == 1 and "parts" in err, err
    assert load_verified(out / "parts" / "n6" / "toy_state.pt") is not None  # nothing destroyed


def test_a_bit_flipped_state_falls_back_to_the_previous_generation(tmp_path):
    path = tmp_path / "state.pt"
    save_verified(path, b"first generation")
    save_verified(path, b"second generation")
    raw = bytearray(path.read_bytes())
    raw[3] ^= 0x01
    path.write_bytes(bytes(raw))
    data, source = load_verified(path)
    assert data == b"first generation" and source.name == "state.pt.prev"
    path.write_bytes(b"sec")  # truncated
    assert load_verified(path)[0] == b"first generation"


def test_a_corrupted_toy_state_resumes_from_the_older_one(tmp_path, reference):
    p = kdsae(*ARGS, "--out", str(tmp_path))
    wait_for_state(tmp_path, 2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    state = tmp_path / "toy_state.pt"
    state.write_bytes(state.read_bytes()[:100])  # truncate the newest generation
    again = kdsae(*ARGS, "--out", str(tmp_path))
    assert again.wait(120) == 0
    assert "truncated or corrupted" in again.stderr.read()
    assert (tmp_path / "toy_results.json").read_bytes() == reference


def test_full_disk_reports_and_keeps_the_previous_file(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_bytes(path, b"good")
    code = (
        "import resource, sys\n"
        "from kdsae_core.common.fileio import atomic_write_bytes\n"
        "from kdsae_core.common.errors import KdsaeError\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        f"try:\n    atomic_write_bytes({str(path)!r}, b'x' * 5000)\n"
        "except KdsaeError as e:\n    print(e); sys.exit(3)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 3 and "could not write" in r.stdout and "previous version" in r.stdout
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary left behind


def test_a_folder_used_by_a_live_process_is_refused_and_a_stale_lock_recovered(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".lock").write_text(str(sleeper.pid))
        with pytest.raises(RunFolderError, match="in use by another live process"):
            with run_lock(tmp_path):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with run_lock(tmp_path):  # the pid is dead now: stale lock, recovered
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".lock").exists()
