"""Benchmark: kdsae's SAE training step against SAELens' standard SAE training step, same shapes, same
activations, alternating in one script.

SAELens 6.x runs in its own environment (.venv-saelens, `make saelens-env`; or --saelens-python / the
KDSAE_SAELENS_PYTHON variable): a worker process (benchmarks/saelens_worker.py) holds SAELens'
StandardTrainingSAE and SAETrainer as shipped and runs SAETrainer.step on command, while this process holds
kdsae's SAEUnit; only one of them computes at a time. Both start from the same weights, see the same batches
(fp32, CPU, the same thread count, the same malloc settings) and use the paper's trial-B lambda (SAELens'
l1_coefficient = lambda * d_in, its loss being d_in x ours). In each round: the step's five matrix products
alone (the ceiling, in this process), kdsae's step, SAELens' step, in an order rotated every round; the
speed-up is SAELens' time / kdsae's time of the same round, median over rounds.

Goals: >= 1.25x at the paper shape (1024 x 32768; the matmul ceiling allows at most about 1.4x there) and >= 2x
at 384 x 2048, where per-step overhead dominates.

Density rows (issue 19): the same comparison with the encoder bias set so that a given fraction of the (token,
latent) pairs fire (sae_step.density_bias; both trainers start from those weights and train at
sae_step.DENSITY_LR, so the density stays put; kdsae chooses its step path by itself): trial C's density in the
committed embedded run (mean L0 / d_sae of its second half) at 384 x 2048, goal >= 2x, and the paper's trial-C
regime (L0 150 of 32,768, 0.46%) and 1% at 1024 x 32768, goal >= 3.5x.
`--densities` runs these rows alone and writes benchmarks/results/vs_saelens_density.json and .md.

It also records that the two compute the same thing (benchmarks.saelens_compare.trajectory_comparison): 100
steps at 32 x 128 from the same weights, our loss against SAELens' with matched conventions (rtol 1e-4 goal),
and, for information, against SAELens exactly as shipped (free decoder norms, decoder-norm-weighted L1).

    .venv/bin/python benchmarks/vs_saelens.py [--rounds 5] [--shapes 384x2048,384x12288,1024x32768]

Writes benchmarks/results/vs_saelens.json and .md. Re-executes itself with MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=68719476736 (inherited by the SAELens worker) unless --no-malloc-env.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
from pathlib import Path

import _bench
import torch
from report import vs_saelens_density_section
from sae_step import DENSITY_LR, LR, SHAPES, TRIAL, Batches, Matmuls, density_bias, flops_per_token, parse_shapes
from saelens_compare import SAELensWorker, matched_l1_coefficient, trajectory_comparison

from kdsae_core.common import paths
from kdsae_core.runs.readers import read_metrics
from kdsae_core.sae.step import SAEUnit

GOALS = {(1024, 32768): 1.25, (384, 2048): 2.0}
EMBEDDED_RUN = paths.RESULTS / "exp2" / "embedded"
# (shape, density or "trial C embedded", goal speed-up)
DENSITY_ROWS = (((384, 2048), "trial C embedded", 2.0), ((1024, 32768), 150 / 32768, 3.5), ((1024, 32768), 0.01, 3.5))
TRAJ = dict(d_in=32, d_sae=128, B=256, steps=100, scale=0.1)
TRAJ_RTOL = 1e-4


def trial_c_embedded_density() -> float:
    """Trial C's mean L0 / d_sae over the second half of the committed embedded run (all layers)."""
    m = read_metrics(EMBEDDED_RUN / "metrics.jsonl")
    c = m[m["trial"] == "C"]
    d_sae = json.loads((EMBEDDED_RUN / "config.json").read_text())["d_sae"]
    return float(c[c["step"] > c["step"].max() / 2]["L0"].mean()) / d_sae


def bench_shape(worker: SAELensWorker, d_in, d_sae, B, rounds, min_sample_s, density=None) -> dict:
    """One row; with `density`, both trainers start from an encoder bias under which that fraction of pairs fire."""
    g = torch.Generator().manual_seed(0)
    batches = Batches(d_in, B, 2, g)
    lr = LR if density is None else DENSITY_LR  # at LR the density would drift away from `density` (sae_step.py)
    unit = SAEUnit(TRIAL, 0, d_in, d_sae, seed=0, lr=lr, grad_clip=1.0)
    if density is not None:
        with torch.no_grad():
            unit.sae.b_enc.copy_(density_bias(unit.sae, batches.calibration(), density))
    with tempfile.TemporaryDirectory(prefix="kdsae-vs-saelens-") as tmp:
        info = worker.setup(
            unit.sae.tensors(),
            batches.xs,
            matched_l1_coefficient(TRIAL.l1_coeff, TRIAL.l1_form, d_in, d_sae),
            lr,
            "shipped",
            threads=torch.get_num_threads(),
            folder=Path(tmp),
            clock=_bench.machine_clock(),
        )
    matmul = Matmuls(d_in, d_sae, B, g)
    reps = {"matmul": 1, "kdsae": 1, "saelens": 1}

    def saelens_sample(n):
        return worker.steps(n)["seconds"] / n

    print(f"({d_in}, {d_sae}), batch {B}: warming up", flush=True)
    matmul()
    first_density = float(unit.step(batches.next()).l0) / d_sae
    first = saelens_sample(1)
    reps["matmul"] = _bench.reps_for(matmul, min_sample_s)
    reps["kdsae"] = _bench.reps_for(lambda: unit.step(batches.next()), min_sample_s)
    reps["saelens"] = max(1, round(min_sample_s / max(saelens_sample(1), 1e-9)))
    fns = {
        "matmul": lambda: _bench.timed(matmul, reps["matmul"]),
        "kdsae": lambda: _bench.timed(lambda: unit.step(batches.next()), reps["kdsae"]),
        "saelens": lambda: saelens_sample(reps["saelens"]),
    }
    names = list(fns)
    times = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            times[n].append(fns[n]())
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1] * 1e3:.1f} ms" for n in names), flush=True)
    flops = flops_per_token(d_in, d_sae) * B
    out = {
        "d_in": d_in,
        "d_sae": d_sae,
        "batch_tokens": B,
        "flops_per_step": flops,
        "steps_per_sample": reps,
        "saelens_info": info,
        "saelens_first_step_s": first,
        "matmul": {"gflops": flops / statistics.median(times["matmul"]) / 1e9, "time": _bench.summary(times["matmul"])},
        "kdsae": {
            "time": _bench.summary(times["kdsae"]),
            "tokens_per_s": B / statistics.median(times["kdsae"]),
            "fraction_of_matmul": _bench.per_round_ratio(times["matmul"], times["kdsae"]),
        },
        "saelens": {
            "time": _bench.summary(times["saelens"]),
            "tokens_per_s": B / statistics.median(times["saelens"]),
            "fraction_of_matmul": _bench.per_round_ratio(times["matmul"], times["saelens"]),
        },
        "speedup": _bench.per_round_ratio(times["saelens"], times["kdsae"]),
    }
    last = unit.step(batches.next())
    out["kdsae"].update(path=last.path, density=float(last.l0) / d_sae, density_first_step=first_density)
    goal = GOALS.get((d_in, d_sae)) if density is None else None
    if goal:
        out["goal_speedup"] = goal
        out["goal_met"] = out["speedup"]["median"] >= goal
    unit = matmul = batches = None  # the timed closures hold them: free the SAE and its batches before the next shape
    gc.collect()
    return out


def markdown(result: dict) -> list[str]:
    t = result["trajectory"]
    md = [
        "# vs_saelens benchmark",
        "",
        f"kdsae `SAEUnit.step` against SAELens {result['saelens_version']} `SAETrainer.step` (StandardTrainingSAE as "
        f"shipped), fp32 on the CPU, batch {result['batch_tokens']} tokens, the same activations and initial weights; "
        f"speed-up = SAELens' step time / kdsae's in the same round, median over {result['rounds']} alternating "
        "rounds (range in brackets); fractions are of the rate of the step's five matrix products measured in the "
        "same rounds.",
        "",
        _bench.machine_line(result["machine"]),
        "",
        "| d_in x d_sae | kdsae tokens/s | SAELens tokens/s | kdsae fraction | SAELens fraction | speed-up | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in result["shapes"]:
        sp = s["speedup"]
        goal = f">= {s['goal_speedup']:.2f}x: {'met' if s['goal_met'] else 'NOT met'}" if "goal_speedup" in s else ""
        md.append(
            f"| {s['d_in']} x {s['d_sae']} | {s['kdsae']['tokens_per_s']:,.0f} | {s['saelens']['tokens_per_s']:,.0f} | "
            f"{s['kdsae']['fraction_of_matmul']['median']:.3f} | {s['saelens']['fraction_of_matmul']['median']:.3f} | "
            f"{sp['median']:.2f}x ({sp['min']:.2f}-{sp['max']:.2f}) | {goal} |"
        )
    m, sh = t["saelens"]["unit_norm"], t["saelens"]["shipped"]
    md += [
        "",
        f"Same computation: {t['steps']} steps at {t['d_in']} x {t['d_sae']}, batch {t['batch_tokens']}, "
        f"trial {t['trial']['name']} ({t['trial']['l1_form']} form, lambda {t['trial']['l1_coeff']:g}); kdsae's loss "
        f"against SAELens' loss / d_in: largest relative difference **{m['max_rel_diff_loss']:.2e}** with matched "
        f"conventions (goal <= {TRAJ_RTOL:g}: {'met' if m['max_rel_diff_loss'] <= TRAJ_RTOL else 'NOT met'}; "
        f"{t['ours']['clipped']} of {t['steps']} steps clipped), {sh['max_rel_diff_loss']:.2e} against SAELens as "
        "shipped (free decoder norms, decoder-norm-weighted L1: a different optimisation, shown for scale).",
    ]
    return md


def main() -> None:
    _bench.ensure_malloc_env()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--shapes", type=parse_shapes, default=list(SHAPES))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--min-sample-seconds", type=float, default=1.0)
    ap.add_argument(
        "--saelens-python", default=None, help="default: $KDSAE_SAELENS_PYTHON, else .venv-saelens/bin/python"
    )
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time (default); cpu: process CPU time of each process (steadier when shared)",
    )
    ap.add_argument("--no-malloc-env", action="store_true")
    ap.add_argument("--densities", action="store_true", help="the density rows instead (issue 19)")
    ap.add_argument("--out-name", default=None, help="default: vs_saelens, or vs_saelens_density with --densities")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    _bench.set_clock(args.clock)
    if args.densities:
        return main_densities(args)
    m = _bench.machine()
    with SAELensWorker(args.saelens_python) as worker:
        spec = TRIAL
        traj = trajectory_comparison(
            TRAJ["d_in"],
            TRAJ["d_sae"],
            TRAJ["B"],
            TRAJ["steps"],
            spec,
            scale=TRAJ["scale"],
            worker=worker,
            threads=torch.get_num_threads(),
        )
        print(
            f"trajectory: matched {traj['saelens']['unit_norm']['max_rel_diff_loss']:.2e}, "
            f"shipped {traj['saelens']['shipped']['max_rel_diff_loss']:.2e}",
            flush=True,
        )
        shapes = [
            bench_shape(worker, d_in, d_sae, args.batch, args.rounds, args.min_sample_seconds)
            for d_in, d_sae in args.shapes
        ]
        version = shapes[0]["saelens_info"]["sae_lens"] if shapes else traj["saelens"]["unit_norm"]["info"]["sae_lens"]
    result = {
        "benchmark": "vs_saelens",
        "machine": _bench.finish_machine(m),
        "saelens_version": version,
        "saelens_python": str(worker.python),
        "batch_tokens": args.batch,
        "rounds": args.rounds,
        "trial": TRIAL.to_json(),
        "trajectory_rtol_goal": TRAJ_RTOL,
        "command": " ".join([".venv/bin/python", "benchmarks/vs_saelens.py", *sys.argv[1:]]),
        "shapes": shapes,
        "trajectory": traj,
    }
    _bench.write_result(args.out_name or "vs_saelens", result, markdown(result))


def main_densities(args) -> None:
    m = _bench.machine()
    rows = []
    with SAELensWorker(args.saelens_python) as worker:
        for (d_in, d_sae), density, goal in DENSITY_ROWS:
            regime = density if isinstance(density, str) else f"{density:.2%} of pairs"
            value = trial_c_embedded_density() if density == "trial C embedded" else density
            print(f"{regime}: density {value:.4f}", flush=True)
            row = bench_shape(worker, d_in, d_sae, args.batch, args.rounds, args.min_sample_seconds, density=value)
            row.update(
                regime=regime, density_target=value, goal_speedup=goal, goal_met=row["speedup"]["median"] >= goal
            )
            rows.append(row)
    result = {
        "benchmark": "vs_saelens_density",
        "machine": _bench.finish_machine(m),
        "saelens_version": rows[0]["saelens_info"]["sae_lens"],
        "saelens_python": str(worker.python),
        "batch_tokens": args.batch,
        "rounds": args.rounds,
        "trial": TRIAL.to_json(),
        "command": " ".join([".venv/bin/python", "benchmarks/vs_saelens.py", *sys.argv[1:]]),
        "rows": rows,
    }
    _bench.write_result(args.out_name or "vs_saelens_density", result, density_markdown(result))


def density_markdown(result: dict) -> list[str]:
    return [
        "# vs_saelens density benchmark",
        "",
        _bench.machine_line(result["machine"]),
        *vs_saelens_density_section(result).splitlines(),
    ]


if __name__ == "__main__":
    main()
