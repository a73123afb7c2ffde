"""`kdsae measure --run RUN`: measure every checkpoint of a run over fresh tokens (DESIGN.md section 4)."""

from __future__ import annotations

from pathlib import Path

from ..measure import measure_run
from ._args import int_list


def register(sub) -> None:
    p = sub.add_parser("measure", help="measure every (trial, layer, snapshot) SAE of a run folder")
    p.add_argument("--run", type=Path, required=True, help="run folder (from `kdsae train` or `kdsae download`)")
    p.add_argument("--tokens", type=int, help="fresh measurement tokens (default: the run's measure_tokens, >= 1e5)")
    p.add_argument("--trials", type=lambda s: [t for t in s.split(",") if t], help="only these trials")
    p.add_argument("--layers", type=int_list, help="only these layers")
    p.add_argument("--snapshots", type=lambda s: [t for t in s.split(",") if t], help="only these snapshots")
    p.add_argument("--device", help="cpu or cuda (default: the run's device when available)")
    p.add_argument("--force", action="store_true",
                   help="replace measurements made over more tokens than --tokens (refused otherwise)")
    p.set_defaults(func=run)


def run(args) -> int:
    written = measure_run(args.run, tokens=args.tokens, trials=args.trials, layers=args.layers,
                          snapshots=args.snapshots, device=args.device, force=args.force)
    print(f"kdsae measure: wrote {len(written)} files under {args.run}")
    return 0
