"""The performance page's numbers come from the benchmark result files (benchmarks.report) and the cost
arithmetic of kdsae_core.sae.plan."""

from __future__ import annotations

import importlib
import json

import pytest

from benchmarks import gpu_projection
from benchmarks import report as bench_report
from kdsae_core.common.paths import REPO_ROOT
from kdsae_core.sae import plan as sae_plan


def test_committed_page_matches_the_result_files():
    """book/performance.md shows exactly what benchmarks/results/*.json give (regenerate: run a benchmark, or
    `python -c 'from benchmarks.report import update_performance_page; update_performance_page()'`)."""
    assert bench_report.stale_sections() == []


def fake_machine() -> dict:
    return {
        "cpu": "TestCPU",
        "cores": 2,
        "torch_threads": 2,
        "memory_bytes": 2**34,
        "torch": "2.13.0",
        "blas": "MKL",
        "malloc_env": {"MALLOC_MMAP_MAX_": "0"},
        "load_average_start": [0.1, 0, 0],
        "load_average_end": [0.2, 0, 0],
        "date": "2026-01-01T00:00:00",
        "git_commit": "0123456789abcdef",
        "clock": "wall",
    }


def fake_results(folder):
    m = fake_machine()
    frac = {"median": 0.9312, "min": 0.9, "max": 0.95, "rounds": 3, "best": 0.94}
    var = {
        "label": "kdsae SAEUnit.step",
        "time": {"median_s": 9.5, "samples_s": [9.5, 9.4, 9.6]},
        "tokens_per_s": 431.1,
        "fraction_of_matmul": frac,
        "profile": {"outside_s": 0.4321, "products_s": 9.0, "top_ops": [["aten::sign_", 0.1], ["aten::sum", 0.05]]},
    }
    comp = dict(var, time={"median_s": 10.0, "samples_s": [10.5, 9.9, 10.4]})
    comp.pop("profile")
    step = {
        "benchmark": "sae_step",
        "machine": m,
        "batch_tokens": 4096,
        "rounds": 3,
        "command": "cmd",
        "copy_bandwidth": {"start": {"median_bytes_per_s": 20e9}},
        "shapes": [
            {
                "d_in": 1024,
                "d_sae": 32768,
                "batch_tokens": 4096,
                "goal_fraction": 0.9,
                "goal_met": True,
                "matmul": {"gflops": 144.0, "time": {"median_s": 8.8}},
                "variants": {"kdsae": var},
            }
        ],
    }
    compiled = dict(step, shapes=[dict(step["shapes"][0], variants={"kdsae": var, "compiled": comp})])
    (folder / "sae_step.json").write_text(json.dumps(step))
    (folder / "sae_step_compile.json").write_text(json.dumps(compiled))


def test_tables_are_rendered_from_the_files(tmp_path):
    fake_results(tmp_path)
    sections = bench_report.render_sections(tmp_path)
    assert set(sections) == set(bench_report.SECTIONS)
    assert (
        "| 1024 x 32768 | 144 | kdsae | 431 | 0.931 (0.900-0.950) | 0.940 | 432 ms | >= 0.90: **met** |"
        in sections["sae_step"]
    )
    assert "- `kdsae`: `aten::sign_` 100 ms, `aten::sum` 50 ms" in sections["sae_step"]
    assert "TestCPU" in sections["machine"]
    assert "does not use it" in sections["compile"] and "| 1.08 (1.05-1.11) |" in sections["compile"]
    assert "slower at 1024 x 32768 (1.08)" in sections["compile"]
    assert "this CPU at the measured 431 tokens/s" in sections["projection"]
    assert "Not measured yet" in sections["vs_saelens"] and "benchmarks/vs_saelens.py" in sections["vs_saelens"]


def test_page_update_replaces_only_the_marked_sections(tmp_path):
    fake_results(tmp_path)
    page = tmp_path / "page.md"
    page.write_text("# Title\n\nhand text\n\n<!-- bench:sae_step -->\nold numbers\n<!-- /bench:sae_step -->\n\nmore\n")
    assert bench_report.update_performance_page(page, tmp_path) == page
    text = page.read_text()
    assert "old numbers" not in text and "0.931" in text and text.startswith("# Title\n\nhand text\n")
    assert text.endswith("<!-- /bench:sae_step -->\n\nmore\n")
    assert bench_report.update_performance_page(page, tmp_path) is None  # already current
    assert "sae_step" not in bench_report.stale_sections(page, tmp_path)


def test_paper_scale_arithmetic():
    assert sae_plan.sae_params(1024, 32768) * 16 / 1e9 == pytest.approx(1.074, abs=1e-3)  # per SAE, the brief's 1.07 GB
    f = sae_plan.paper_flops()
    assert f["sae_per_trial"] == pytest.approx(24 * 300e6 * 10 * 1024 * 32768)
    assert gpu_projection.required_sae_rate(2.0)["without_lm"] == pytest.approx(f["sae_per_trial"] / 7200)
    one = sae_plan.projection(n_gpus=1, trials=1)
    assert one["wall_s"] == pytest.approx(one["steps"] * (24 * one["sae_step_s"] + one["lm_forward_s_per_step"]))
    assert one["steps"] == 9156 and one["saes_per_gpu"] == 24 and one["fits"]
    assert not sae_plan.projection(n_gpus=1, trials=3)["fits"]  # 72 SAEs x 1.07 GB do not fit in 80 GB
    eight = sae_plan.projection(n_gpus=8, trials=1)
    assert eight["saes_per_gpu"] == 3 and eight["wall_s"] < one["wall_s"] / 6


def test_memory_plan_counts_and_fit():
    plan = sae_plan.memory_plan(1024, 32768, 4096, 2, 1, "fp32", budget_bytes=8 * 10**9)
    assert plan.per_sae_bytes == 16 * sae_plan.sae_params(1024, 32768)
    assert plan.workspace_bytes >= 2 * 4096 * 32768 * 4  # z and the latent gradient
    assert plan.total_bytes == 2 * plan.per_sae_bytes + plan.workspace_bytes + plan.activations_bytes
    assert plan.saes_that_fit == (8 * 10**9 - plan.workspace_bytes - plan.activations_bytes) // plan.per_sae_bytes
    text = sae_plan.format_memory_plan(plan)
    assert "1.07 GB x 2" in text and "fits" in text


def test_the_memory_plan_makes_room_for_the_sparse_steps_active_pairs(monkeypatch):
    """fp32 runs may take the sparse step: its active pairs (SPARSE_PAIR_BYTES each, up to the highest measured
    crossover x B d_sae of them) need more room than the latent gradient they replace once the crossover is above
    4 / SPARSE_PAIR_BYTES."""
    d_in, d_sae, B = 64, 1024, 512

    def workspace(crossover: float, compute: str) -> int:
        monkeypatch.setattr(sae_plan.sae_sparse, "CPU_CROSSOVERS", {(d_in, d_sae): crossover})
        return sae_plan.memory_plan(d_in, d_sae, B, 1, 1, compute).workspace_bytes

    # 0.05 x 64 = 3.2 bytes per (token, latent): within the latent gradient's 4; 0.125 x 64 = 8: 4 more
    assert workspace(0.125, "fp32") - workspace(0.05, "fp32") == 4 * B * d_sae
    assert workspace(0.05, "fp32") == workspace(0.01, "fp32")
    assert workspace(0.125, "bf16") == workspace(0.05, "bf16")  # bf16 never takes the sparse step


def test_toy_sweep_and_book_build_sections_state_their_goals(tmp_path):
    machine = {
        "threads": 1,
        "torch": "2.13.0",
        "fp32_matmul_gflops": 50.0,
        "copy_bandwidth_gbs": 6.0,
        "cache_copy_bandwidth_gbs": 30.0,
    }
    paper = {
        "models": 7200,
        "steps": 10000,
        "seconds_per_step": {"teacher": 0.06, "student": 0.42},
        "projected_wall_seconds": 4800.0,
        "achieved_gflops": {"teacher": 10.0, "student": 12.0},
        "bytes_per_step": {"teacher": 1e9, "student": 5e9},
        "memory_floor_seconds": 10000.0,
        "cache_floor_seconds": 2000.0,
        "measured_wall_seconds": 5100.0,
        "measured_wall_file": "results/toy/paper/wall.json",
    }
    toy = {
        "machine": machine,
        "quick": {"wall_seconds": 200.0, "models": 240, "steps": 1500},
        "paper": paper,
        "one_at_a_time": {"seconds_per_model_step": 1e-3, "projected_wall_seconds": 72000.0},
        "one_at_a_time_textbook": {"seconds_per_model_step": 0.5e-3, "projected_wall_seconds": 36000.0},
    }
    (tmp_path / "toy_sweep.json").write_text(json.dumps(toy))
    (tmp_path / "book_build.json").write_text(
        json.dumps({"wall_seconds": 1000.0, "goal_seconds": 900, "pages": 15, "cores": 2, "torch_threads": 1})
    )
    sections = bench_report.render_sections(tmp_path)
    toy_text = sections["toy_sweep"]
    assert "| quick profile (240 models, 1500 steps), wall | 200 s | <= 3 min: **not met** |" in toy_text
    assert "| 85.0 min | <= 90 min (measured): **met** |" in toy_text  # 5100 s
    assert "166.7 min; measured wall = 0.51x | <= 1.5x: **met** (below 1: the cache blocking" in toy_text  # 5100/10000
    assert "33.3 min; measured wall = 2.55x | |" in toy_text  # 5100 / 2000, stated without a goal
    assert (
        "kdsae's own hand-written step one at a time (measured wall) | **14.1x** | >= 10x: **met** |" in toy_text
    )  # 72000 / 5100
    assert "(autograd + torch.optim.Adam) one at a time (measured wall) | **7.1x** | >= 10x: **not met** |" in toy_text
    assert "the measured wall is the full run's, from `wall.json`" in toy_text
    assert "**16.7 min** for 15 HTML pages (goal <= 15 min: **not met**)" in sections["book_build"]
    assert "Not measured yet" in sections["machine"]  # no SAE benchmark here: the toy line is not a machine row
    # A full run over two processes: its wall judges the 90-minute goal; the per-core goals use the projected
    # one-process wall (4800 s), never the two-process wall.
    paper.update(measured_wall_seconds=3000.0, measured_jobs=2)
    (tmp_path / "toy_sweep.json").write_text(json.dumps(toy))
    toy_text = bench_report.render_sections(tmp_path)["toy_sweep"]
    assert (
        "| paper profile, measured wall of the full run (`--jobs 2`) | 50.0 min | <= 90 min (measured, 2 "
        "processes of one thread): **met** |" in toy_text
    )
    assert "166.7 min; projected one-process wall = 0.48x" in toy_text  # 4800 / 10000
    assert "step one at a time (projected one-process wall) | **15.0x** | >= 10x: **met** |" in toy_text  # 72000 / 4800


def fake_density_result(folder):
    m = fake_machine()
    ratio = lambda x: {"median": x, "min": x * 0.9, "max": x * 1.1, "rounds": 3, "best": x}  # noqa: E731
    point = lambda d, sp, auto: {  # noqa: E731
        "density_target": d,
        "density_measured": d * 1.02,
        "auto_path": auto,
        "variants": {
            n: {"tokens_per_s": t, "gflops": 10.0} for n, t in (("before", 400), ("dense", 401), ("sparse", 400 * sp))
        },
        "sparse_speedup": ratio(sp),
        "auto_vs_before": ratio(1.01 if auto == "dense" else 1 / sp),
    }
    r = {
        "benchmark": "sae_step_density",
        "machine": m,
        "rounds": 3,
        "before_commit": "abcdef0123456",
        "command": "cmd",
        "flops_per_token": {"dense": "10 * d_in * d_sae", "sparse": "2 * d_in * d_sae * (1 + 4 * density)"},
        "shapes": [
            {
                "d_in": 1024,
                "d_sae": 32768,
                "batch_tokens": 4096,
                "crossover": 0.0412,
                "points": [point(0.005, 3.6, "sparse"), point(0.3, 0.4, "dense")],
            }
        ],
        "crossover": {
            "measured": {"1024x32768, batch 4096": 0.0412},
            "chosen": {"1024x32768": 0.041},
            "declared": {"1024x32768": 0.041},
            "agrees": True,
        },
        "goals": {
            "speedup_at_low_density": {"goal": 3.0, "max_density": 0.01, "speedups": [[0.0051, 3.6]], "met": True},
            "no_slowdown": {
                "limit": 1.03,
                "worst_auto_vs_before": 1.01,
                "met": True,
                "worst_at": {"d_in": 1024, "d_sae": 32768, "batch_tokens": 4096, "density": 0.306},
            },
        },
        "equivalence": {
            "steps": 100,
            "d_in": 384,
            "d_sae": 2048,
            "density_range": [0.009, 0.011],
            "max_rel_diff_loss": 2e-7,
            "rel_diff_final_weights": {"W_enc": 3e-6, "W_dec": 1e-6},
            "goals": {"loss_rtol": 1e-5, "weight_rtol": 1e-4},
            "met": True,
        },
    }
    (folder / "sae_step_density.json").write_text(json.dumps(r))


def test_the_sparse_section_shows_the_curve_the_crossover_and_the_goals(tmp_path):
    assert "Not measured yet" in bench_report.render_sections(tmp_path)["sparse_step"]
    fake_density_result(tmp_path)
    text = bench_report.render_sections(tmp_path)["sparse_step"]
    assert (
        "| 1024 x 32768 | 4,096 | 0.005, 0.0051 | 400 | 401 | 1,440 | 10 | 3.60x (3.24-3.96) | sparse | 0.278 |" in text
    )
    assert "| 1024 x 32768 | 4,096 | 0.3, 0.3060 | 400 | 401 | 160 | 10 | 0.40x (0.36-0.44) | dense | 1.010 |" in text
    assert "1024x32768, batch 4096: **4.12%**" in text
    assert "1024x32768 **4.10%** (measured: 4.10%) (they agree with the lowest crossover of each shape" in text
    assert (
        "3.60x at 0.51%: **met**" in text
        and "worst 1.010 at 1024 x 32768, batch 4,096, density 0.3060: **met**" in text
    )
    assert "largest relative loss difference 2.0e-07 (goal <= 1e-05), final weights 3.0e-06" in text
    assert "not measured yet (`.venv/bin/python benchmarks/vs_saelens.py --densities`)" in text


@pytest.mark.parametrize(
    "chosen, verdict",
    [
        (0.05, "at or below this run's lowest crossover of each shape, rounded down: below them, this run measured"),
        (None, "at or below this run's lowest crossover of each shape"),
        (0.03, "**above** this run's lowest crossover, rounded down, at 1024x32768: there the automatic choice"),
        (0.0, "**above** this run's lowest crossover, rounded down, at 1024x32768"),
    ],
)
def test_a_run_whose_crossovers_differ_from_the_declared_ones_says_which_way(tmp_path, chosen, verdict):
    """A density run the thresholds were not declared from (one thread, another machine) says whether the declared
    thresholds are below its crossovers (safe) or above them (the automatic choice goes sparse where it is slower)."""
    fake_density_result(tmp_path)
    path = tmp_path / "sae_step_density.json"
    r = json.loads(path.read_text())
    r["crossover"].update(chosen={"1024x32768": chosen}, agrees=False)
    path.write_text(json.dumps(r))
    text = bench_report.render_sections(tmp_path)["sparse_step"]
    assert f"1024x32768 **4.10%** (measured: {'-' if chosen is None else f'{chosen:.2%}'}) ({verdict}" in text
    assert "they agree" not in text


def test_sparse_projection_arithmetic():
    p, gpu = sae_plan.PAPER, sae_plan.H100
    zero, one = gpu_projection.sparse_projection(0.0), gpu_projection.sparse_projection(0.01)
    assert zero["lower"] == zero["upper"] == one["lower"]
    gathers = 4 * 0.01 * p["batch_tokens"] * p["d_sae"] * p["d_in"] * 2 / gpu["bandwidth"]  # bf16 rows, no reuse
    assert one["upper"]["sae_step_s"] - one["lower"]["sae_step_s"] == pytest.approx(gathers)
    encoder = 2 * p["d_in"] * p["d_sae"] * p["batch_tokens"] / gpu["gemm_flops"]
    dense = sae_plan.projection()
    assert dense["sae_step_s"] - zero["lower"]["sae_step_s"] == pytest.approx(dense["gemm_s_per_sae_step"] - encoder)
    assert one["dense_wall_h"] == dense["wall_h"] and one["lower"]["speedup"] > 1 > one["upper"]["speedup"]


def test_the_drift_sentence_reports_the_first_differing_step_and_the_largest_differences():
    same = {"first_differing_step": None, "max_rel_diff": {}, "final_weights_rel_diff": {}}
    assert bench_report.drift_sentence(same) == "The automatic run's log is the all-dense one's, number for number."
    d = {
        "first_differing_step": 1234,
        "max_rel_diff": {"loss": 1.234e-4, "lambda": 3.6e-5, "L0": 1.2e-3},
        "final_weights_rel_diff": {"W_enc": 2.1e-3, "W_dec": 7e-4},
    }
    assert bench_report.drift_sentence(d) == (
        "The automatic run's log departs from the all-dense one's at step 1,234, by at most 1.2e-04 (loss), "
        "3.6e-05 (lambda), 1.2e-03 (L0) relative over the run; final weights 2e-03 (W_enc) and 7e-04 (W_dec) "
        "relative in norm."
    )


def test_the_declared_crossover_is_the_lowest_over_batches_per_shape(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    sae_step = importlib.import_module("sae_step")
    shapes = [
        {"d_in": 8, "d_sae": 16, "batch_tokens": 4096, "crossover": 0.1161},
        {"d_in": 8, "d_sae": 16, "batch_tokens": 128, "crossover": 0.0856},
        {"d_in": 8, "d_sae": 64, "batch_tokens": 4096, "crossover": None},  # sparse faster at every density
        {"d_in": 8, "d_sae": 64, "batch_tokens": 128, "crossover": 0.0412},
    ]
    monkeypatch.setattr(sae_step.sae_sparse, "CPU_CROSSOVERS", {(8, 16): 0.085, (8, 64): 0.04})
    c = sae_step.declared_crossover(shapes)
    assert c["measured"]["8x16, batch 128"] == 0.0856
    assert c["chosen"] == {"8x16": 0.085, "8x64": 0.041}
    assert c["declared"] == {"8x16": 0.085, "8x64": 0.04} and not c["agrees"]
    monkeypatch.setattr(sae_step.sae_sparse, "CPU_CROSSOVERS", {(8, 16): 0.085, (8, 64): 0.041})
    assert sae_step.declared_crossover(shapes)["agrees"]
    never = sae_step.declared_crossover([{"d_in": 8, "d_sae": 16, "batch_tokens": 128, "crossover": 0.0}])
    assert never["chosen"] == {"8x16": 0.0} and not never["agrees"]


def test_the_sparse_parts_and_the_embedded_trial_c_are_rendered_from_their_files(tmp_path):
    machine = fake_machine()
    parts = {
        "d_in": 384,
        "d_sae": 2048,
        "batch_tokens": 4096,
        "density_measured": 0.0724,
        "rounds": 5,
        "command": "cmd",
        "machine": machine,
        "parts": {
            "encoder (dense, both paths)": {"ms": 36.04, "gflops": 178.7},
            "z to its active pairs, both layouts": {"ms": 18.6, "gflops": None},
        },
        "rest_of_sparse_step_ms": 12.34,
    }
    run = lambda wall, paths, first: {"wall_s": wall, "paths": paths, "first_sparse_step": first}  # noqa: E731
    embedded = {
        "d_sae": 2048,
        "layers": [5],
        "sparse_below_density": 0.085,
        "command": "cmd2",
        "machine": machine,
        "runs": {"dense": run(100.0, {"dense": 2344}, None), "auto": run(80.0, {"dense": 100, "sparse": 2244}, 101)},
        "drift": {"first_differing_step": 102, "max_rel_diff": {"loss": 1e-4, "lambda": 2e-5, "L0": 1e-3}},
    }
    embedded["drift"]["final_weights_rel_diff"] = {"W_enc": 2e-3, "W_dec": 7e-4}
    (tmp_path / "sparse_parts.json").write_text(json.dumps(parts))
    (tmp_path / "trial_c_sparse_embedded.json").write_text(json.dumps(embedded))
    text = bench_report.render_sections(tmp_path)["sparse_step"]
    assert "at 384 x 2,048, batch 4,096, density 7.24%" in text
    assert (
        "| encoder (dense, both paths) | 36.0 | 179 |" in text
        and "| z to its active pairs, both layouts | 18.6 | - |" in text
    )
    rest = "| rest of the sparse step (Adam, clipping, renormalisation, count, elementwise: the step less its parts"
    assert rest + ") | 12.3 | - |" in text
    assert (
        "where the automatic choice goes sparse below 8.50%: 2,244 of 2,344 steps sparse from step 101, 1.25x the "
        "all-dense run's wall time. The automatic run's log departs from the all-dense one's at step 102" in text
    )
