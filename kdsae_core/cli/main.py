"""The `kdsae` command. Each verb lives in `kdsae_core/cli/<verb>.py` with `register(subparsers)`.

Errors the user can fix (`KdsaeError`) are printed as one line on stderr with a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from kdsae_core.common.errors import KdsaeError

# Verb modules, in the order `kdsae --help` lists them.
VERBS = [
    "theory",
    "toy",
    "train",
    "measure",
    "download",
    "fetch_reference",
    "export",
    "publish",
    "figures",
    "run",
    "verify",
    "book",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's usage block is noise here)
        self.exit(
            2,
            f"kdsae: error: {message} (see `kdsae {self.prog.split()[-1]} --help`)\n"
            if " " in self.prog
            else f"kdsae: error: {message} (see `kdsae --help`)\n",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kdsae",
        description="Reproducible companion to arXiv 2604.04037 (minimum-width theorem for knowledge distillation).",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    sub.required = True
    for name in VERBS:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__package__}.{name}":
                continue  # verb not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KdsaeError as e:
        print(f"kdsae {args.verb}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        print(f"kdsae {args.verb}: {str(e) or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
