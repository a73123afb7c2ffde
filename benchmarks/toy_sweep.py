"""Benchmark of Experiment 1: the batched toy sweep vs the same models trained one at a time.

Writes benchmarks/results/toy_sweep.json and .md. Measures:
- the quick profile end to end (wall time);
- the paper profile: seconds per step of each phase (timed over a few steps) and the projected total,
  or, with --paper-wall FILE, the wall time recorded by a full run (`{"wall_seconds": ...}`);
- one model at a time, each model its own program, summed over every model of the paper grid: with kdsae's
  own step (a Block of one model) and with the textbook loop (autograd + torch.optim.Adam);
- FLOPs per step (hand count below) and the machine's fp32 matmul rate and memory bandwidth.

    python benchmarks/toy_sweep.py [--paper-wall /path/wall.json] [--steps 20] [--threads 1]

The measured wall defaults to results/toy/paper/wall.json, written by `make results-toy`.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import _bench
import torch
from report import update_performance_page
from toy_autograd import AutogradModel

from kdsae_core.common.fileio import atomic_write_json, atomic_write_text
from kdsae_core.common.paths import TOY_WALL_FILE, toy_results_dir
from kdsae_core.toy.config import ToyConfig
from kdsae_core.toy.model import CACHE_BYTES, DataStream, importance_profile
from kdsae_core.toy.sweep import ToySweep, build_blocks, run_sweep

OUT = Path(__file__).resolve().parent / "results"


def step_flops(n: int, d: int, B: int) -> float:
    """Hand count per model per step: h = Wx (2Bnd), [h, 1] P = W^T h + b (2B(d+1)n), decoder and bias
    gradient [h, 1]^T g (2B(d+1)n), encoder grad (W diag(s) g^T) x (2Bnd + 2Bdn), and ~4Bn elementwise
    (residual, ReLU mask)."""
    return 2 * B * n * d * 3 + 4 * B * (d + 1) * n + 4 * B * n


def step_bytes(n: int, d: int, B: int) -> float:
    """Hand count of the bytes one model's step moves through the [B, n] and [B, d] buffers (fp32), if every
    pass went to memory: the pre-activation written by the decoder product (1), the residual (read it and
    the target, write g: 3), the ReLU mask in place (3), the two gradient products read g (2) -> 9 passes;
    the input read by two products (2); h written, copied beside its column of ones (2) and read by two
    products (2), W diag(s) g^T written and read (2) -> 7 passes of [B, d]. Weights and Adam state
    (d x n per model) are negligible next to these."""
    return 4.0 * B * (11 * n + 7 * d)


def _per_phase(cfg: ToyConfig, per_model_step, teacher_forward) -> dict:
    """Sum a per-model-step cost over every model of each phase (every model at its own width); the student
    phase also runs each teacher's forward pass on the student batch (teacher_forward(n, d_T, B))."""
    B = cfg.batch
    out = {"teacher": 0.0, "student": 0.0}
    for n in cfg.n:
        for d_t in cfg.d_teacher:
            models = len(cfg.alpha) * cfg.seeds
            out["teacher"] += models * per_model_step(n, d_t, B)
            out["student"] += models * teacher_forward(n, d_t, B)
            for w in cfg.student_widths(d_t, n, cfg.alpha[0]):
                out["student"] += models * per_model_step(n, w, B)
    return out


def sweep_flops(cfg: ToyConfig) -> dict:
    """FLOPs per step of each phase; the teacher's forward pass is its two products (2Bnd + 2B(d+1)n)."""
    return _per_phase(cfg, step_flops, lambda n, d, B: 2 * B * n * d + 2 * B * (d + 1) * n)


def sweep_bytes(cfg: ToyConfig) -> dict:
    """Bytes per step of each phase; the teacher's forward pass writes its [B, n] output and applies the
    ReLU in place (3 passes), and writes, copies and reads its [B, d_T] hidden state (4 passes)."""
    return _per_phase(cfg, step_bytes, lambda n, d, B: 4.0 * B * (3 * n + 4 * d))


ONE_AT_A_TIME_PROGRAMS = {
    "kdsae": "kdsae's hand-written step (toy.Block) holding one model",
    "textbook": "the textbook loop: autograd and torch.optim.Adam on one model (toy_autograd.AutogradModel)",
}


def one_at_a_time_seconds_per_step(cfg: ToyConfig, program: str, steps: int) -> float:
    """Seconds for one step of every model of the sweep, each model trained as its own program: it samples
    its own batch, and a student also runs its teacher's forward pass. Timed once per (n, d_T, width) at
    the middle sparsity (the cost does not depend on alpha) and weighted by the models sharing that shape
    (alphas x seeds)."""
    B, alpha, share = cfg.batch, cfg.alpha[len(cfg.alpha) // 2], len(cfg.alpha) * cfg.seeds
    total = 0.0
    for n in cfg.n:
        importance = importance_profile(cfg.importance, n)
        for d_t in cfg.d_teacher:
            stream = DataStream(n, [alpha], ("one-at-a-time", n, d_t))
            teacher = build_blocks(cfg, n, d_t, "teacher", alphas=[alpha], seeds=[0])
            if program == "textbook":
                textbook_teacher = AutogradModel(teacher.W[0, 0, 0], importance)
                total += share * _timed(lambda: textbook_teacher.step(stream.sample(B)[0], None, 1e-3), steps)
            else:
                total += share * _timed(lambda: teacher.step(stream.sample(B), None, 1e-3), steps)
            for w in cfg.student_widths(d_t, n, cfg.alpha[0]):
                student = build_blocks(cfg, n, d_t, "student", alphas=[alpha], seeds=[0], ws=[w])
                if program == "textbook":
                    textbook_student = AutogradModel(student.W[0, 0, 0], importance)

                    def step():
                        x = stream.sample(B)[0]
                        with torch.no_grad():
                            y = textbook_teacher.forward(x)
                        textbook_student.step(x, y, 1e-3)
                else:

                    def step():
                        x = stream.sample(B)
                        student.step(x, teacher.forward(x), 1e-3)

                total += share * _timed(step, steps)
    return total


def _timed(fn, steps: int) -> float:
    for _ in range(3):  # warm-up
        fn()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps


def seconds_per_step(sweep: ToySweep, phase: str, steps: int) -> float:
    sweep.train_step(phase, 0)  # warm-up: first touch of the buffers
    t = time.perf_counter()
    for step in range(steps):
        sweep.train_step(phase, step)
    return (time.perf_counter() - t) / steps


def machine_rates() -> dict:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t = time.perf_counter()
    for _ in range(5):
        a @ b
    matmul = 5 * 2 * 2048**3 / (time.perf_counter() - t)
    x = torch.empty(64 << 20)  # 256 MiB
    x.fill_(1.0)
    y = torch.empty_like(x)
    y.copy_(x)  # first touch outside the timing: page faults are not bandwidth
    t = time.perf_counter()
    for _ in range(5):
        y.copy_(x)
    bandwidth = 5 * 2 * x.numel() * 4 / (time.perf_counter() - t)  # read + write
    # The sweep works on chunks of CACHE_BYTES (toy.py), so its passes run at the last-level cache's rate:
    # a copy whose source and destination together fill one chunk.
    c = torch.empty(CACHE_BYTES // 8)
    c.fill_(1.0)
    e = torch.empty_like(c)
    e.copy_(c)
    t = time.perf_counter()
    for _ in range(200):
        e.copy_(c)
    cache_bandwidth = 200 * 2 * c.numel() * 4 / (time.perf_counter() - t)
    return {
        "fp32_matmul_gflops": matmul / 1e9,
        "copy_bandwidth_gbs": bandwidth / 1e9,
        "cache_copy_bandwidth_gbs": cache_bandwidth / 1e9,
    }


def main() -> None:
    _bench.ensure_malloc_env()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per phase for the projections")
    ap.add_argument(
        "--paper-wall",
        type=Path,
        default=toy_results_dir("paper") / TOY_WALL_FILE,
        help="wall.json of a full paper-profile run (default: the committed run's)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the committed paper run used one)")
    ap.add_argument("--no-malloc-env", action="store_true", help="keep glibc's default malloc settings")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            **machine_rates(),
        }
    }

    quick = ToyConfig.from_profile("quick")
    t = time.perf_counter()
    run_sweep(quick, progress=False)
    models_quick = len(quick.n) * len(quick.alpha) * quick.seeds * sum(1 + d for d in quick.d_teacher)
    result["quick"] = {"wall_seconds": time.perf_counter() - t, "models": models_quick, "steps": quick.steps}

    paper = ToyConfig.from_profile("paper")
    sweep = ToySweep(paper, progress=False)
    per_step = {ph: seconds_per_step(sweep, ph, args.steps) for ph in ("teacher", "student")}
    flops = sweep_flops(paper)
    models = sum(b.count for b in sweep.teachers.values()) + sum(b.count for b in sweep.students.values())
    del sweep
    projected = paper.steps * (per_step["teacher"] + per_step["student"])
    moved = sweep_bytes(paper)
    bandwidth = result["machine"]["copy_bandwidth_gbs"] * 1e9
    floor = paper.steps * (moved["teacher"] + moved["student"]) / bandwidth
    cache_floor = (
        paper.steps * (moved["teacher"] + moved["student"]) / (result["machine"]["cache_copy_bandwidth_gbs"] * 1e9)
    )
    result["paper"] = {
        "models": models,
        "steps": paper.steps,
        "seconds_per_step": per_step,
        "projected_wall_seconds": projected,
        "flops_per_step": flops,
        "achieved_gflops": {ph: flops[ph] / per_step[ph] / 1e9 for ph in per_step},
        "bytes_per_step": moved,
        "memory_floor_seconds": floor,
        "projected_over_floor": projected / floor,
        "cache_floor_seconds": cache_floor,
        "projected_over_cache_floor": projected / cache_floor,
    }
    if args.paper_wall and args.paper_wall.exists():
        wall = json.loads(args.paper_wall.read_text())
        result["paper"]["measured_wall_seconds"] = wall["wall_seconds"]
        result["paper"]["measured_jobs"] = int(wall.get("jobs", 1))
        result["paper"]["measured_wall_file"] = str(args.paper_wall)

    for name, program in (("one_at_a_time", "kdsae"), ("one_at_a_time_textbook", "textbook")):
        per_step_all = one_at_a_time_seconds_per_step(paper, program, args.steps * 5)
        result[name] = {
            "program": ONE_AT_A_TIME_PROGRAMS[program],
            "seconds_per_model_step": per_step_all / models,
            "projected_wall_seconds": per_step_all * paper.steps,
        }
    # Per core: one model at a time runs on one core, so it is set against one process's wall (the full run's
    # when it ran as one process, else the projection from the steps timed above).
    one_process = result["paper"].get("measured_wall_seconds") if result["paper"].get("measured_jobs", 1) == 1 else None
    batched_wall = one_process if one_process is not None else projected
    result["speedup_batched_vs_one_at_a_time"] = result["one_at_a_time"]["projected_wall_seconds"] / batched_wall
    result["speedup_batched_vs_textbook"] = result["one_at_a_time_textbook"]["projected_wall_seconds"] / batched_wall

    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_json(OUT / "toy_sweep.json", result)
    p = result["paper"]
    md = [
        "# toy_sweep benchmark",
        "",
        f"Machine: {result['machine']['threads']} threads, fp32 matmul {result['machine']['fp32_matmul_gflops']:.0f} "
        "GFLOP/s, "
        f"copy bandwidth {result['machine']['copy_bandwidth_gbs']:.1f} GB/s (memory), "
        f"{result['machine']['cache_copy_bandwidth_gbs']:.1f} GB/s (a {CACHE_BYTES >> 20} MiB working set), torch "
        f"{result['machine']['torch']}.",
        "",
        "| what | value |",
        "|---|---|",
        f"| quick profile ({models_quick} models, {quick.steps} steps), wall | {result['quick']['wall_seconds']:.1f} "
        "s |",
        f"| paper profile ({models} models, {paper.steps} steps), s/step teacher / student | "
        f"{per_step['teacher']:.3f} / {per_step['student']:.3f} |",
        f"| paper profile, projected wall | {projected / 60:.1f} min |",
        f"| paper profile, measured wall ({p.get('measured_jobs', 1)} process(es) of one thread) | "
        f"{p['measured_wall_seconds'] / 60:.1f} min |"
        if "measured_wall_seconds" in p
        else "| paper profile, measured wall | not run here |",
        f"| memory-traffic floor if every pass went to memory (bytes per step {moved['teacher'] / 1e9:.2f} + "
        f"{moved['student'] / 1e9:.2f} GB x {paper.steps} steps / memory copy bandwidth) | {floor / 60:.1f} min; "
        f"projected wall = {projected / floor:.2f}x this |",
        f"| memory-traffic floor of the cache-blocked program (same bytes / cache copy bandwidth) | "
        f"{cache_floor / 60:.1f} min; projected wall = {projected / cache_floor:.2f}x this |",
        f"| achieved GFLOP/s (teacher; student phase) | {p['achieved_gflops']['teacher']:.1f}; "
        f"{p['achieved_gflops']['student']:.1f} |",
        *[
            f"| one model at a time with {result[k]['program']}: per model-step; projected paper sweep | "
            f"{result[k]['seconds_per_model_step'] * 1e3:.2f} ms; {result[k]['projected_wall_seconds'] / 3600:.1f} h |"
            for k in ("one_at_a_time", "one_at_a_time_textbook")
        ],
        f"| batched speed-up over kdsae's step / the textbook loop, one at a time | "
        f"{result['speedup_batched_vs_one_at_a_time']:.1f}x / {result['speedup_batched_vs_textbook']:.1f}x |",
    ]
    atomic_write_text(OUT / "toy_sweep.md", "\n".join(md) + "\n")
    print("\n".join(md))
    update_performance_page()  # book/performance.md shows this result


if __name__ == "__main__":
    main()
