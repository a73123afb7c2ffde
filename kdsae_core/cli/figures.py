"""`kdsae figures --run RUN --out DIR`: draw every Experiment 2 figure of a run folder, each PNG with
its data file (CSV) beside it, plus `figures.json` listing what was drawn and what could not be."""

from __future__ import annotations

import sys
from pathlib import Path

from kdsae_core.cli._args import int_list
from kdsae_core.common.errors import KdsaeError, RunFolderError
from kdsae_core.common.fileio import atomic_write_json, refuse_non_empty
from kdsae_core.common.paths import RESULTS


def register(sub) -> None:
    p = sub.add_parser("figures", help="draw every Experiment 2 figure of a run folder (PNG + data files)")
    p.add_argument(
        "--run",
        type=Path,
        default=RESULTS / "exp2" / "embedded",
        help="run folder (default: the committed embedded-default run results/exp2/embedded)",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the figures (created; not inside the run)")
    p.add_argument("--layers", type=int_list, help="only these layers (0-based, comma-separated)")
    p.add_argument("--force", action="store_true", help="write into an --out folder that already holds files")
    p.add_argument(
        "--reference",
        action="store_true",
        help="also draw the Pythia-410M reference figures (needs KDSAE_REFERENCE_DIR or fetch-reference)",
    )
    p.set_defaults(func=run)


def _check_out(out: Path, run: Path, force: bool) -> Path:
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} exists and is not a folder.")
    if out == run.resolve() or run.resolve() in out.parents:
        raise RunFolderError(f"--out {out} is inside the run folder {run}: figures are derived, write them elsewhere.")
    refuse_non_empty(out, force)
    return out


def draw_all(
    run_folder: Path, out: Path, layers=None, with_reference: bool = False, progress: bool = False, force: bool = False
) -> dict:
    """Draw every figure the run (and optionally the reference data) supports; write and return the index."""
    # imported here: the catalog brings matplotlib and torch, which `kdsae` must not load for every verb
    from kdsae_core.figures import catalog

    out = _check_out(Path(out), Path(run_folder), force)
    index = catalog.draw_run_folder(run_folder, out, layers, with_reference, progress)
    atomic_write_json(out / "figures.json", index)
    return index


def run(args) -> int:
    if args.layers is not None and any(v < 0 for v in args.layers):
        raise KdsaeError(f"--layers are 0-based and cannot be negative (got {args.layers}).")
    index = draw_all(args.run, args.out, args.layers, args.reference, progress=sys.stderr.isatty(), force=args.force)
    for f in index["figures"]:
        print(f"{f['figure']}: {', '.join(f['files'])}")
    for s in index["skipped"]:
        print(f"skipped {s['figure']}: {s['why']}", file=sys.stderr)
    print(f"{len(index['figures'])} figures in {Path(args.out).resolve()} (index: figures.json)")
    return 0
