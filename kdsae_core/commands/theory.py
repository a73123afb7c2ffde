"""`kdsae theory`: alpha, g(alpha), d*_S and predicted floors of a measured SAE layer, as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from .. import theory
from ._args import positive_int_list

PYTHIA_410M_D_MODEL = 1024  # the released measurement files are of Pythia-410M and hold no d_in


def register(sub) -> None:
    p = sub.add_parser("theory", help="closed-form predictions from a measurement JSON")
    p.add_argument("--measurements", required=True, help="measurement JSON (ours or the authors' released files)")
    p.add_argument("--widths", type=positive_int_list, default=None,
                   help="student widths, comma-separated (default: 1/8, 1/4, 3/8, 1/2, 3/4 and 1 x the SAE's d_in; "
                        "128,...,1024 for the authors' released Pythia-410M files, which do not record it)")
    p.set_defaults(func=run)


def run(args) -> int:
    m = theory.load_measurement(args.measurements)
    d_in = json.loads(Path(args.measurements).read_text()).get("d_in") or PYTHIA_410M_D_MODEL
    out = m.summary(args.widths or theory.default_widths(int(d_in)))
    print(json.dumps(out, indent=1))
    return 0
