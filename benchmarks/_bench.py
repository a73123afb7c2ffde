"""Shared pieces of the SAE benchmarks (sae_step.py, vs_saelens.py, all_layers.py).

- `ensure_malloc_env()`: re-executes the script with MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 (the
  Makefile's settings: glibc then keeps the multi-hundred-MB step buffers instead of returning them to the
  system every step, measured 1.2-1.45x on SAE steps), unless they are already set or --no-malloc-env is given;
- `alternate()`: times several variants in rounds, rotating their order every round, so slow drifts of a
  shared machine's load hit every variant alike; results are compared per round (ratio of the same round);
- `machine()`: what the numbers were measured on (CPU, cores, threads, load average before and after);
- `write_result()`: benchmarks/results/NAME.json and NAME.md (atomic writes), then regenerates the benchmark
  tables of book/performance.md from the result files.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from report import update_performance_page

from kdsae_core.common.fileio import atomic_write_json, atomic_write_text
from kdsae_core.common.paths import REPO_ROOT

OUT = Path(__file__).resolve().parent / "results"
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def ensure_malloc_env() -> None:
    if "--no-malloc-env" in sys.argv:
        return
    if all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
        return
    env = {**os.environ, **MALLOC_ENV}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def malloc_env() -> dict:
    return {k: os.environ.get(k) for k in MALLOC_ENV}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "kdsae_core", "benchmarks/*.py"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + ("+local-changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# Modules an earlier step imported relatively, and where they live since the package became layered.
MOVED_SINCE = {"errors": "kdsae_core.common.errors"}


def module_at(commit: str, path: str, package: str = "kdsae_core"):
    """The module `path` as it was at `commit` (read with git, executed as a submodule of `package`, so its
    relative imports resolve to today's package): a frozen earlier version to time against, not a copy in the tree."""
    src = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    for old, new in MOVED_SINCE.items():  # the old file's relative imports, pointed at where those modules live now
        src = src.replace(f"from .{old} import", f"from {new} import")
    name = f"{package}._at_{commit[:12]}_{Path(path).stem}"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    module.__package__ = package
    sys.modules[name] = module  # dataclasses look their module up by name
    exec(compile(src, f"{commit[:12]}:{path}", "exec"), module.__dict__)
    return module


def machine() -> dict:
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_bytes": mem,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "malloc_env": malloc_env(),
        "load_average_start": list(os.getloadavg()),
        "clock": "cpu" if _clock is time.process_time else "wall",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
    }


def finish_machine(m: dict) -> dict:
    m["load_average_end"] = list(os.getloadavg())
    return m


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def set_clock(name: str) -> None:
    """`wall` (default): elapsed time. `cpu`: this process's CPU time (all its threads), which leaves out the time
    other jobs hold the cores -- a steadier comparison on a shared machine, exact with one thread (with several,
    threads waiting at a barrier may spin and count)."""
    global _clock
    _clock = CLOCKS[name]


def machine_clock() -> str:
    return "cpu" if _clock is time.process_time else "wall"


def timed(fn: Callable[[], object], reps: int) -> float:
    """Seconds per call over `reps` calls, on the chosen clock."""
    t = _clock()
    for _ in range(reps):
        fn()
    return (_clock() - t) / reps


def reps_for(fn: Callable[[], object], min_seconds: float) -> int:
    """Calls per timing sample so that one sample lasts about min_seconds (fn is called once to measure)."""
    t = timed(fn, 1)
    return max(1, round(min_seconds / max(t, 1e-9)))


def alternate(
    fns: dict[str, Callable[[], object]], rounds: int, reps: dict[str, int], log: Callable[[str], None] = print
) -> dict[str, list[float]]:
    """{name: [seconds per call in round r]}: every round times every variant once, in an order rotated by
    one place per round."""
    names = list(fns)
    out = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            out[n].append(timed(fns[n], reps[n]))
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {out[n][-1] * 1e3:.1f} ms" for n in names))
    return out


def per_round_ratio(num: list[float], den: list[float]) -> dict:
    """Median (and range) over rounds of num[r] / den[r], and the ratio of the fastest samples (`best`: on a
    shared machine the fastest sample of each is the one least disturbed by other jobs)."""
    ratios = [a / b for a, b in zip(num, den)]
    return {
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "rounds": len(ratios),
        "best": min(num) / min(den),
    }


def summary(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "samples_s": times}


def write_result(name: str, result: dict, md: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_json(OUT / f"{name}.json", result)
    atomic_write_text(OUT / f"{name}.md", "\n".join(md) + "\n")
    changed = update_performance_page()
    print("\n".join(md))
    if changed:
        print(f"(regenerated the benchmark tables of {changed})")


def machine_line(m: dict) -> str:
    env = ", ".join(f"{k}={v}" for k, v in m["malloc_env"].items() if v is not None) or "glibc defaults"
    clock = "process CPU time" if m.get("clock") == "cpu" else "wall-clock time"
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads ({clock}), "
        f"{(m['memory_bytes'] or 0) / 2**30:.0f} GiB, torch {m['torch']} ({m['blas']}); {env}; load average "
        f"{m['load_average_start'][0]:.2f} at the start, {m.get('load_average_end', [float('nan')])[0]:.2f} at the end "
        f"(other jobs share the cores when it is above 0); commit {m['git_commit'][:12]}, {m['date']}."
    )
