"""`kdsae toy`: Experiment 1, the toy-model sweep, as one batched program."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from kdsae_core.cli._args import alpha_list, int_list, positive_int_list
from kdsae_core.common.errors import InvalidParameter, RunFolderError
from kdsae_core.common.paths import TOY_PARTS_DIR, TOY_RESULTS_FILE, TOY_STATE_FILE
from kdsae_core.toy.profiles import KNEE_WIDTHS, PROFILES


def register(sub) -> None:
    p = sub.add_parser("toy", help="Experiment 1: train teachers and distilled students of the toy model")
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="quick",
        help="paper: 48 configurations x 20 seeds x 10,000 steps; quick: the book's reduced grid; direct: "
        "the paper's (n, alpha) grid trained on the task itself at widths past the predicted knee",
    )
    p.add_argument("--n", type=int_list, help="feature counts, comma-separated")
    p.add_argument("--alpha", type=alpha_list, help="sparsity levels (probability a feature is inactive)")
    p.add_argument("--d-teacher", type=int_list, help="teacher widths")
    p.add_argument(
        "--widths",
        type=_widths,
        help="student widths (default 1..d_T), or `knee` (direct mode): "
        "1..min(n, ceil(1.5 d*_S) + 1) for each (n, alpha)",
    )
    p.add_argument("--importance", help="zipf:S, geometric:R or uniform (default zipf:1)")
    p.add_argument("--mode", choices=["distill", "direct"])
    p.add_argument("--steps", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seeds", type=int, help="number of seeds")
    p.add_argument("--eval-samples", type=int)
    p.add_argument("--seed", type=int, help="base seed (default 0)")
    p.add_argument("--checkpoint-every", type=int, help="save a resumable state every N steps (default 1000)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="processes, each training a group of feature counts n with the torch threads divided among "
        "them (results identical to --jobs 1 at that many threads; at most one per n; default 1)",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder for toy_results.json")
    p.add_argument("--force", action="store_true", help="overwrite results already in --out")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (for programs) instead of the table")
    p.set_defaults(func=run)


def _widths(text: str):
    return KNEE_WIDTHS if text.strip() == KNEE_WIDTHS else positive_int_list(text)


def run(args) -> int:
    # torch: imported when the verb runs, so that `kdsae --help` starts without it
    from kdsae_core.toy.config import ToyConfig  # torch, as above
    from kdsae_core.toy.parallel import run_parallel
    from kdsae_core.toy.sweep import run_sweep  # torch, as above

    fields = (
        "n",
        "alpha",
        "d_teacher",
        "widths",
        "importance",
        "mode",
        "steps",
        "batch",
        "lr",
        "seeds",
        "eval_samples",
        "seed",
        "checkpoint_every",
    )
    cfg = ToyConfig.from_profile(args.profile, **{f: getattr(args, f) for f in fields})
    resumable = (args.out / TOY_STATE_FILE).exists() or (args.out / TOY_PARTS_DIR).is_dir()
    if (args.out / TOY_RESULTS_FILE).exists() and not resumable and not args.force:
        raise RunFolderError(f"{args.out} already holds toy results; pass --force to overwrite or use another --out.")
    if args.jobs < 1:
        raise InvalidParameter(f"--jobs must be at least 1 (got {args.jobs}).")
    results = run_parallel(cfg, args.out, args.jobs) if args.jobs > 1 else run_sweep(cfg, args.out)
    if args.json:
        print(
            json.dumps(
                {
                    "out": str(args.out / TOY_RESULTS_FILE),
                    "median_accuracy_by_alpha": results["median_accuracy_by_alpha"],
                },
                indent=1,
            )
        )
    else:
        print(render_text(results, args.out / TOY_RESULTS_FILE))
    return 0


ACCURACY_LEGEND = (
    "accuracy_rel = max(0, 1 - |L_pred - L_meas| / L_meas), the median over the (teacher, student width) pairs below "
    'the critical width d*_S, where the theory predicts a non-zero floor; "no pairs": d*_S is below every student '
    "width at that sparsity, so no pair qualifies. accuracy_norm = 1 - |L_pred - L_meas| / L_inf, the median over all "
    "pairs (L_inf: the loss of predicting zero). L_meas is a pair's measured floor, the median over seeds; L_pred the "
    "predicted refined floor. --json prints these numbers for programs."
)


def render_text(results: dict, where: Path) -> str:
    """The median accuracies per sparsity level as a table, with what each column means."""
    medians, excluded = results["median_accuracy_by_alpha"], results["excluded"]
    lines = [
        f"kdsae toy: {len(results['configs'])} configurations; results in {where}",
        f"  {'alpha':>6}  {'accuracy_rel (pairs below d*_S)':<34}  accuracy_norm (all pairs)",
    ]
    for key, rel in medians["rel"].items():
        pairs = excluded[key]["pairs"]
        below = pairs - excluded[key]["rel_excluded_at_or_above_d_star"]
        rel_text = "no pairs" if isinstance(rel, str) else f"{rel:.3f} ({below} of {pairs} pairs)"
        lines.append(f"  {key:>6}  {rel_text:<34}  {medians['norm'][key]:.3f} ({pairs} pairs)")
    return "\n".join([*lines, "", *textwrap.wrap(ACCURACY_LEGEND, 110)])
