"""The benchmark tables of book/performance.md, generated from benchmarks/results/*.json.

The page holds marked sections, `<!-- bench:NAME -->` ... `<!-- /bench:NAME -->`; `update_performance_page()`
(called by every benchmark script after it writes its result) replaces what is between the markers with
`render_sections()`'s tables, so every number on the page comes from a result file or from the stated
assumptions of kdsae_core.sae.plan, never typed by hand. `stale_sections()` says which sections differ from
what the result files give now (tests/test_bench_report.py checks the committed page with it).
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from kdsae_core.common.fileio import atomic_write_text
from kdsae_core.common.paths import REPO_ROOT
from kdsae_core.runs.reference import PAPER_LAYER_VALUES
from kdsae_core.sae import plan as sae_plan
from kdsae_core.sae.model import paper_trials

if __package__:  # imported as benchmarks.report (the tests)
    from benchmarks import gpu_projection
else:  # imported by a benchmark script run from this folder (`from report import update_performance_page`)
    import gpu_projection

RESULTS = REPO_ROOT / "benchmarks" / "results"
PAGE = REPO_ROOT / "book" / "performance.md"
SECTIONS = (
    "machine",
    "sae_step",
    "vs_saelens",
    "sparse_step",
    "all_layers",
    "compile",
    "cpu_model",
    "projection",
    "sparse_projection",
    "memory",
    "toy_sweep",
    "book_build",
)
MAIN = ("sae_step", "vs_saelens", "all_layers")
OWN_MACHINE_LINE = ("toy_sweep", "book_build")  # their sections state their own machine
ONE_THREAD = "_cpu1"  # the same benchmark with --threads 1 --clock cpu, when it has been run
ONE_THREAD_NOTE = (
    "The same benchmark with one thread, timed in process CPU time (`--threads 1 --clock cpu "
    "--out-name {name}`): on a shared machine it leaves out the time other jobs hold the core, and "
    "with one thread no thread waits at a barrier for a descheduled sibling."
)
_MARK = re.compile(r"(<!-- bench:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /bench:(?P=name) -->)", re.S)


def load_results(folder: Path = RESULTS) -> dict[str, dict]:
    out = {}
    for name in (
        "sae_step",
        "vs_saelens",
        "all_layers",
        "sae_step_compile",
        *(f"{n}{ONE_THREAD}" for n in MAIN),
        "sae_step_density",
        "sae_step_density" + ONE_THREAD,
        "vs_saelens_density",
        "trial_c_sparse",
        "trial_c_sparse_embedded",
        "sparse_parts",
        "toy_sweep",
        "book_build",
    ):
        p = Path(folder) / f"{name}.json"
        if p.exists():
            out[name] = json.loads(p.read_text())
    return out


def _missing(name: str) -> str:
    return f"*Not measured yet: run `.venv/bin/python benchmarks/{name}.py`.*\n"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _g(x: float) -> str:
    return f"{x:,.0f}"


def _machine(results: dict) -> str:
    lines = [
        "| benchmark | machine | torch threads | clock | load average (start, end) | date | commit |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if name in OWN_MACHINE_LINE:
            continue
        m = r["machine"]
        env = "malloc kept" if m["malloc_env"].get("MALLOC_MMAP_MAX_") == "0" else "glibc malloc defaults"
        lines.append(
            f"| {name} | {m['cpu']}, {m['cores']} cores, {(m['memory_bytes'] or 0) / 2**30:.0f} GiB, torch "
            f"{m['torch']}, {env} | {m['torch_threads']} | {m.get('clock', 'wall')} | "
            f"{m['load_average_start'][0]:.2f}, {m.get('load_average_end', [float('nan')])[0]:.2f} | "
            f"{m['date'][:10]} | `{m['git_commit'][:10]}` |"
        )
    if len(lines) == 2:
        return _missing("sae_step")
    return "\n".join(lines) + "\n"


def _sae_step(r: dict | None) -> str:
    if not r:
        return _missing("sae_step")
    lines = [
        "| d_in x d_sae | matmul rate (GFLOP/s) | step | tokens/s per layer | fraction of matmul rate "
        "(median, range) | fastest samples | time outside the products | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in r["shapes"]:
        for n, v in s["variants"].items():
            f = v["fraction_of_matmul"]
            goal = f">= {s['goal_fraction']:.2f}: {_met(s['goal_met'])}" if n == "kdsae" else ""
            outside = f"{v['profile']['outside_s'] * 1e3:,.0f} ms" if "profile" in v else "-"
            lines.append(
                f"| {s['d_in']} x {s['d_sae']} | {s['matmul']['gflops']:.0f} | {n} | {_g(v['tokens_per_s'])} | "
                f"{f['median']:.3f} ({f['min']:.3f}-{f['max']:.3f}) | {f.get('best', float('nan')):.3f} "
                f"| {outside} | {goal} |"
            )
    paper = _paper_shape(r)
    if paper and any("profile" in v for v in paper["variants"].values()):
        lines += ["", "Largest ops outside the products at 1024 x 32768 (profiler self time, one step):", ""]
        for n, v in paper["variants"].items():
            if "profile" in v:
                lines.append(f"- `{n}`: " + ", ".join(f"`{k}` {t * 1e3:,.0f} ms" for k, t in v["profile"]["top_ops"]))
    labels = {n: v["label"] for s in r["shapes"] for n, v in s["variants"].items()}
    lines += [
        "",
        "Steps: " + "; ".join(f"`{n}` = {lab}" for n, lab in labels.items()) + ". "
        "Time outside the products: torch.profiler's self time of every op other than the matrix products, "
        "the fewest of 3 profiled steps (the memory-bound work the speed changes remove; less noisy than the "
        "fraction on a shared machine). "
        f"Batch {r['batch_tokens']} tokens, fp32, {r['rounds']} rounds; command `{r['command']}`.",
    ]
    return "\n".join(lines) + "\n"


def _vs_saelens(r: dict | None) -> str:
    if not r:
        return _missing("vs_saelens")
    lines = [
        "| d_in x d_sae | kdsae tokens/s | SAELens tokens/s | kdsae fraction | SAELens fraction | speed-up "
        "(median, range) | fastest samples | ceiling: 1 / SAELens fraction | goal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["shapes"]:
        sp = s["speedup"]
        goal = f">= {s['goal_speedup']:.2f}x: {_met(s['goal_met'])}" if "goal_speedup" in s else ""
        lines.append(
            f"| {s['d_in']} x {s['d_sae']} | {_g(s['kdsae']['tokens_per_s'])} | {_g(s['saelens']['tokens_per_s'])} | "
            f"{s['kdsae']['fraction_of_matmul']['median']:.3f} | {s['saelens']['fraction_of_matmul']['median']:.3f} | "
            f"{sp['median']:.2f}x ({sp['min']:.2f}-{sp['max']:.2f}) | {sp.get('best', float('nan')):.2f}x | "
            f"{1 / s['saelens']['fraction_of_matmul']['median']:.2f}x | {goal} |"
        )
    t = r["trajectory"]
    mt, sh = t["saelens"]["unit_norm"], t["saelens"]["shipped"]
    lines += [
        "",
        f"SAELens {r['saelens_version']}, `SAETrainer.step` of `StandardTrainingSAE` as shipped; "
        f"{r['rounds']} rounds; command `{r['command']}`.",
        "",
        f"Same computation ({t['steps']} steps at {t['d_in']} x {t['d_sae']}, batch {t['batch_tokens']}, "
        f"{t['trial']['l1_form']} form, lambda {t['trial']['l1_coeff']:g}, {t['ours']['clipped']} steps clipped): "
        f"largest relative difference of the loss **{mt['max_rel_diff_loss']:.1e}** with matched conventions "
        f"(goal <= {r['trajectory_rtol_goal']:g}: {_met(mt['max_rel_diff_loss'] <= r['trajectory_rtol_goal'])}); "
        f"{sh['max_rel_diff_loss']:.2f} against SAELens as shipped, which optimises a different problem "
        "(free decoder norms, decoder-norm-weighted L1).",
    ]
    return "\n".join(lines) + "\n"


def _all_layers(r: dict | None) -> str:
    if not r:
        return _missing("all_layers")
    s = r["seconds"]
    f, w = r["forward_separate_over_one_pass"], r["wall_separate_over_one_pass"]
    L = r["layers"]
    lines = [
        "| what | value |",
        "|---|---|",
        f"| LM forward, one pass capturing all {L} layers | {s['forward_all']['median_s'] * 1e3:.1f} ms |",
        f"| LM forward, {L} one-layer runs (each stops after its layer) | "
        f"{sum(s[f'forward_{layer}']['median_s'] for layer in range(L)) * 1e3:.1f} ms |",
        f"| forward cost ratio, separate / one pass | **{f['median']:.2f}x** ({f['min']:.2f}-{f['max']:.2f}) |",
        f"| LM forward cost saved | **{r['lm_forward_saved_fraction'] * 100:.0f}%** |",
        f"| SAE step, per layer | {r['sae_step_s_per_layer'] * 1e3:.2f} ms |",
        f"| one batch, all {L} layers: one pass / separate runs | {s['one_pass']['median_s'] * 1e3:.1f} ms / "
        f"{s['separate']['median_s'] * 1e3:.1f} ms ({w['median']:.2f}x) |",
        f"| overhead per extra layer (not forward, not the SAE step) | **{r['overhead_s_per_layer'] * 1e3:.2f} ms** "
        f"({r['overhead_fraction_of_step'] * 100:.1f}% of a step"
        f"{'; below zero: none measurable' if r['overhead_s_per_layer'] < 0 else ''}) |",
    ]
    lines += [
        "",
        f"{r['model']}, {r['d_in']} x {r['d_sae']}, {r['batch_tokens']} tokens per batch (context "
        f"{r['context']}), trial {r['trial']['name']}, {r['rounds']} rounds; command `{r['command']}`.",
    ]
    return "\n".join(lines) + "\n"


def _compile(r: dict | None) -> str:
    if not r:
        return (
            "*Not measured yet: run `.venv/bin/python benchmarks/sae_step.py --compile --shapes 384x2048,384x12288 "
            "--out-name sae_step_compile`.*\n"
        )
    lines = [
        "| d_in x d_sae | kdsae (eager) fraction | compiled fraction | compiled / eager time (median, range) |",
        "|---|---|---|---|",
    ]
    verdicts = []
    for s in r["shapes"]:
        k, c = s["variants"]["kdsae"], s["variants"]["compiled"]
        ratio = [a / b for a, b in zip(c["time"]["samples_s"], k["time"]["samples_s"])]
        med = sorted(ratio)[len(ratio) // 2]
        verdicts.append(med)
        lines.append(
            f"| {s['d_in']} x {s['d_sae']} | {k['fraction_of_matmul']['median']:.3f} | "
            f"{c['fraction_of_matmul']['median']:.3f} | {med:.2f} ({min(ratio):.2f}-{max(ratio):.2f}) |"
        )
    kept = all(v < 0.97 for v in verdicts)
    faster = [f"{sh['d_in']} x {sh['d_sae']} ({v:.2f})" for sh, v in zip(r["shapes"], verdicts) if v < 1]
    slower = [f"{sh['d_in']} x {sh['d_sae']} ({v:.2f})" for sh, v in zip(r["shapes"], verdicts) if v >= 1]
    lines += [
        "",
        "The `compiled` step runs the same gradient computation as one function under `torch.compile` "
        "(inductor, C++ kernels on the CPU) so that it can fuse the elementwise work around the products; the "
        "products stay library calls. Compiled / eager below 1 means the compiled step is faster: "
        + (f"faster at {', '.join(faster)}" if faster else "faster at no shape")
        + (f"; slower at {', '.join(slower)}" if slower else "")
        + ". "
        + (
            "It wins by more than 3% at every shape measured."
            if kept
            else "It does not win by more than 3% at every shape, so the library does not use it (and does not pay "
            "the compilation at the start of every run). On a GPU, where the elementwise passes weigh far more "
            "against the products, compiling the step is worth measuring again."
        )
        + f" {r['rounds']} rounds; command `{r['command']}`.",
    ]
    return "\n".join(lines) + "\n"


def _paper_shape(r: dict | None) -> dict | None:
    if not r:
        return None
    for s in r["shapes"]:
        if (s["d_in"], s["d_sae"]) == (1024, 32768):
            return s
    return None


def _cpu_model(r: dict | None) -> str:
    s = _paper_shape(r)
    if not s or "copy_bandwidth" not in r:
        return _missing("sae_step")
    bw = r["copy_bandwidth"]["start"]["median_bytes_per_s"]
    c = gpu_projection.cpu_model_check(s["d_in"], s["d_sae"], s["batch_tokens"], s["matmul"]["time"]["median_s"], bw)
    k = s["variants"]["kdsae"]
    lines = [
        "| at 1024 x 32768, batch 4096, this CPU | value |",
        "|---|---|",
        f"| five products, measured | {c['matmul_s']:.2f} s |",
        f"| other work, counted (`sae_plan.step_traffic_bytes`) | {c['traffic_bytes'] / 1e9:.1f} GB |",
        f"| copy bandwidth, measured | {bw / 1e9:.1f} GB/s |",
        f"| predicted step | {c['predicted_step_s']:.2f} s (fraction {c['predicted_fraction']:.3f}) |",
        f"| measured step (kdsae) | {k['time']['median_s']:.2f} s (fraction {k['fraction_of_matmul']['median']:.3f}) |",
    ]
    return "\n".join(lines) + "\n"


def _projection(r: dict | None) -> str:
    gpu, p = sae_plan.H100, sae_plan.PAPER
    f = sae_plan.paper_flops()
    req = gpu_projection.required_sae_rate(2.0)
    one = sae_plan.projection(n_gpus=1, trials=1)
    authors_h = gpu_projection.AUTHORS_MINUTES_PER_LAYER * p["layers"] / 60
    authors_rate = (f["sae_per_layer"] + f["lm_forward_one_pass"]) / (gpu_projection.AUTHORS_MINUTES_PER_LAYER * 60)
    lines = [
        "**Work.** SAE steps: "
        f"{p['layers']} layers x {p['tokens']:.0e} tokens x 10 x {p['d_in']} x {p['d_sae']} = "
        f"**{f['sae_per_trial']:.3g} FLOPs per trial**; the LM forward pass: {p['tokens']:.0e} tokens x "
        f"{p['lm_flops_per_token']:.1g} = {f['lm_forward_one_pass']:.3g} FLOPs, once for all layers (and all "
        f"trials of a run) instead of once per layer ({p['layers']} x = {p['layers'] * f['lm_forward_one_pass']:.3g}).",
        "",
        f"**The goal.** One trial in 2 h = 7,200 s needs {f['sae_per_trial']:.3g} / 7,200 = "
        f"**{req['without_lm'] / 1e12:.0f} TFLOP/s** sustained by the SAE steps; with the forward pass at the "
        f"assumed {gpu['lm_flops'] / 1e12:.0f} TFLOP/s ({req['lm_forward_s']:.0f} s), "
        f"{f['sae_per_trial']:.3g} / (7,200 - {req['lm_forward_s']:.0f}) = **{req['with_lm'] / 1e12:.0f} TFLOP/s**.",
        "",
        f"**The authors.** {gpu_projection.AUTHORS_MINUTES_PER_LAYER} min per layer, one layer at a time: "
        f"{authors_h:.0f} h per trial; per layer {f['sae_per_layer']:.3g} SAE FLOPs + "
        f"{f['lm_forward_one_pass']:.3g} forward FLOPs in {gpu_projection.AUTHORS_MINUTES_PER_LAYER * 60:,} s = "
        f"{authors_rate / 1e12:.0f} TFLOP/s overall; most of their time is the forward pass repeated for every layer.",
        "",
        f"**Assumptions for one {gpu['name']}** (not measured here: no GPU on this machine): bf16 products "
        f"at {gpu['gemm_flops'] / 1e12:.0f} TFLOP/s (61% of the 989 TFLOP/s dense peak, for products of 32,768 x "
        f"1,024 x 32,768), {gpu['bandwidth'] / 1e12:.1f} TB/s of the 3.35 TB/s memory bandwidth, the Pythia-410M "
        f"forward pass at {gpu['lm_flops'] / 1e12:.0f} TFLOP/s, {gpu['link_bytes_per_s'] / 1e9:.0f} GB/s NVLink "
        "per GPU for routing activations. The step's other work is the counted traffic of the CUDA path "
        "(the encoder's bias and ReLU in the matmul epilogue), the cost model checked on the CPU above.",
        "",
        f"**One SAE step** (batch {p['batch_tokens']:,}): products {step_fl(p):.3g} FLOPs / "
        f"{gpu['gemm_flops'] / 1e12:.0f}e12 = {one['gemm_s_per_sae_step'] * 1e3:.1f} ms, other work "
        f"{one['traffic_bytes_per_sae_step'] / 1e9:.1f} GB / {gpu['bandwidth'] / 1e12:.1f}e12 = "
        f"{(one['sae_step_s'] - one['gemm_s_per_sae_step']) * 1e3:.1f} ms: {one['sae_step_s'] * 1e3:.1f} ms, "
        f"**{one['effective_sae_flops'] / 1e12:.0f} TFLOP/s effective** (goal >= {req['without_lm'] / 1e12:.0f}; it "
        f"needs products at >= {needed_gemm(one, req) / 1e12:.0f} TFLOP/s).",
        "",
        "| GPUs | trials | SAEs per GPU | step (all SAEs + forward + routing) | wall | memory per GPU | "
        "fits in 80 GB |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in (1, 2, 4, 8):
        for trials in (1, 3):
            pr = sae_plan.projection(n_gpus=n, trials=trials)
            mem = pr["memory_per_gpu"]["total_bytes"]
            lines.append(
                f"| {n} | {trials} | {pr['saes_per_gpu']} | {pr['step_s'] * 1e3:.0f} ms x {pr['steps']:,} steps | "
                f"**{pr['wall_h']:.2f} h** | {mem / 1e9:.1f} GB | {'yes' if pr['fits'] else 'no'} |"
            )
    s = _paper_shape(r)
    if s:
        k = s["variants"]["kdsae"]
        cpu_s = f["sae_per_trial"] / (k["tokens_per_s"] * 10 * p["d_in"] * p["d_sae"])
        lines += [
            "",
            f"For scale, this CPU at the measured {k['tokens_per_s']:,.0f} tokens/s per layer would need "
            f"{cpu_s / 86400:,.0f} days of SAE steps for one trial.",
        ]
    return "\n".join(lines) + "\n"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def _threshold_verdict(c: dict) -> str:
    """How the declared thresholds stand against a density run's own crossovers (`chosen`: per shape the lowest
    over its batches, rounded down; None if sparse was faster at every density, 0 if at none). The run the
    thresholds are declared from agrees; another run (one thread, another machine) may measure higher crossovers,
    which is safe, or lower ones, which is not."""
    if c["agrees"]:
        return "they agree with the lowest crossover of each shape, rounded down"
    above = [k for k, v in c["declared"].items() if c["chosen"].get(k) is not None and v > c["chosen"][k]]
    if not above:
        return (
            "at or below this run's lowest crossover of each shape, rounded down: below them, this run measured the "
            "sparse step faster"
        )
    return (
        f"**above** this run's lowest crossover, rounded down, at {', '.join(above)}: there the automatic choice "
        "takes the sparse step at densities where this run measured it slower"
    )


def sparse_step_table(r: dict | None) -> str:
    """The density axis: the speed-up curve per shape, the crossover, the goals (sae_step_density,
    vs_saelens_density)."""
    if not r:
        return "*Not measured yet: run `.venv/bin/python benchmarks/sae_step.py --densities`.*\n"
    lines = [
        "| d_in x d_sae | batch | density (target, measured) | before (dense, " + r["before_commit"][:10] + ") "
        "tok/s | dense tok/s | sparse tok/s | sparse GFLOP/s | sparse / dense (median, range) | auto path | "
        "auto time / before |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["shapes"]:
        for p in s["points"]:
            v, sp = p["variants"], p["sparse_speedup"]
            lines.append(
                f"| {s['d_in']} x {s['d_sae']} | {s['batch_tokens']:,} | {p['density_target']:.3g}, "
                f"{p['density_measured']:.4f} | "
                f"{_g(v['before']['tokens_per_s'])} | {_g(v['dense']['tokens_per_s'])} | "
                f"{_g(v['sparse']['tokens_per_s'])} | {v['sparse']['gflops']:.0f} | {sp['median']:.2f}x "
                f"({sp['min']:.2f}-{sp['max']:.2f}) | {p['auto_path']} | {p['auto_vs_before']['median']:.3f} |"
            )
    c, g, e = r["crossover"], r["goals"], r["equivalence"]
    low, slow = g["speedup_at_low_density"], g["no_slowdown"]
    crossings = ", ".join(
        f"{k}: {'above every density measured' if v is None else f'**{v:.2%}**'}" for k, v in c["measured"].items()
    )
    declared = ", ".join(f"{k} **{v:.2%}** (measured: {_pct(c['chosen'][k])})" for k, v in c["declared"].items())
    lines += [
        "",
        f"Crossover (sparse as fast as dense), log-interpolated between the measured densities: {crossings}. "
        f"The threshold the automatic choice reads per shape (`CPU_CROSSOVERS` in kdsae_core/sae/sparse.py, "
        f"log-interpolated in d_in x d_sae between the shapes): {declared} "
        f"({_threshold_verdict(c)}).",
        "",
        f"Goals: sparse >= {low['goal']:g}x the dense step at 1024 x 32768 and density <= {low['max_density']:.0%}: "
        + (
            ", ".join(f"{sp:.2f}x at {d:.2%}" for d, sp in low["speedups"]) + f": {_met(low['met'])}. "
            if low["speedups"]
            else "not measured in this run (batch 4,096 at 1024 x 32768 at those densities). "
        )
        + f"No density slower than the dense step before this change by more than "
        f"{slow['limit'] - 1:.0%} (auto path time / before, median over rounds): "
        f"worst {slow['worst_auto_vs_before']:.3f} "
        f"at {slow['worst_at']['d_in']} x {slow['worst_at']['d_sae']}, batch {slow['worst_at']['batch_tokens']:,}, "
        f"density {slow['worst_at']['density']:.4f}: "
        f"{_met(slow['met'])}. Equivalence: {e['steps']} sparse and dense steps from the same weights on the same "
        f"batches at {e['d_in']} x {e['d_sae']} (density {e['density_range'][0]:.4f}-{e['density_range'][1]:.4f}): "
        f"largest relative loss difference {e['max_rel_diff_loss']:.1e} (goal <= {e['goals']['loss_rtol']:g}), "
        f"final weights {max(e['rel_diff_final_weights'].values()):.1e} (||sparse - dense|| / ||dense||, goal <= "
        f"{e['goals']['weight_rtol']:g}): {_met(e['met'])}.",
        "",
        f"fp32, {r['rounds']} rounds; FLOPs per token dense "
        f"`{r['flops_per_token']['dense']}`, sparse `{r['flops_per_token']['sparse']}`; command `{r['command']}`.",
    ]
    return "\n".join(lines) + "\n"


def vs_saelens_density_section(r: dict | None) -> str:
    if not r:
        return (
            "\n*Against SAELens by density: not measured yet "
            "(`.venv/bin/python benchmarks/vs_saelens.py --densities`).*\n"
        )
    lines = [
        "",
        "Against SAELens, both trainers from the same weights at the stated density (kdsae choosing its path):",
        "",
        "| d_in x d_sae | regime | density (target, kdsae's last step) | kdsae path | kdsae tokens/s | "
        "SAELens tokens/s | speed-up (median, range) | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        sp = row["speedup"]
        lines.append(
            f"| {row['d_in']} x {row['d_sae']} | {row['regime']} | {row['density_target']:.4f}, "
            f"{row['kdsae']['density']:.4f} | {row['kdsae']['path']} | {_g(row['kdsae']['tokens_per_s'])} | "
            f"{_g(row['saelens']['tokens_per_s'])} | {sp['median']:.2f}x ({sp['min']:.2f}-{sp['max']:.2f}) | "
            f">= {row['goal_speedup']:g}x: {_met(row['goal_met'])} |"
        )
    lines += [
        "",
        f"SAELens {r['saelens_version']}; {r['rounds']} rounds; command `{r['command']}`; "
        + _bench_machine_short(r["machine"])
        + ".",
    ]
    return "\n".join(lines) + "\n"


def sparse_parts_table(r: dict | None) -> str:
    """Where the sparse step's time goes at one density (benchmarks/sparse_parts.py)."""
    if not r:
        return (
            "\n*Where the sparse step's time goes: not measured yet (`.venv/bin/python benchmarks/sparse_parts.py`).*\n"
        )
    lines = [
        "",
        f"Where the sparse step's time goes at {r['d_in']} x {r['d_sae']:,}, batch {r['batch_tokens']:,}, density "
        f"{r['density_measured']:.2%} (each call of the sparse half timed on its own, median of {r['rounds']} "
        "rounds):",
        "",
        "| part | ms | GFLOP/s |",
        "|---|---|---|",
    ]
    for name, v in r["parts"].items():
        rate = "-" if v["gflops"] is None else f"{v['gflops']:.0f}"
        lines.append(f"| {name} | {v['ms']:.1f} | {rate} |")
    rest = r["rest_of_sparse_step_ms"]
    lines += [
        "| rest of the sparse step (Adam, clipping, renormalisation, count, elementwise: the step less its parts"
        + ("" if rest >= 0 else "; below 0, the parts timed alone took longer than inside the step")
        + f") | {rest:.1f} | - |",
        "",
        f"Command `{r['command']}`; " + _bench_machine_short(r["machine"]) + ".",
    ]
    return "\n".join(lines) + "\n"


DRIFT_COLUMNS = ("loss", "lambda", "L0")  # the logged numbers compared between the two runs


def drift_sentence(d: dict) -> str:
    """How far an automatic run's log and weights are from the all-dense run's (benchmarks/trial_c_sparse.py)."""
    rel, w = d["max_rel_diff"], d["final_weights_rel_diff"]
    if d["first_differing_step"] is None:
        return "The automatic run's log is the all-dense one's, number for number."
    return (
        f"The automatic run's log departs from the all-dense one's at step {d['first_differing_step']:,}, by at most "
        + ", ".join(f"{rel[c]:.1e} ({c})" for c in DRIFT_COLUMNS)
        + f" relative over the run; final weights {w['W_enc']:.0e} (W_enc) and {w['W_dec']:.0e} (W_dec) relative "
        "in norm."
    )


def _trial_c_sparse(r: dict | None) -> str:
    if not r:
        return "\n*Trial C at 32x expansion: not measured yet (`.venv/bin/python benchmarks/trial_c_sparse.py`).*\n"
    lines = [
        "",
        f"What it makes possible: trial C of the embedded profile at the paper's 32x expansion (d_sae "
        f"{r['d_sae']:,}), layer(s) {', '.join(map(str, r['layers']))}, its {r['tokens']:,} tokens in batches of "
        f"{r['batch_tokens']}, the whole training run (language-model forward passes included):",
        "",
        "| steps | wall | steps dense / sparse | first sparse step | last loss | last L0 |",
        "|---|---|---|---|---|---|",
    ]
    for label, x in (("all dense", r["runs"]["dense"]), ("automatic (as kdsae trains)", r["runs"]["auto"])):
        lines.append(
            f"| {label} | {x['wall_s']:,.0f} s | {x['paths'].get('dense', 0):,} / {x['paths'].get('sparse', 0):,} | "
            f"{x['first_sparse_step'] or '-'} | "
            + ", ".join(f"{v['loss']:.4g}" for v in x["last"])
            + " | "
            + ", ".join(f"{v['L0']:.0f}" for v in x["last"])
            + " |"
        )
    lines += [
        "",
        f"**{r['speedup']:.2f}x** the wall time of the all-dense run; command `{r['command']}`; "
        + _bench_machine_short(r["machine"])
        + ".",
    ]
    if "drift" in r:
        lines += ["", drift_sentence(r["drift"])]
    return "\n".join(lines) + "\n"


def _trial_c_embedded(r: dict | None) -> str:
    """Trial C at the embedded profile's own width: the numbers the reproducibility page points to."""
    if not r:
        return (
            "\n*Trial C at the embedded width: not measured yet (`.venv/bin/python benchmarks/trial_c_sparse.py "
            "--d-sae 2048 --layers 5 --out-name trial_c_sparse_embedded`).*\n"
        )
    d, a = r["runs"]["dense"], r["runs"]["auto"]
    steps = sum(a["paths"].values())
    return (
        f"\nAt the embedded profile's own width (d_sae {r['d_sae']:,}, layer(s) "
        f"{', '.join(map(str, r['layers']))}, trial C), where the automatic choice goes sparse below "
        f"{r['sparse_below_density']:.2%}: {a['paths'].get('sparse', 0):,} of {steps:,} steps sparse"
        + (f" from step {a['first_sparse_step']:,}" if a["first_sparse_step"] is not None else "")
        + f", {d['wall_s'] / a['wall_s']:.2f}x the all-dense run's wall time. "
        + drift_sentence(r["drift"])
        + f" Command `{r['command']}`; "
        + _bench_machine_short(r["machine"])
        + ".\n"
    )


def _bench_machine_short(m: dict) -> str:
    return (
        f"{m['cpu']}, {m['torch_threads']} torch threads, load average {m['load_average_start'][0]:.2f} at the "
        f"start, {m.get('load_average_end', [float('nan')])[0]:.2f} at the end, {m['date'][:16]}"
    )


def sparse_regimes() -> list[tuple[str, float]]:
    """The paper-scale densities the sparse projection is shown at: trial C's target L0, the L0 the co-author's
    published SAEs reached (their lambda 8e-4 run, the nearest published regime to trial B's), and 1%."""
    d_sae = sae_plan.PAPER["d_sae"]
    c = paper_trials()["C"].target_l0
    published = statistics.mean(v["L0"] for v in PAPER_LAYER_VALUES.values())
    return [
        (f"trial C (target L0 {c:g})", c / d_sae),
        (
            f"the co-author's published layers {'/'.join(map(str, PAPER_LAYER_VALUES))} (mean L0 {published:.0f})",
            published / d_sae,
        ),
        ("1% of pairs", 0.01),
    ]


def _sparse_projection() -> str:
    lines = [
        "| regime | density | SAE step, dense | SAE step, sparse (lower - upper bound) | speed-up | "
        "one trial, dense | one trial, sparse |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, d in sparse_regimes():
        pr = gpu_projection.sparse_projection(d)
        lo, up = pr["lower"], pr["upper"]
        lines.append(
            f"| {label} | {d:.2%} | {pr['dense_sae_step_s'] * 1e3:.1f} ms | {lo['sae_step_s'] * 1e3:.1f} - "
            f"{up['sae_step_s'] * 1e3:.1f} ms | {up['speedup']:.2f}x - {lo['speedup']:.2f}x | "
            f"{pr['dense_wall_h']:.2f} h | {lo['wall_h']:.2f} - {up['wall_h']:.2f} h |"
        )
    return "\n".join(lines) + "\n"


def step_fl(p: dict) -> float:
    return sae_plan.step_flops(p["d_in"], p["d_sae"], p["batch_tokens"])


def needed_gemm(one: dict, req: dict) -> float:
    """Product rate at which the SAE step reaches the goal's effective rate (the other work unchanged)."""
    flops = one["effective_sae_flops"] * one["sae_step_s"]
    budget = flops / req["without_lm"] - (one["sae_step_s"] - one["gemm_s_per_sae_step"])
    return flops / budget


def _memory(r: dict | None) -> str:
    lines = [
        "| run | per SAE | SAEs | workspace | activations | model | total | budget | SAEs that fit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cases = [
        (
            "paper, 1 trial, bf16, one H100",
            sae_plan.memory_plan(1024, 32768, 32768, 24, 24, "bf16", int(405e6 * 4), int(80e9)),
        ),
        (
            "paper, 3 trials, bf16, one H100",
            sae_plan.memory_plan(1024, 32768, 32768, 72, 24, "bf16", int(405e6 * 4), int(80e9)),
        ),
        (
            "paper shape, fp32, batch 4096, this machine (24 GiB)",
            sae_plan.memory_plan(1024, 32768, 4096, 1, 1, "fp32", 0, 24 * 2**30),
        ),
        ("embedded profile, 3 trials x 6 layers, fp32", sae_plan.memory_plan(384, 2048, 128, 18, 6, "fp32")),
    ]
    for label, m in cases:
        lines.append(
            f"| {label} | {m.per_sae_bytes / 1e9:.3g} GB | {m.n_saes} | {m.workspace_bytes / 1e9:.3g} GB | "
            f"{m.activations_bytes / 1e9:.3g} GB | {m.model_bytes / 1e9:.3g} GB | {m.total_bytes / 1e9:.3g} GB | "
            f"{'-' if m.budget_bytes is None else f'{m.budget_bytes / 1e9:.3g} GB'} | "
            f"{'-' if m.saes_that_fit is None else m.saes_that_fit} |"
        )
    a = (r or {}).get("all_layers") or (r or {}).get("all_layers" + ONE_THREAD)
    if a and "held_by_units" in a["memory_measured"]:
        held = a["memory_measured"]["held_by_units"]
        plan = a["memory_plan"]
        lines += [
            "",
            f"Check (all_layers benchmark): the plan gives {plan['n_saes']} x {plan['per_sae_bytes'] / 1e6:.2f} MB "
            f"= {plan['n_saes'] * plan['per_sae_bytes'] / 1e6:.1f} MB for its {plan['n_saes']} SAEs; the tensors they "
            f"hold after a step add up to {held / 1e6:.1f} MB (the gradient buffer's alignment rows and the "
            "firing record make the difference).",
        ]
    return "\n".join(lines) + "\n"


TOY_GOALS = {"speedup": 10.0, "paper_minutes": 90.0, "over_floor": 1.5, "quick_minutes": 3.0}


def _toy_sweep(r: dict | None) -> str:
    if not r:
        return _missing("toy_sweep")
    m, p = r["machine"], r["paper"]
    wall, jobs = p.get("measured_wall_seconds"), int(p.get("measured_jobs") or 1)
    # Goals per core (the floors, one model at a time on one core) need one process's wall: the full run's when
    # it ran as one process, else the projection from this benchmark's one-process steps.
    best = wall if wall is not None and jobs == 1 else p["projected_wall_seconds"]
    kind = "measured" if wall is not None and jobs == 1 else "projected one-process"
    quick = r["quick"]["wall_seconds"]
    run_kind = "projected" if wall is None else "measured" if jobs == 1 else f"measured, {jobs} processes of one thread"
    lines = [
        "| what | value | goal |",
        "|---|---|---|",
        f"| quick profile ({r['quick']['models']} models, {r['quick']['steps']} steps), wall | {quick:.0f} s | "
        f"<= {TOY_GOALS['quick_minutes']:g} min: {_met(quick <= 60 * TOY_GOALS['quick_minutes'])} |",
        f"| paper profile ({p['models']} models, {p['steps']} steps), s per step teachers / students | "
        f"{p['seconds_per_step']['teacher']:.3f} / {p['seconds_per_step']['student']:.3f} | |",
        f"| paper profile, wall projected from those steps | {p['projected_wall_seconds'] / 60:.1f} min | |",
        "| paper profile, measured wall of the full run"
        + (f" (`--jobs {jobs}`)" if jobs > 1 else "")
        + " | "
        + (f"{wall / 60:.1f} min |" if wall is not None else "not run with this benchmark |")
        + f" <= {TOY_GOALS['paper_minutes']:g} min ({run_kind}): "
        f"{_met((wall if wall is not None else best) <= 60 * TOY_GOALS['paper_minutes'])} |",
    ]
    over = best / p["memory_floor_seconds"]
    lines.append(
        f"| memory-traffic floor: bytes per step ("
        f"{(p['bytes_per_step']['teacher'] + p['bytes_per_step']['student']) / 1e9:.2f} GB, "
        f"every pass over the [models, batch, n] buffers counted) x steps / memory copy bandwidth "
        f"({m['copy_bandwidth_gbs']:.1f} GB/s) | {p['memory_floor_seconds'] / 60:.1f} min; {kind} wall = {over:.2f}x | "
        f"<= {TOY_GOALS['over_floor']:g}x: {_met(over <= TOY_GOALS['over_floor'])}"
        f"{' (below 1: the cache blocking keeps most passes out of memory)' if over < 1 else ''} |"
    )
    if "cache_floor_seconds" in p:
        lines.append(
            f"| the same bytes at the copy bandwidth of a cache-sized working set "
            f"({m['cache_copy_bandwidth_gbs']:.1f} GB/s), "
            f"the floor of the blocked program | {p['cache_floor_seconds'] / 60:.1f} min; {kind} wall = "
            f"{best / p['cache_floor_seconds']:.2f}x | |"
        )
    lines.append(
        f"| achieved GFLOP/s, teachers / students (fp32 matmul {m['fp32_matmul_gflops']:.0f}) | "
        f"{p['achieved_gflops']['teacher']:.1f} / {p['achieved_gflops']['student']:.1f} | |"
    )
    for key, label in (
        ("one_at_a_time_textbook", "the textbook loop (autograd + torch.optim.Adam)"),
        ("one_at_a_time", "kdsae's own hand-written step"),
    ):
        one = r.get(key)
        if one is None:
            continue
        speed = one["projected_wall_seconds"] / best
        lines += [
            f"| one model at a time with {label}, summed over every model of the grid: per model-step; "
            f"projected sweep | {one['seconds_per_model_step'] * 1e3:.2f} ms; "
            f"{one['projected_wall_seconds'] / 3600:.1f} h | |",
            f"| batched over {label} one at a time ({kind} wall) | **{speed:.1f}x** | >= {TOY_GOALS['speedup']:g}x: "
            f"{_met(speed >= TOY_GOALS['speedup'])} |",
        ]
    lines += [
        "",
        f"{m['threads']} torch thread(s), torch {m['torch']}; command `python benchmarks/toy_sweep.py`"
        + (
            f"; the measured wall is the full run's, from `{Path(p['measured_wall_file']).name}` of the committed "
            "paper results (`make results-toy` writes it)"
            if wall is not None
            else ""
        )
        + ".",
    ]
    return "\n".join(lines) + "\n"


def _book_build(r: dict | None) -> str:
    if not r:
        return _missing("book_build")
    wall, goal = r["wall_seconds"], r["goal_seconds"]
    return (
        f"`kdsae book --clean` (what `make book` runs after set-up) on {r['cores']} cores, {r['torch_threads']} torch "
        f"thread(s) per notebook: **{wall / 60:.1f} min** for {r['pages']} HTML pages (goal <= {goal / 60:g} min: "
        f"{_met(wall <= goal)}).\n"
    )


def _with_one_thread(render, res: dict, name: str) -> str:
    text = render(res.get(name))
    extra = res.get(name + ONE_THREAD)
    if extra:
        text += "\n" + ONE_THREAD_NOTE.format(name=name + ONE_THREAD) + "\n\n" + render(extra)
    return text


def render_sections(folder: Path = RESULTS) -> dict[str, str]:
    res = load_results(folder)
    return {
        "machine": _machine(res),
        "sae_step": _with_one_thread(_sae_step, res, "sae_step"),
        "vs_saelens": _with_one_thread(_vs_saelens, res, "vs_saelens"),
        "sparse_step": (
            _with_one_thread(sparse_step_table, res, "sae_step_density")
            + vs_saelens_density_section(res.get("vs_saelens_density"))
            + sparse_parts_table(res.get("sparse_parts"))
            + _trial_c_sparse(res.get("trial_c_sparse"))
            + _trial_c_embedded(res.get("trial_c_sparse_embedded"))
        ),
        "sparse_projection": _sparse_projection(),
        "all_layers": _with_one_thread(_all_layers, res, "all_layers"),
        "compile": _compile(res.get("sae_step_compile")),
        "cpu_model": _with_one_thread(_cpu_model, res, "sae_step"),
        "projection": _projection(res.get("sae_step")),
        "memory": _memory(res),
        "toy_sweep": _toy_sweep(res.get("toy_sweep")),
        "book_build": _book_build(res.get("book_build")),
    }


def _replace(text: str, sections: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        name = m.group("name")
        return m.group(1) + sections[name] + m.group(4) if name in sections else m.group(0)

    return _MARK.sub(sub, text)


def stale_sections(page: Path = PAGE, folder: Path = RESULTS) -> list[str]:
    """Marked sections of `page` whose content is not what the result files give now (and missing markers)."""
    text = Path(page).read_text()
    sections = render_sections(folder)
    found = {m.group("name"): m.group("body") for m in _MARK.finditer(text)}
    return [n for n in SECTIONS if found.get(n) != sections[n]]


def update_performance_page(page: Path = PAGE, folder: Path = RESULTS) -> Path | None:
    """Regenerate the marked sections of `page` from the result files; the page path if it changed."""
    page = Path(page)
    if not page.exists():
        return None
    text = page.read_text()
    new = _replace(text, render_sections(folder))
    if new == text:
        return None
    atomic_write_text(page, new)
    return page
