"""Benchmark: what the sparse step makes possible -- trial C of the embedded profile at the paper's 32x expansion.

Trains trial C (target L0 150) of the embedded profile (MiniLM, its 300k tokens, 128-token batches) with
d_sae = 32 x 384 = 12,288 (or --d-sae) twice into temporary run folders, timing the whole `Trainer.run` (language-model
forward passes included, no measurement): once with every step dense (today's step), once as kdsae trains by
default (each step dense or sparse by its batch's density). Reports the wall times, how many steps took each path
(read from the run's metrics.jsonl), and the two runs' last logged loss and L0 (the paths sum in a different
order, so over thousands of steps the runs drift apart by rounding; they train the same model).

    .venv/bin/python benchmarks/trial_c_sparse.py [--layers 3] [--tokens 300000] [--d-sae 12288]

It also records how far the automatic run drifts from the all-dense one (first step whose logged loss, lambda or
L0 differ; their largest relative differences; the final weights'): the reproducibility page cites it at the
embedded profile's own width (`--d-sae 2048 --layers 5 --out-name trial_c_sparse_embedded`).

Writes benchmarks/results/trial_c_sparse.json and .md (or --out-name). Re-executes itself with the Makefile's
malloc settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import _bench
import torch
from report import DRIFT_COLUMNS, drift_sentence
from safetensors.torch import load_file

from kdsae_core.runs import layout
from kdsae_core.sae import sparse as sae_sparse
from kdsae_core.train.config import SAETrainConfig
from kdsae_core.train.trainer import Trainer

D_MODEL = 384  # MiniLM's, the embedded profile's model
EXPANSION_D_SAE = 32 * D_MODEL  # the paper's 32x expansion


def timed_run(cfg: SAETrainConfig, step_path: str) -> tuple[dict, list[dict], dict]:
    """(what the result records, the metrics rows, the final weights per layer) of one training run."""
    with tempfile.TemporaryDirectory(prefix=f"kdsae-trial-c-{step_path}-") as tmp:
        run = Path(tmp) / "run"
        t = time.perf_counter()
        Trainer(dataclasses.replace(cfg, sae_step=step_path), run, progress=False).run()
        wall = time.perf_counter() - t
        rows = [json.loads(line) for line in layout.run_metrics(run).read_text().splitlines()]
        weights = {
            layer: load_file(layout.checkpoint_dir(run, "C", layer, "final") / layout.WEIGHTS_FILE)
            for layer in cfg.layers
        }
    last = [r for r in rows if r["step"] == max(r["step"] for r in rows)]
    first_sparse = min((r["step"] for r in rows if r["sae_step"] == "sparse"), default=None)
    print(f"{step_path}: {wall:.1f} s, paths {dict(Counter(r['sae_step'] for r in rows))}", flush=True)
    return (
        {
            "step_path": step_path,
            "wall_s": wall,
            "paths": dict(Counter(r["sae_step"] for r in rows)),
            "first_sparse_step": first_sparse,
            "last": [{k: r[k] for k in ("layer", "loss", "L0", "mse")} for r in last],
        },
        rows,
        weights,
    )


def drift(rows_a: list[dict], rows_b: list[dict], weights_a: dict, weights_b: dict) -> dict:
    """How far run b's log and final weights are from run a's: the first step whose logged numbers differ, the
    largest relative difference of each over all steps, and ||W_b - W_a|| / ||W_a|| of the final weights."""
    key = {(r["layer"], r["step"]): r for r in rows_a}
    rel = {c: 0.0 for c in DRIFT_COLUMNS}
    first = None
    for r in rows_b:
        a = key[(r["layer"], r["step"])]
        for c in DRIFT_COLUMNS:
            if r[c] != a[c]:
                first = r["step"] if first is None else min(first, r["step"])
                # relative to the larger of the two, so a 0 logged by one run (L0 of a batch) stays finite
                rel[c] = max(rel[c], abs(r[c] - a[c]) / max(abs(a[c]), abs(r[c])))
    w = {
        name: max(
            float((weights_b[layer][name] - weights_a[layer][name]).norm() / weights_a[layer][name].norm())
            for layer in weights_a
        )
        for name in ("W_enc", "W_dec")
    }
    return {"first_differing_step": first, "max_rel_diff": rel, "final_weights_rel_diff": w}


def _row(name: str, x: dict) -> str:
    losses = ", ".join(f"{v['loss']:.4g}" for v in x["last"])
    l0s = ", ".join(f"{v['L0']:.0f}" for v in x["last"])
    return (
        f"| {name} | {x['wall_s']:.0f} s | {x['paths'].get('dense', 0)} / {x['paths'].get('sparse', 0)} | "
        f"{x['first_sparse_step'] or '-'} | {losses} | {l0s} |"
    )


def markdown(r: dict) -> list[str]:
    d, a = r["runs"]["dense"], r["runs"]["auto"]
    return [
        "# trial_c_sparse benchmark",
        "",
        f"Trial C of the embedded profile at d_sae {r['d_sae']:,} ({r['d_sae'] / D_MODEL:g} x d_model), "
        f"layers {r['layers']}, "
        f"{r['tokens']:,} tokens in batches of {r['batch_tokens']}: the whole training run, wall time.",
        "",
        _bench.machine_line(r["machine"]),
        "",
        "| steps | wall | steps dense / sparse | first sparse step | last loss (per layer) | last L0 |",
        "|---|---|---|---|---|---|",
        _row("all dense", d),
        _row("automatic", a),
        "",
        f"Speed-up of the run: **{d['wall_s'] / a['wall_s']:.2f}x**.",
        "",
        drift_sentence(r["drift"]),
    ]


def main() -> None:
    _bench.ensure_malloc_env()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="3", help="comma-separated MiniLM layers (default: one, 3)")
    ap.add_argument("--tokens", type=int, default=None, help="default: the embedded profile's")
    ap.add_argument("--d-sae", type=int, default=EXPANSION_D_SAE, help="default: %(default)s (32 x d_model)")
    ap.add_argument("--out-name", default="trial_c_sparse", help="result file name under benchmarks/results/")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-malloc-env", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = SAETrainConfig.from_profile(
        "embedded",
        trials=["C"],
        d_sae=args.d_sae,
        tokens=args.tokens,
        layers=[int(v) for v in args.layers.split(",")],
    )
    m = _bench.machine()
    (dense, dense_rows, dense_w), (auto, auto_rows, auto_w) = timed_run(cfg, "dense"), timed_run(cfg, "auto")
    runs = {"dense": dense, "auto": auto}
    result = {
        "benchmark": "trial_c_sparse",
        "machine": _bench.finish_machine(m),
        "d_sae": cfg.d_sae,
        "layers": cfg.layers,
        "tokens": cfg.tokens,
        "batch_tokens": cfg.batch_tokens,
        "command": " ".join([".venv/bin/python", "benchmarks/trial_c_sparse.py", *sys.argv[1:]]),
        "sparse_below_density": sae_sparse.sparse_below_density(D_MODEL, cfg.d_sae),
        "runs": runs,
        "speedup": runs["dense"]["wall_s"] / runs["auto"]["wall_s"],
        "drift": drift(dense_rows, auto_rows, dense_w, auto_w),
    }
    _bench.write_result(args.out_name, result, markdown(result))


if __name__ == "__main__":
    main()
