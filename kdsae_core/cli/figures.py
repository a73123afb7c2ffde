"""`kdsae figures --run RUN --out DIR`: draw every Experiment 2 figure of a run folder, each PNG with
its data file (CSV) beside it, plus `figures.json` listing what was drawn and what could not be."""

from __future__ import annotations

import sys
from pathlib import Path

from kdsae_core.common.errors import KdsaeError, MissingData, RunFolderError
from kdsae_core.common.fileio import refuse_non_empty
from kdsae_core.common.paths import RESULTS
from kdsae_core.cli._args import int_list


def register(sub) -> None:
    p = sub.add_parser("figures", help="draw every Experiment 2 figure of a run folder (PNG + data files)")
    p.add_argument("--run", type=Path, default=RESULTS / "exp2" / "embedded",
                   help="run folder (default: the committed embedded-default run results/exp2/embedded)")
    p.add_argument("--out", type=Path, required=True, help="folder for the figures (created; not inside the run)")
    p.add_argument("--layers", type=int_list, help="only these layers (0-based, comma-separated)")
    p.add_argument("--force", action="store_true", help="write into an --out folder that already holds files")
    p.add_argument("--reference", action="store_true",
                   help="also draw the Pythia-410M reference figures (needs KDSAE_REFERENCE_DIR or fetch-reference)")
    p.set_defaults(func=run)


def _check_out(out: Path, run: Path, force: bool) -> Path:
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} exists and is not a folder.")
    if out == run.resolve() or run.resolve() in out.parents:
        raise RunFolderError(f"--out {out} is inside the run folder {run}: figures are derived, write them elsewhere.")
    refuse_non_empty(out, force)
    return out


def draw_all(run_folder: Path, out: Path, layers=None, with_reference: bool = False, progress: bool = False,
             force: bool = False) -> dict:
    """Draw every figure the run (and optionally the reference data) supports; return the index."""
    import matplotlib
    matplotlib.use("Agg")
    from tqdm.auto import tqdm

    from kdsae_core.runs import reference as reference_data
    from kdsae_core.runs import tables as run_data
    from kdsae_core.figures import exp2_catalog as cat
    from kdsae_core.common.fileio import atomic_write_json

    out = _check_out(Path(out), Path(run_folder), force)
    run = run_data.load_run(run_folder, layers=layers)
    jobs = cat.run_figures_for(run)
    index = {"run": str(run_folder), "describes": run.describe(layers=layers), "figures": [], "skipped": []}
    for s, trial in tqdm(jobs, desc="figures", unit="fig", disable=not progress):
        try:
            d = cat.draw(s.key, run, out, trial, layers)
        except MissingData as e:
            index["skipped"].append({"figure": s.stem(trial), "why": str(e)})
            continue
        index["figures"].append(_entry(d, out))
    if with_reference:
        try:
            ms, stats = reference_data.reference_measurements(), reference_data.reference_training_stats()
        except MissingData as e:
            index["skipped"] += [{"figure": s.stem(), "why": str(e)} for s in cat.REFERENCE_FIGURES]
        else:
            for s in cat.REFERENCE_FIGURES:
                index["figures"].append(_entry(cat.draw_reference(s.key, ms, stats, out), out))
    atomic_write_json(out / "figures.json", index)
    return index


def _entry(d, out: Path) -> dict:
    return {"figure": d.stem, "chapter": d.spec.chapter, "heading": d.spec.heading,
            "files": sorted(str(p.relative_to(out)) for p in d.files.values()), "rows": len(d.data)}


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
