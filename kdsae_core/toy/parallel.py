"""Experiment 1's sweep over several processes: split by feature count n, merged into the one-process result.

Models of different n share nothing: their data streams, initial weights and evaluation samples are all
seeded by n, and every entry of toy_results.json is computed from one (n, alpha, d_T). So each group of
feature counts trains as an ordinary, resumable sweep in its own process (under OUT/parts/), and the merge
writes byte for byte the toy_results.json of a one-process run with as many threads as each part has
(tests/test_toy.py checks it). Why processes: measured here, a second thread in one process steps the
students only 1.4x faster (0.70 -> 0.49 s; the operations are small), while parts share no operation at
all, so their speed-up is bounded by the balance of the split (n = 40 | 10, 20 on two cores).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import multiprocessing
import os
import shutil
import signal
from pathlib import Path

import torch

from kdsae_core.common.errors import InvalidParameter, KdsaeError
from kdsae_core.common.fileio import atomic_write_json
from kdsae_core.common.locks import run_lock
from kdsae_core.common.paths import TOY_PARTS_DIR, TOY_RESULTS_FILE
from kdsae_core.toy.config import ToyConfig
from kdsae_core.toy.results import load_results, results_dict
from kdsae_core.toy.sweep import run_sweep

SPLIT_FILE = "split.json"


def split_feature_counts(n: list[int], jobs: int) -> list[list[int]]:
    """Feature counts in at most `jobs` groups of near-equal work (every n trains the same models, each step
    costing about n): largest first, each into the lightest group."""
    if not 1 <= jobs:
        raise InvalidParameter(f"--jobs must be at least 1 (got {jobs}).")
    groups: list[list[int]] = [[] for _ in range(min(jobs, len(n)))]
    for value in sorted(n, reverse=True):
        min(groups, key=sum).append(value)
    return [sorted(g) for g in groups]


def _part_folder(out: Path, group: list[int]) -> Path:
    return out / TOY_PARTS_DIR / ("n" + "-".join(map(str, group)))


def _stop_with_parent() -> None:
    """Linux: SIGTERM this process if the parent dies (so a killed run leaves no orphan holding a part's lock;
    the part saves its state as on any SIGTERM). Elsewhere nothing."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _train_part(cfg: dict, out: str, position: int, threads: int, progress: bool) -> None:
    """One group's sweep, in its own process (SIGINT/SIGTERM save its state, as in the one-process sweep)."""
    _stop_with_parent()
    torch.set_num_threads(threads)
    try:
        run_sweep(ToyConfig(**cfg), Path(out), progress=progress, bar_position=position)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def run_parallel(cfg: ToyConfig, out: Path, jobs: int, progress: bool = True) -> dict:
    """Train the sweep in `jobs` processes (one thread each unless more are available per job), merge, and write
    `out/toy_results.json` atomically. Interrupted, every part keeps its resumable state: run it again."""
    cfg.validate()
    out = Path(out)
    groups = split_feature_counts(cfg.n, jobs)
    threads = max(1, torch.get_num_threads() // len(groups))
    with run_lock(out):
        _record_split(out, cfg, groups)
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per part: no forked torch state
        parts = [
            ctx.Process(
                target=_train_part,
                args=(
                    dataclasses.asdict(dataclasses.replace(cfg, n=group)),
                    str(_part_folder(out, group)),
                    i,
                    threads,
                    progress,
                ),
            )
            for i, group in enumerate(groups)
        ]
        if _run_parts(parts) is not None:
            raise KeyboardInterrupt(
                "toy sweep interrupted; state saved in every part: rerun the same command to resume"
            )
        failed = [(g, p.exitcode) for g, p in zip(groups, parts) if p.exitcode != 0]
        if failed:
            raise KdsaeError(
                "the part(s) of the sweep for n = "
                + "; ".join(f"{','.join(map(str, g))} (exit code {code})" for g, code in failed)
                + f" stopped; their state is in {out / TOY_PARTS_DIR}: rerun the same command to resume."
            )
        results = merge_results(cfg, [load_results(_part_folder(out, g)) for g in groups])
        atomic_write_json(out / TOY_RESULTS_FILE, results)
        shutil.rmtree(out / TOY_PARTS_DIR)
    return results


def _record_split(out: Path, cfg: ToyConfig, groups: list[list[int]]) -> None:
    """Write the split and the config to OUT/parts/split.json, refusing parts left there by another split or setup."""
    split = {"n": groups, "config": dataclasses.asdict(cfg)}
    split_file = out / TOY_PARTS_DIR / SPLIT_FILE
    if split_file.exists() and json.loads(split_file.read_text()) != split:
        raise InvalidParameter(
            f"{out / TOY_PARTS_DIR} holds the parts of a sweep split or set up another way "
            f"({split_file}): rerun that command, or use another --out."
        )
    atomic_write_json(split_file, split)


def _run_parts(parts: list) -> int | None:
    """Start every part and wait for all of them, passing a SIGTERM or SIGINT of this process on to them (each part
    saves its state on either); the signal that stopped them, or None when they all ran to their end."""
    stop = {"signal": None}

    def forward(signum, frame):  # each part saves its state on SIGTERM, as a one-process sweep does
        stop["signal"] = signum
        for p in parts:
            if p.is_alive():
                p.terminate()

    old = signal.signal(signal.SIGTERM, forward)
    try:
        for p in parts:
            p.start()
        for p in parts:
            p.join()
    except KeyboardInterrupt:  # a terminal sends SIGINT to the parts too; a `kill -INT` only to this process
        for p in parts:
            if p.is_alive():
                os.kill(p.pid, signal.SIGINT)
        for p in parts:
            p.join()
        stop["signal"] = signal.SIGINT
    finally:
        signal.signal(signal.SIGTERM, old)
    return stop["signal"]


def merge_results(cfg: ToyConfig, parts: list[dict]) -> dict:
    """toy_results.json of the whole sweep from the results of sweeps over disjoint groups of feature counts."""
    by_key = {}
    for part in parts:
        for c in part["configs"]:
            key = (c["n"], c["alpha"], c["d_teacher"])
            if key in by_key:
                raise InvalidParameter(
                    f"two parts both hold the configuration n={key[0]}, alpha={key[1]}, d_T={key[2]}."
                )
            by_key[key] = c
    want = [(n, a, d) for n in cfg.n for a in cfg.alpha for d in cfg.d_teacher]
    missing = [k for k in want if k not in by_key]
    if missing or len(by_key) != len(want):
        raise InvalidParameter(
            f"the parts do not make up the sweep: missing {missing[:3]}, or configurations it does not have."
        )
    threads = {part["settings"]["torch_threads"] for part in parts}
    return results_dict(cfg, [by_key[k] for k in want], threads.pop() if len(threads) == 1 else sorted(threads))
