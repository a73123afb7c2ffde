"""Shared pieces of the SAE-trainer fault tests: one tiny `kdsae train` run driven through the real CLI.

The run: a random-weight Pythia-shaped model (6 layers, d_model 128), layers 0 and 2, trials A and C, d_sae 64,
16 steps of 256 tokens, snapshots at steps 4/8/12/16, a resumable state every 2 steps, then measurement over
1,024 fresh tokens. Text: the news corpus gensim ships (one document per line), fast to read.

`kill_at_write(pattern, nth)` is code run in the child before the CLI: it wraps `os.replace` (every atomic
write of kdsae ends in one) so that the child SIGKILLs itself at the `nth` rename whose destination matches
`pattern`, with the temporary file cut to half its length -- a process killed in the middle of writing that
file. `limit_file_size_after_write` lowers RLIMIT_FSIZE at such a point instead (a disk that fills up mid-run).
Nothing in kdsae knows about them: the fault points need no hook in the code under test.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
UNITS = [(t, layer) for t in "AC" for layer in (0, 2)]
RUN_CLI = "\nimport sys\nfrom kdsae_core.cli.main import main\nsys.exit(main())\n"


def train_args(model: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        str(model),
        "--dataset",
        str(corpus),
        "--layers",
        "0,2",
        "--trial",
        "A,C",
        "--d-sae",
        "64",
        "--tokens",
        "4096",
        "--batch-tokens",
        "256",
        "--context",
        "64",
        "--n-snapshots",
        "4",
        "--state-every-tokens",
        "512",
        "--measure-tokens",
        "1024",
        "--measure",
        "--out",
        str(out),
        *extra,
    ]


def kdsae(args: list[str], prelude: str | None = None, **kw) -> subprocess.Popen:
    """`kdsae ARGS` in a subprocess with one OpenMP thread (optionally after `prelude` code)."""
    cmd = [sys.executable, *(["-c", prelude + RUN_CLI] if prelude else ["-m", "kdsae_core.cli"]), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, **kw)


def finish(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = p.communicate(timeout=timeout)
    return p.returncode, err


def kill_at_write(pattern: str, nth: int = 1) -> str:
    """Child prelude: at the `nth` atomic rename onto a path matching `pattern` (fnmatch), SIGKILL this process,
    its temporary file cut to half its length (killed in the middle of writing it)."""
    return _at_write(
        pattern, nth, before="os.truncate(src, os.path.getsize(src) // 2)\n        os.kill(os.getpid(), signal.SIGKILL)"
    )


def limit_file_size_after_write(pattern: str, nth: int, limit: str) -> str:
    """Child prelude: right after the `nth` rename onto a path matching `pattern`, lower RLIMIT_FSIZE to the
    value of the expression `limit` (bytes): from then on, a write that makes a file larger fails (EFBIG), as
    on a full disk."""
    return _at_write(
        pattern, nth, after=f"resource.setrlimit(resource.RLIMIT_FSIZE, (int({limit}), resource.RLIM_INFINITY))"
    )


def _at_write(pattern: str, nth: int, before: str = "pass", after: str = "pass") -> str:
    return f"""
import fnmatch, os, resource, signal
_replace, _seen = os.replace, [0]
def _kdsae_test_replace(src, dst, *a, **k):
    hit = fnmatch.fnmatch(os.fspath(dst), {pattern!r})
    _seen[0] += hit
    if hit and _seen[0] == {nth}:
        {before}
    out = _replace(src, dst, *a, **k)
    if hit and _seen[0] == {nth}:
        {after}
    return out
os.replace = _kdsae_test_replace
"""


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not progress bars or library loading messages."""
    lines = [seg for line in stderr.splitlines() for seg in line.split("\r")]
    noise = ("Loading weights", "Writing model", "train ", "measure ")
    return [line for line in lines if not line.strip().startswith(noise) and line.strip()]


def run_files(run: Path) -> dict[str, bytes]:
    """Every file a finished run folder shows: all but the lock, temporaries and the trainer state."""
    out = {}
    for p in sorted(Path(run).rglob("*")):
        rel = p.relative_to(run)
        if p.is_file() and rel.parts[0] != "state" and not p.name.startswith("."):
            out[str(rel)] = p.read_bytes()
    return out


def differences(a: dict[str, bytes], b: dict[str, bytes]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def assert_same_files(got: dict[str, bytes], want: dict[str, bytes]) -> None:
    """Byte-identical file sets; on failure, every differing name and a diff of the first differing text file."""
    diff = differences(got, want)
    if not diff:
        return
    detail = ""
    for name in diff:
        if name in got and name in want and not name.endswith(".safetensors"):
            lines = difflib.unified_diff(
                want[name].decode().splitlines(),
                got[name].decode().splitlines(),
                "expected/" + name,
                "got/" + name,
                n=1,
                lineterm="",
            )
            detail = "\n".join(list(lines)[:40])
            break
    raise AssertionError(f"{len(diff)} files differ: {diff}\n{detail}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def latest_step(run: Path) -> int:
    try:
        return int((Path(run) / "state" / "LATEST").read_text().strip()[4:])
    except (OSError, ValueError):
        return 0


def wait_for_state_after(p: subprocess.Popen, run: Path, step: int, timeout: float = 240) -> int:
    """Poll (every 5 ms) until the run's LATEST state names a step > `step`; that step."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = latest_step(run)
        if s > step:
            return s
        if p.poll() is not None:
            raise AssertionError(
                f"the run ended (exit {p.returncode}) before saving a state after step {step}:\n"
                + p.stderr.read()[-3000:]
            )
        time.sleep(0.005)
    raise AssertionError(f"no state after step {step} within {timeout} s")


def send(p: subprocess.Popen, sig: int) -> tuple[int, str]:
    p.send_signal(sig)
    return finish(p, 120)


KILLED = -signal.SIGKILL
