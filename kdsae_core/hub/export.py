"""`kdsae export`: a run folder as a self-describing, publishable folder.

The export keeps the run-folder layout (ARCHITECTURE.md), so `kdsae download --repo` reads it back and each
`checkpoints/{trial}/layer{LL}/{snapshot}/` loads in SAELens (`SAE.load_from_disk(folder)`, or
`SAE.from_pretrained(REPO, "checkpoints/B/layer12/final")` once published). Every file is verified against the
run's MANIFEST.sha256 before it is exported (a checkpoint that is not listed is refused), cfg.json files are
completed for SAELens 6, a model card README.md (`library_name: saelens`, the training config, the measured
metrics) is written, and a fresh MANIFEST.sha256 lists everything. Weights are hard-linked when possible (kdsae
replaces files atomically, so a link never changes under the export). The export is assembled beside --to and
moved into place at the end: a failure leaves --to as it was.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kdsae_core.common import paths
from kdsae_core.common.errors import BadFile, InvalidParameter, MissingData, RunFolderError
from kdsae_core.common.fileio import atomic_write_json, atomic_write_text, make_temp_dir, replace_folder
from kdsae_core.hub.model_card import model_card
from kdsae_core.runs import checkpoints, layout, manifest
from kdsae_core.runs.layout import list_checkpoints

EXPORTED_TOP = (layout.CONFIG_FILE, layout.METRICS_FILE)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _files(run: Path) -> list[str]:
    """The run's exported files other than checkpoints: config, metrics, summaries, measurements."""
    names = [n for n in EXPORTED_TOP if (run / n).exists()]
    names += [p.name for p in layout.summary_files(run)]
    names += sorted(str(p.relative_to(run)) for p in layout.measurement_files(run))
    return names


def _verified(run: Path, listed: dict, rel: str) -> None:
    if rel not in listed:
        raise BadFile(
            f"{run / rel} is not listed in {layout.run_manifest(run)}, so it cannot be verified: "
            "re-run `kdsae measure` (it rewrites the manifest) or remove the file."
        )
    problems = manifest.verify_manifest(run, only=[rel])
    if problems:
        raise BadFile(problems[0])


def _stage(run: Path, staging: Path, repo: str | None) -> int:
    listed = manifest.read_manifest(run)
    if not listed:
        raise BadFile(
            f"{run} has no MANIFEST.sha256, so its files cannot be verified: re-run `kdsae measure --run {run}` "
            "to write one."
        )
    cks = list_checkpoints(run)
    if not cks:
        raise MissingData(f"{run} has no checkpoints to export.")
    for c in cks:
        folder_rel = c.folder.relative_to(run)
        weights = str(folder_rel / layout.WEIGHTS_FILE)
        _verified(run, listed, str(folder_rel / layout.CFG_FILE))
        if weights not in listed:
            raise BadFile(f"{run / weights} is not listed in {layout.run_manifest(run)}, so it cannot be verified.")
        _, cfg = checkpoints.load_checkpoint(c.folder, expected_sha256=listed[weights])  # digest, names, shapes
        _link_or_copy(c.folder / layout.WEIGHTS_FILE, staging / weights)
        atomic_write_json(staging / folder_rel / layout.CFG_FILE, checkpoints.saelens_cfg(cfg))
    for rel in _files(run):
        _verified(run, listed, rel)
        _link_or_copy(run / rel, staging / rel)
    atomic_write_text(staging / layout.MODEL_CARD_FILE, model_card(staging, repo))
    manifest.write_manifest(staging)
    return len(cks)


def export_run(run: Path, to: Path, repo: str | None = None, force: bool = False) -> Path:
    """Export `run` into `to` (new or empty; with `force`, an earlier export there is replaced)."""
    run, to = Path(run).expanduser().absolute(), Path(to).expanduser().absolute()
    if not layout.run_config(run).exists():
        raise RunFolderError(f"{run} is not a run folder (no config.json).")
    paths.refuse_results(to, "--to")
    if to.resolve() == run.resolve() or run.resolve() in to.resolve().parents:
        raise InvalidParameter(f"--to {to} is inside the run folder {run}: choose a folder outside it.")
    if to.resolve() in run.resolve().parents:
        raise InvalidParameter(f"--to {to} contains the run folder {run}: choose another folder.")
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        if not force:
            raise RunFolderError(f"{to} exists and is not empty: pass --force to replace it, or choose another --to.")
        if not layout.run_manifest(to).exists() or not (to / layout.MODEL_CARD_FILE).exists():
            raise RunFolderError(
                f"{to} is not an earlier export (no README.md and MANIFEST.sha256); it is not "
                "replaced even with --force: choose another --to."
            )
    to.parent.mkdir(parents=True, exist_ok=True)
    staging = make_temp_dir(f".{to.name}.export-", to.parent)
    try:
        _stage(run, staging, repo)
        replace_folder(staging, to)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return to
