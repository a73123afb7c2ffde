"""Benchmark: training one SAE per layer from ONE forward pass of the language model, against one separate run
per layer.

The embedded model (all-MiniLM-L6-v2, 6 layers, d_model 384) on the embedded text, with the embedded
profile's shape (d_sae 2048, 128-token sequences) and trial B's lambda. Per batch:
- `one pass`: ActivationSource over all layers (one forward pass, stopping after the last), then every layer's
  SAEUnit.step, reading the per-step numbers the trainer logs (loss, MSE, L1, L0, lambda, alive fraction);
- `separate`: for each layer, an ActivationSource of that layer alone (its forward pass stops after the layer,
  as a one-layer run's would), then that layer's step -- what L one-layer runs cost per batch;
- the parts alone: each forward pass, and each layer's step (the same units).
All in alternating rounds. Reported: the LM forward cost of the separate runs over the one pass's (and the
fraction saved), the wall ratio, and the overhead per layer: the one-pass time not explained by its forward pass
and the SAE steps themselves (capture of one more layer, routing, Python), per layer. Also the memory plan
of the run next to the bytes its units actually hold.

    .venv/bin/python benchmarks/all_layers.py [--rounds 7] [--batch-tokens 128] [--d-sae 2048]

Writes benchmarks/results/all_layers.json and .md. Re-executes itself with MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=68719476736 unless --no-malloc-env.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys

import _bench
import torch

from kdsae_core.data import activations as acts
from kdsae_core.data.text import TokenStream
from kdsae_core.sae.model import TrialSpec
from kdsae_core.sae.plan import format_memory_plan, memory_plan
from kdsae_core.sae.step import SAEUnit

TRIAL = TrialSpec("B", 8e-5, "sum")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def held_bytes(unit: SAEUnit) -> int:
    """Bytes of the tensors a unit keeps between steps (weights, gradient buffers, Adam state, firing record),
    each storage counted once."""
    tensors = [unit.last_fired, unit.controller.lam, unit.controller.l0_ema]
    for p in unit.sae.parameters():
        tensors += [p, p.grad]
        tensors += [t for t in unit.opt.state.get(p, {}).values() if torch.is_tensor(t)]
    seen = {}
    for t in tensors:
        if t is not None:
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def trainer_reads(unit: SAEUnit, s) -> dict:
    """The numbers Trainer._train_step reads from every unit every step (host copies)."""
    return {
        "lambda": float(unit.controller.lam),
        "loss": float(s.loss),
        "mse": float(s.mse),
        "l1": float(s.l1),
        "L0": float(s.l0),
        "alive_frac": float(unit.alive_fraction(100)),
    }


def main() -> None:
    _bench.ensure_malloc_env()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch-tokens", type=int, default=128, help="tokens per step (the embedded profile: 128)")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--d-sae", type=int, default=2048)
    ap.add_argument("--min-sample-seconds", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--no-malloc-env", action="store_true")
    ap.add_argument("--out-name", default="all_layers")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    _bench.set_clock(args.clock)
    m = _bench.machine()
    model = acts.load_model("embedded")
    L = acts.model_layers(model)
    layers = list(range(L))
    stream = TokenStream(model.tokenizer, "embedded", args.context, "train")
    n_seq = args.batch_tokens // args.context
    token_batches = [stream.next_batch(n_seq) for _ in range(8)]
    stream.close()  # (its background thread, idle from here on)
    one_pass = acts.ActivationSource(model, layers)
    single = {layer: acts.ActivationSource(model, [layer]) for layer in layers}
    d_in = one_pass.d_model
    fixed = one_pass(token_batches[0])  # activations for the steps-alone timing
    for layer in layers:  # the forward passes' own temporaries are in the heap before the memory is read
        single[layer](token_batches[0])
    rss0 = current_rss_bytes()
    units = {layer: SAEUnit(TRIAL, layer, d_in, args.d_sae, seed=layer, lr=3e-4, grad_clip=1.0) for layer in layers}
    plan = memory_plan(d_in, args.d_sae, args.batch_tokens, len(units), L)
    print(format_memory_plan(plan), flush=True)
    for layer, u in units.items():
        u.step(fixed[layer])
    rss_units = current_rss_bytes()
    state = {"i": 0}

    def tokens():
        state["i"] = (state["i"] + 1) % len(token_batches)
        return token_batches[state["i"]]

    def run_one_pass():
        x = one_pass(tokens())
        for layer, u in units.items():
            trainer_reads(u, u.step(x[layer]))

    def run_separate():
        t = tokens()
        for layer, u in units.items():
            x = single[layer](t)
            trainer_reads(u, u.step(x[layer]))

    def forward_all():
        one_pass(tokens())

    def make_forward(layer):
        return lambda: single[layer](tokens())

    def make_step(layer):
        return lambda: trainer_reads(units[layer], units[layer].step(fixed[layer]))

    fns = {"one_pass": run_one_pass, "separate": run_separate, "forward_all": forward_all}
    fns.update({f"forward_{layer}": make_forward(layer) for layer in layers})
    fns.update({f"step_{layer}": make_step(layer) for layer in layers})
    for f in fns.values():
        f()
    reps = {n: _bench.reps_for(f, args.min_sample_seconds) for n, f in fns.items()}
    times = _bench.alternate(fns, args.rounds, reps, log=lambda s: print(s.split(", forward_0")[0], flush=True))
    rss_after = current_rss_bytes()

    med = {n: statistics.median(v) for n, v in times.items()}
    rounds = range(args.rounds)
    fwd_sep = [sum(times[f"forward_{layer}"][r] for layer in layers) for r in rounds]
    steps = [sum(times[f"step_{layer}"][r] for layer in layers) for r in rounds]
    overhead = [(times["one_pass"][r] - times["forward_all"][r] - steps[r]) / L for r in rounds]
    result = {
        "benchmark": "all_layers",
        "machine": _bench.finish_machine(m),
        "model": "all-MiniLM-L6-v2",
        "layers": L,
        "d_in": d_in,
        "d_sae": args.d_sae,
        "batch_tokens": args.batch_tokens,
        "context": args.context,
        "rounds": args.rounds,
        "trial": TRIAL.to_json(),
        "steps_per_sample": reps,
        "command": " ".join([".venv/bin/python", "benchmarks/all_layers.py", *sys.argv[1:]]),
        "seconds": {n: _bench.summary(v) for n, v in times.items()},
        "forward_separate_over_one_pass": _bench.per_round_ratio(fwd_sep, times["forward_all"]),
        "forward_full_model_s": med["forward_all"],
        "lm_forward_saved_fraction": 1 - statistics.median([a / b for a, b in zip(times["forward_all"], fwd_sep)]),
        "wall_separate_over_one_pass": _bench.per_round_ratio(times["separate"], times["one_pass"]),
        "sae_step_s_per_layer": statistics.median(steps) / L,
        "overhead_s_per_layer": statistics.median(overhead),
        "overhead_fraction_of_step": statistics.median(overhead) / (statistics.median(steps) / L),
        "memory_plan": plan.to_json(),
        "memory_measured": {
            "held_by_units": sum(held_bytes(u) for u in units.values()),
            "rss_before_units": rss0,
            "rss_after_first_steps": rss_units,
            "rss_after": rss_after,
            "peak_rss": peak_rss_bytes(),
            "rss_growth_units": rss_units - rss0,
        },
    }
    f = result["forward_separate_over_one_pass"]
    w = result["wall_separate_over_one_pass"]
    md = [
        "# all_layers benchmark",
        "",
        f"{L} SAEs (one per layer of all-MiniLM-L6-v2, {d_in} x {args.d_sae}, trial B) trained from one forward "
        f"pass per batch of {args.batch_tokens} tokens, against {L} separate one-layer runs (each forward pass "
        f"stopping after its layer); median over {args.rounds} alternating rounds.",
        "",
        _bench.machine_line(result["machine"]),
        "",
        "| what | value |",
        "|---|---|",
        f"| LM forward, one pass over all {L} layers | {med['forward_all'] * 1e3:.1f} ms |",
        f"| LM forward, the {L} separate runs together | {statistics.median(fwd_sep) * 1e3:.1f} ms |",
        f"| forward cost, separate / one pass | {f['median']:.2f}x ({f['min']:.2f}-{f['max']:.2f}) |",
        f"| LM forward cost saved by the one pass | {result['lm_forward_saved_fraction'] * 100:.0f}% |",
        f"| SAE step (per layer, alone) | {result['sae_step_s_per_layer'] * 1e3:.2f} ms |",
        f"| one pass: all {L} layers per batch | {med['one_pass'] * 1e3:.1f} ms |",
        f"| separate runs: all {L} layers per batch | {med['separate'] * 1e3:.1f} ms |",
        f"| wall, separate / one pass | {w['median']:.2f}x ({w['min']:.2f}-{w['max']:.2f}) |",
        f"| overhead per extra layer (one pass minus its forward and the steps, per layer) | "
        f"{result['overhead_s_per_layer'] * 1e3:.2f} ms ({result['overhead_fraction_of_step'] * 100:.1f}% of a step"
        f"{'; below zero: none measurable' if result['overhead_s_per_layer'] < 0 else ''}) |",
        f"| memory plan of the {L} SAEs (per SAE / workspace) | {plan.per_sae_bytes / 1e6:.1f} MB / "
        f"{plan.workspace_bytes / 1e6:.2f} MB; total {plan.total_bytes / 1e6:.0f} MB |",
        f"| counted: tensors the {L} units keep between steps | "
        f"{result['memory_measured']['held_by_units'] / 1e6:.1f} MB |",
    ]
    _bench.write_result(args.out_name, result, md)


if __name__ == "__main__":
    main()
