"""`kdsae verify`: the claims ledger — what of the paper the code reproduces, today, on this machine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kdsae_core.common.fileio import atomic_write_json
from kdsae_core.common.paths import RESULTS, committed_figure_data, toy_results_file
from kdsae_core.toy.profiles import paper_grid_time

if TYPE_CHECKING:
    from kdsae_core.toy.analysis import ToyEvidence


def register(sub) -> None:
    p = sub.add_parser("verify", help="check the paper's claims against fresh runs and the reference data")
    p.add_argument(
        "--profile",
        choices=["quick", "paper"],
        help="run a toy sweep now and judge it instead of the committed results: quick (~1 min) or paper "
        f"(the 48-configuration grid: {paper_grid_time()}). Default: the committed results, the same "
        "verdicts as the book's claims page",
    )
    p.add_argument(
        "--source",
        choices=["local", "hub"],
        default="local",
        help="hub: also measure the published paper-scale checkpoints (needs the hub)",
    )
    p.add_argument(
        "--device",
        help="with --source hub: where the published checkpoints are measured, cpu or cuda "
        "(default: cuda when available)",
    )
    p.add_argument(
        "--toy-results",
        type=Path,
        help="judge this toy_results.json instead of the committed paper grid (its settings are checked)",
    )
    p.add_argument(
        "--embedded-run",
        type=Path,
        default=RESULTS / "exp2" / "embedded",
        help="embedded-default run folder (default: the committed results/exp2/embedded)",
    )
    p.add_argument("--json", type=Path, help="also write the ledger as JSON here")
    p.add_argument("--strict", action="store_true", help="exit 1 when a testable claim is not reproduced")
    p.add_argument(
        "--figures",
        action="store_true",
        help="instead of the ledger: redraw every figure and compare its data with results/figures/ "
        "(exactly for the committed runs; with re-training tolerances for --embedded-run/--toy-results "
        "elsewhere)",
    )
    p.set_defaults(func=run)


def hub_measurements(trial: str, device: str | None = None) -> list[dict]:
    # torch: imported when the hub is asked for, so that `kdsae --help` starts without it
    from kdsae_core.hub.published import measure_published_trial

    return measure_published_trial(trial, device=device)


def run_figures(args) -> int:
    # matplotlib and torch: imported when the figures are redrawn, so that `kdsae --help` starts without them
    from kdsae_core.figures import regression as fr

    toy = args.toy_results or toy_results_file("paper")
    committed = Path(args.embedded_run).resolve() == (RESULTS / "exp2" / "embedded").resolve() and not args.toy_results
    drifts = fr.check_committed(
        committed_figure_data(),
        args.embedded_run,
        toy if Path(toy).exists() else None,
        fr.EXACT if committed else fr.RETRAIN_TOLERANCES,
    )
    for d in drifts:
        print(f"DRIFT {d}")
    print(
        f"{len(drifts)} drifts ({'exact comparison' if committed else 're-training tolerances'}; reference "
        f"{committed_figure_data()})"
    )
    return 1 if drifts else 0


def toy_evidence(args) -> ToyEvidence:
    """The committed results (what the book shows), unless a results file or a fresh sweep is asked for; the
    direct-mode sweep and the other importance profiles are the committed ones either way."""
    # torch (the toy sweep): imported when the verb runs, so that `kdsae --help` starts without it
    from kdsae_core.toy.config import ToyConfig
    from kdsae_core.toy.evidence import committed_evidence, evidence_with_grid  # torch, as above
    from kdsae_core.toy.results import load_results  # torch, as above
    from kdsae_core.toy.sweep import run_sweep  # torch, as above

    if args.toy_results:
        return evidence_with_grid(load_results(args.toy_results), str(args.toy_results))
    if args.profile:
        return evidence_with_grid(
            run_sweep(ToyConfig.from_profile(args.profile), progress=sys.stderr.isatty()),
            f"a {args.profile} sweep run now",
        )
    return committed_evidence()  # missing committed results: one line naming the file


def run(args) -> int:
    if args.figures:
        return run_figures(args)
    # pandas and torch (the ledger's checks): imported when the verb runs, so that `kdsae --help` starts without them
    from kdsae_core.book import claims

    ledger = claims.build_ledger(
        toy_evidence(args), args.source, args.embedded_run, lambda trial: hub_measurements(trial, args.device)
    )
    print(claims.render_text(ledger))
    if args.json:
        atomic_write_json(args.json, ledger.as_dicts())
    counts = ledger.counts()
    if counts[claims.ERROR]:
        return 1
    if args.strict and counts[claims.NOT_REPRODUCED]:
        return 1
    return 0
