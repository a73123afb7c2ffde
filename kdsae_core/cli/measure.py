"""`kdsae measure --run RUN`: measure every checkpoint of a run over fresh tokens (book/methods.md)."""

from __future__ import annotations

import json
from pathlib import Path

from kdsae_core.cli._args import int_list
from kdsae_core.runs.layout import snapshot_tokens


def register(sub) -> None:
    p = sub.add_parser("measure", help="measure every (trial, layer, snapshot) SAE of a run folder")
    p.add_argument("--run", type=Path, required=True, help="run folder (from `kdsae train` or `kdsae download`)")
    p.add_argument("--tokens", type=int, help="fresh measurement tokens (default: the run's measure_tokens, >= 1e5)")
    p.add_argument("--trials", type=lambda s: [t for t in s.split(",") if t], help="only these trials")
    p.add_argument("--layers", type=int_list, help="only these layers")
    p.add_argument("--snapshots", type=lambda s: [t for t in s.split(",") if t], help="only these snapshots")
    p.add_argument("--device", help="cpu or cuda (default: the run's device when available)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace measurements made over more tokens than --tokens (refused otherwise)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    # torch: imported when the verb runs, so that `kdsae --help` starts without it
    from kdsae_core.measure import measure_run

    written = measure_run(
        args.run,
        tokens=args.tokens,
        trials=args.trials,
        layers=args.layers,
        snapshots=args.snapshots,
        device=args.device,
        force=args.force,
    )
    print(render_text(written, args.run))
    return 0


def render_text(written: list[Path], run: Path) -> str:
    """The measured SAEs as a table (one row per trial, layer and snapshot): L0, F, alpha and d*_S."""
    # pandas and numpy: imported when a table is printed, so that `kdsae --help` starts without them
    from kdsae_core.theory import ALIVE_THRESHOLD  # numpy, as above

    rows = [json.loads(p.read_text()) for p in written if p.suffix == ".json"]
    rows.sort(key=lambda r: (r["trial"], r["layer"], snapshot_tokens(r["snapshot"])))
    tokens = sorted({r["measure_tokens"] for r in rows})
    lines = [
        f"kdsae measure: {len(rows)} SAEs of {run}, over {', '.join(f'{t:,}' for t in tokens)} fresh tokens",
        f"  {'trial':<6} {'layer':>5}  {'snapshot':<9} {'L0':>9} {'F alive':>9} {'alpha':>9} {'d*_S':>10}",
    ]
    for r in rows:
        alpha = "-" if r["alpha"] is None else f"{r['alpha']:.5f}"
        d_star = "-" if r["d_star_S"] is None else f"{r['d_star_S']:,.1f}"
        lines.append(
            f"  {r['trial']:<6} {r['layer']:>5}  {r['snapshot']:<9} {r['avg_active']:>9,.2f} {r['F_alive']:>9,} "
            f"{alpha:>9} {d_star:>10}"
        )
    lines += [
        "",
        f"L0: latents active per token; F alive: latents that fire on more than {ALIVE_THRESHOLD:g} of the "
        "tokens; alpha = 1 - L0/F; d*_S = F/g(alpha), the critical width (- where L0 is not inside (0, F)).",
        f"Written: {len(rows)} measurement files under {Path(run) / 'measurements'} and "
        f"{len(written) - len(rows)} summary_<trial>.csv.",
    ]
    return "\n".join(lines)
