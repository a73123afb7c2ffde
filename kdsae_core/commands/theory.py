"""`kdsae theory`: alpha, g(alpha), d*_S and predicted floors of a measured SAE layer, as JSON."""

from __future__ import annotations

import json

from .. import theory
from ._args import positive_int_list


def register(sub) -> None:
    p = sub.add_parser("theory", help="closed-form predictions from a measurement JSON")
    p.add_argument("--measurements", required=True, help="measurement JSON (ours or the authors' released files)")
    p.add_argument("--widths", type=positive_int_list, default=[128, 256, 384, 512, 768, 1024],
                   help="student widths, comma-separated (default: 128,256,384,512,768,1024)")
    p.set_defaults(func=run)


def run(args) -> int:
    m = theory.load_measurement(args.measurements)
    out = m.summary(args.widths)
    print(json.dumps(out, indent=1))
    return 0
