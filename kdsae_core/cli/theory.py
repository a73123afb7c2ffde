"""`kdsae theory`: alpha, g(alpha), d*_S and predicted floors of a measured SAE layer: a table for people, with
every floor also as a fraction of L_inf, or (`--json`) every number for programs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from kdsae_core.cli._args import positive_int_list

PYTHIA_410M_D_MODEL = 1024  # the released measurement files are of Pythia-410M and hold no d_in


def register(sub) -> None:
    p = sub.add_parser("theory", help="closed-form predictions from a measurement JSON")
    p.add_argument("--measurements", required=True, help="measurement JSON (ours or the authors' released files)")
    p.add_argument(
        "--widths",
        type=positive_int_list,
        default=None,
        help="student widths, comma-separated (default: 1/8, 1/4, 3/8, 1/2, 3/4 and 1 x the SAE's d_in; "
        "128,...,1024 for the authors' released Pythia-410M files, which do not record it)",
    )
    p.add_argument("--json", action="store_true", help="print every number as JSON (for programs) instead of the table")
    p.set_defaults(func=run)


def run(args) -> int:
    # numpy (the theory's arrays): imported when the verb runs, so that `kdsae --help` starts without it
    from kdsae_core import theory

    m = theory.load_measurement(args.measurements)
    d_in = json.loads(Path(args.measurements).read_text()).get("d_in") or PYTHIA_410M_D_MODEL
    out = m.summary(args.widths or theory.default_widths(int(d_in)))
    print(json.dumps(out, indent=1) if args.json else render_text(out))
    return 0


def render_text(s: dict) -> str:
    """The summary as a table: floors in the file's own units and as fractions of L_inf (the loss of predicting
    zero), so that 0.079 and 757.8 read as what they are: 0.009% and 88% of the same scale."""
    from kdsae_core import theory  # numpy: imported when the table is printed, as in run()

    where = (
        " ".join(
            x
            for x in (
                f"layer {s['layer']}" if s["layer"] is not None else "",
                f"snapshot {s['snapshot']}" if s["snapshot"] else "",
            )
            if x
        )
        or "this SAE"
    )
    L = s["L_inf"]
    lines = [
        f"{where}: F = {s['F_alive']:,} alive features, L0 = {s['avg_active']:,.2f} active per token",
        f"  alpha = 1 - L0/F = {s['alpha']:.6f}   g(alpha) = {s['g_alpha']:.4g}   "
        f"critical width d*_S = F/g(alpha) = {s['d_star_S']:,.1f}",
        f"  L_inf = {L:.4g} (the loss of predicting zero: the sum of all F importances E[z^2])",
        "",
        f"  {'d_S':>6}  {'kept':>8}  {'dropped':>8}  {'refined floor':>13}  {'of L_inf':>9}  "
        f"{'naive floor':>11}  {'of L_inf':>8}",
    ]
    for width, p in s["predictions"].items():
        lines.append(
            f"  {width:>6}  {p['features_kept']:>8,}  {p['features_dropped']:>8,}  {p['predicted_floor']:>13.4g}  "
            f"{_share(p['predicted_floor'], L):>9}  {p['naive_floor']:>11.4g}  {_share(p['naive_floor'], L):>8}"
        )
    if theory.below_capacity_minimum(s["alpha"]):
        lines += [
            "",
            f"  warning: alpha = {s['alpha']:.4f} is below 1 - 1/e = {theory.G_MINIMUM_ALPHA:.3f}, where g(alpha) "
            "is smallest (e): there g falls as alpha grows, so a sparser layer is predicted less capacity.",
        ]
    legend = (
        "A student of width d_S keeps d_S*g(alpha) features. Refined floor: the importance of the features it "
        "drops (the least important ones); naive floor: features dropped x L_inf/F, as if all mattered "
        "equally. --json prints every number."
    )
    return "\n".join([*lines, "", *textwrap.wrap(legend, 110)])


def _share(x: float, total: float) -> str:
    import numpy as np  # imported when the table is printed, as in run()

    if total <= 0:
        return "-"
    f = 100 * x / total
    return f"{f:.1f}%" if f >= 1 else np.format_float_positional(f, precision=2, fractional=False, trim="-") + "%"
