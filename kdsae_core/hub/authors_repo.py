"""A hub repository in the authors' layout (`sae_layer{LL}_{snapshot}.pt`, the three published trials among
them) converted into checkpoint folders of a run folder (runs/layout.py).

Each selected file is fetched through client.py (verified), converted through layouts.py and written into a
staging folder beside --out; only when every file has converted, and all agree on their shapes, are the
checkpoint folders moved into place: a bad file leaves --out as it was. The training history the authors store
in each file becomes rows of metrics.jsonl (published.py writes them, with config.json).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from kdsae_core.common.errors import BadFile, MissingData
from kdsae_core.common.fileio import replace_folder, staging_beside
from kdsae_core.data.activations import model_display_name
from kdsae_core.hub import client as hub
from kdsae_core.hub import layouts
from kdsae_core.runs import checkpoints, layout, manifest
from kdsae_core.runs.layout import FINAL, snapshot_tokens
from kdsae_core.sae.model import SAE


@dataclass
class Source:
    repo: str
    name: str  # trial name in the run folder
    spec: dict  # the trial's TrialSpec as JSON ({"name": ...} when unknown)
    tokens: int | None  # tokens at `final`, when known


def _candidates(layer: int, snapshot: str) -> list[str]:
    names = [layout.published_file(layer, snapshot)]
    if layer < 10:  # the authors' own script writes sae_layer8_50M.pt: accept it too
        names.append(f"sae_layer{layer}_{snapshot}.pt")
    return names


def _choose(layer: int, snapshot: str, listing: list[str] | None, src: Source, revision, cache) -> str:
    cands = _candidates(layer, snapshot)
    if listing is not None:
        for c in cands:
            if c in listing:
                return c
        pts = sorted(n for n in listing if n.endswith(".pt"))
        raise MissingData(
            f"{src.repo}{f' (revision {revision})' if revision else ''} has no file {cands[0]} "
            f"(it holds {len(pts)} .pt files{', e.g. ' + pts[0] if pts else ''})."
        )
    for c in cands:
        if hub.cached(src.repo, c, revision, cache) is not None:
            return c
    return cands[0]


def _done(out: Path, src: Source, layer: int, snap: str, listed: dict, sha256: str | None, revision=None) -> bool:
    """True when `out` already holds this checkpoint converted from the same file (same digest when it is
    known, else the same revision), intact."""
    folder = layout.checkpoint_dir(out, src.name, layer, snap)
    try:
        meta = checkpoints.kdsae_meta(checkpoints.read_cfg(folder))
    except BadFile:
        return False
    source = meta.get("source") or {}
    if source.get("repo") != src.repo or (sha256 is not None and source.get("sha256") != sha256):
        return False
    if sha256 is None and revision is not None and revision not in (source.get("revision"), source.get("commit")):
        return False
    rel = str((folder / checkpoints.WEIGHTS_FILE).relative_to(out))
    return rel in listed and not manifest.verify_manifest(out, only=[rel])


def _history(extra: dict, src: Source, layer: int, lam) -> list[dict]:
    """metrics.jsonl rows from the training history the authors store in each file (`stats`)."""
    rows = []
    for s in extra.get("stats") or []:
        if not isinstance(s, dict) or s.get("tokens_M") is None:
            continue
        rows.append(
            {
                "trial": src.name,
                "layer": layer,
                "step": int(s.get("batch", -1)) + 1,
                "tokens": int(round(float(s["tokens_M"]) * 1e6)),
                "mse": s.get("recon_loss"),
                "l1": s.get("l1_loss"),
                "loss": None,
                "L0": s.get("L0"),
                "lambda": lam,
                "alive_frac": s.get("frac_alive"),
            }
        )
    return rows


def _tokens(extra: dict, snap: str, src: Source):
    seen = (extra.get("config") or {}).get("tokens_seen") if isinstance(extra.get("config"), dict) else None
    if isinstance(seen, int) and seen > 0:
        return seen
    return src.tokens if snap == FINAL else int(snapshot_tokens(snap))


def download(out: Path, src: Source, layers, snapshots, revision, cache, settings, old, progress) -> dict:
    """Fetch and convert the (layer, snapshot) files of `src` into `out`. Returns what was done: `converted` (how
    many), `history` (layer -> metrics rows), `shape` ((d_in, d_sae) or None) and `files` (name -> sha256)."""
    jobs = [(int(lay), s) for lay in layers for s in snapshots]
    listed = manifest.read_manifest(out) if out.exists() else {}
    names = _file_names(out, src, jobs, listed, revision, cache)
    lam = src.spec.get("l1_coeff") if src.spec.get("controller", "fixed") == "fixed" else None
    staging = staging_beside(out)
    converted, history, shapes, sources = [], {}, set(), {}
    try:
        bar = tqdm(jobs, desc=f"download {src.repo}", unit="file", disable=not progress)
        for lay, snap in bar:
            name = names[(lay, snap)]
            bar.set_postfix_str(name, refresh=False)
            if hub.cache_only() and hub.cached(src.repo, name, revision, cache) is None:
                continue  # converted earlier (checked above), nothing to verify it against here
            f = hub.fetch(src.repo, name, revision, cache, check=layouts.check_container)
            sources[name] = f.sha256
            if _done(out, src, lay, snap, listed, f.sha256):
                continue
            ck = _convert(staging, f, src, lay, snap, lam, settings, revision)
            shapes.add((ck.d_in, ck.d_sae))
            converted.append((lay, snap, layout.checkpoint_dir(Path("."), src.name, lay, snap)))
            rows = _history(ck.extra, src, lay, lam)
            if rows and (lay not in history or snapshot_tokens(snap) >= history[lay][0]):
                history[lay] = (snapshot_tokens(snap), rows)
        bar.close()
        _check_shapes(out, src, shapes, old)
        for lay, snap, rel in converted:
            replace_folder(staging / rel, out / rel)
            layout.measurement_file(out, src.name, lay, snap).unlink(missing_ok=True)  # measured from the old file
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "converted": len(converted),
        "history": {k: v[1] for k, v in history.items()},
        "shape": next(iter(shapes)) if shapes else None,
        "files": sources,
    }


def _file_names(out: Path, src: Source, jobs, listed: dict, revision, cache) -> dict[tuple[int, str], str]:
    """(layer, snapshot) -> the repository file holding it. With the cache as the only source, every file must be
    there (or already converted): said before any work, naming the first missing one."""
    listing = hub.list_files(src.repo, revision)
    names = {(lay, s): _choose(lay, s, listing, src, revision, cache) for lay, s in jobs}
    if hub.cache_only():
        missing = [
            names[j]
            for j in jobs
            if hub.cached(src.repo, names[j], revision, cache) is None
            and not _done(out, src, *j, listed, None, revision)
        ]
        if missing:
            more = (
                f" ({len(missing) - 1} more of the {len(jobs)} files asked for are missing too)"
                if len(missing) > 1
                else ""
            )
            err = hub.missing_offline(src.repo, missing[0], revision, cache)
            raise MissingData(f"{str(err).rstrip('.')}{more}.")
    return names


def _convert(
    staging: Path, f: hub.Fetched, src: Source, lay: int, snap: str, lam, settings: dict, revision
) -> layouts.PtCheckpoint:
    """One fetched `.pt` file written as a checkpoint folder under `staging`, its source recorded in cfg.json."""
    try:
        ck = layouts.load_pt(f.path)
    except BadFile as e:
        raise BadFile(hub.about(f, e)) from None
    meta = {
        "trial": src.spec,
        "layer": lay,
        "snapshot": snap,
        "tokens": _tokens(ck.extra, snap, src),
        "lambda": lam,
        "source": {
            "repo": src.repo,
            "revision": revision,
            "commit": f.commit,
            "file": f.filename,
            "sha256": f.sha256,
            "etag": f.etag,
            "layout": ck.layout,
        },
        "source_config": ck.extra.get("config"),
    }
    cfg = checkpoints.sae_cfg(
        ck.d_in,
        ck.d_sae,
        model=model_display_name(settings["model"]),
        layer=lay,
        context=settings["context"],
        dataset=settings["dataset"],
        kdsae=meta,
    )
    sae = SAE(ck.d_in, ck.d_sae)
    sae.load_tensors(ck.tensors)
    checkpoints.save_checkpoint(layout.checkpoint_dir(staging, src.name, lay, snap), sae, cfg)
    return ck


def _check_shapes(out: Path, src: Source, shapes: set, old: dict | None) -> None:
    """Every converted file, and an earlier download into `out`, must hold SAEs of one shape."""
    if len(shapes) > 1:
        raise BadFile(
            f"the files of {src.repo} disagree on their shapes ((d_in, d_sae) = "
            f"{', '.join(map(str, sorted(shapes)))}): they are not one run."
        )
    if shapes and old is not None and {(old.get("d_in"), old.get("d_sae"))} != shapes:
        raise BadFile(
            f"{src.repo} holds SAEs of shape (d_in, d_sae) = {next(iter(shapes))}, but {out} already "
            f"holds ({old.get('d_in')}, {old.get('d_sae')}): use another --out."
        )
