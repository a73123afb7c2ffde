"""Runs published by `kdsae publish`, downloaded back: the repository holds an exported run folder
(runs/layout.py: config.json, MANIFEST.sha256, checkpoints/..., measurements/...). Every file name comes from the hub's
MANIFEST.sha256 and is refused if it would leave --out; every file is verified against its manifest sha256 and
hub etag, and every checkpoint must load, before the folder is moved into place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from kdsae_core.common.errors import BadFile, RunFolderError
from kdsae_core.common.fileio import staging_beside
from kdsae_core.hub import client as hub
from kdsae_core.runs import checkpoints, layout, manifest
from kdsae_core.runs.layout import list_checkpoints

MARKERS = (layout.MANIFEST_FILE, layout.CONFIG_FILE)  # a repository written by `kdsae publish`


def is_kdsae_repo(repo: str, revision, cache) -> bool:
    listing = hub.list_files(repo, revision)
    if listing is not None:
        return all(m in listing for m in MARKERS)
    return all(hub.cached(repo, m, revision, cache) is not None for m in MARKERS)


def _wanted(rel: str, name_filter, layers, snapshots) -> bool:
    """Whether a file of a published kdsae run belongs to the selection."""
    parts = rel.split("/")
    if parts[0] == layout.CHECKPOINTS_DIR and len(parts) == 5:
        trial, layer, snap = parts[1], parts[2], parts[3]
    elif parts[0] == layout.MEASUREMENTS_DIR and len(parts) == 3 and parts[2].startswith("layer") and "_" in parts[2]:
        trial, (layer, snap) = parts[1], parts[2][: -len(".json")].split("_", 1)
    else:
        return len(parts) == 1 and rel != layout.MODEL_CARD_FILE
    try:
        n = int(layer[len("layer") :])
    except ValueError:
        return False
    return (
        (layers is None or n in layers)
        and (snapshots is None or snap in snapshots)
        and (name_filter is None or trial == name_filter)
    )


def download(out: Path, repo: str, layers, snapshots, revision, cache, old, progress) -> int:
    if old is not None:
        raise RunFolderError(
            f"{out} holds an earlier download; a run published by kdsae is downloaded into a new or empty --out."
        )
    mf = hub.fetch(repo, layout.MANIFEST_FILE, revision, cache)
    listed = manifest.parse_manifest(mf.path.read_text(), f"{repo}: {layout.MANIFEST_FILE}")
    chosen = [hub.safe_relpath(n) for n in listed]  # names from the hub: refuse `..` and absolute paths first
    chosen = [n for n in chosen if _wanted(n, None, layers, snapshots)]
    if layout.CONFIG_FILE not in chosen:
        raise BadFile(f"{repo}: MANIFEST.sha256 does not list config.json; it is not a run published by kdsae.")
    staging = staging_beside(out)
    try:
        for rel in tqdm(chosen, desc=f"download {repo}", unit="file", disable=not progress):
            f = hub.fetch(repo, rel, revision, cache, expected_sha256=listed[rel])
            target = hub.inside(staging, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f.path, target)
        for c in list_checkpoints(staging):  # the weights must load, not only match their digests
            checkpoints.load_checkpoint(c.folder)
        manifest.write_manifest(staging)
        if out.exists():
            out.rmdir()  # empty: checked by published._existing
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(chosen)
