"""Published checkpoints -> run folders (ARCHITECTURE.md): the three trials the authors put on the hub, any
repository in their `sae_layer{LL}_{snapshot}.pt` layout, and (through kdsae_repo.py) runs published by
`kdsae publish`.

`download_run` fetches the selected files through hub.py (verified), converts each `.pt` through layouts.py
into a checkpoint folder, and writes config.json, metrics.jsonl (the training history stored in the files) and
MANIFEST.sha256. Everything is converted into a staging folder beside --out first: a bad file leaves --out as it
was. `fetch_trial` adds the measurement (the chapters' `source="hub"` and `kdsae verify --source hub`).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from kdsae_core.runs import checkpoints
from kdsae_core.hub import client as hub
from kdsae_core.hub import layouts
from kdsae_core.runs import manifest
from kdsae_core.common import paths
from kdsae_core.common.errors import BadFile, InvalidParameter, MissingData, RunFolderError
from kdsae_core.common.fileio import atomic_write_json, atomic_write_text, make_temp_dir, replace_folder
from kdsae_core.runs.tables import FINAL, snapshot_tokens
from kdsae_core.hub.published_trials import PUBLISHED, PUBLISHED_SNAPSHOTS

PUBLISHED_LAYERS = 24
PUBLISHED_TOKENS = 300_000_000  # the `final` snapshot of the published trials
PAPER_MODEL = "EleutherAI/pythia-410m"
HUB_PROFILE = "hub"


@dataclass
class Source:
    repo: str
    name: str  # trial name in the run folder
    spec: dict  # the trial's TrialSpec as JSON ({"name": ...} when unknown)
    tokens: int | None  # tokens at `final`, when known


def resolve_source(trial: str | None = None, repo: str | None = None, name: str | None = None) -> Source:
    from kdsae_core.sae.model import paper_trials
    if (trial is None) == (repo is None):
        raise InvalidParameter("give exactly one of --trial (A, B or C: the authors' published trials) and --repo ID.")
    if trial is not None:
        if trial not in PUBLISHED:
            raise InvalidParameter(f"--trial must be one of {', '.join(PUBLISHED)} (got {trial!r}).")
        repo = PUBLISHED[trial].repo
    hub.check_repo_id(repo)
    known = next((t for t, p in PUBLISHED.items() if p.repo == repo), None)
    name = name or known or "hub"
    if not name.replace("-", "").replace("_", "").isalnum():
        raise InvalidParameter(f"--name must be letters, digits, - or _ (got {name!r}).")
    spec = paper_trials()[known].to_json() if known else {"name": name}
    spec["name"] = name
    return Source(repo, name, spec, PUBLISHED_TOKENS if known else None)


def _measure_settings(model, dataset, context, batch_tokens, measure_tokens) -> dict:
    from kdsae_core.train.config import PROFILES
    paper = PROFILES["paper"]
    context = int(context or paper["context"])
    batch = int(batch_tokens or max(context, paper["batch_tokens"] // paper["context"] * context))
    return {"profile": HUB_PROFILE, "model": model or PAPER_MODEL, "dataset": dataset or paper["dataset"],
            "context": context, "batch_tokens": batch, "measure_tokens": int(measure_tokens or paper["measure_tokens"]),
            "device": "cpu"}


# ---- the output folder ------------------------------------------------------------------------------------------
def _earlier_settings(out: Path) -> dict:
    try:
        cfg = json.loads(paths.run_config(out).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return (cfg.get("settings") or {}) if cfg.get("profile") == HUB_PROFILE else {}


def _existing(out: Path, settings: dict) -> dict | None:
    """The config of an earlier download into `out` (merged into), None for a new or empty folder; refuses
    any other content."""
    cfg_path = paths.run_config(out)
    if cfg_path.exists():
        try:
            cfg = json.loads(cfg_path.read_text())
        except json.JSONDecodeError:
            raise RunFolderError(f"{cfg_path} is not valid JSON: use another --out.") from None
        if cfg.get("profile") != HUB_PROFILE:
            raise RunFolderError(f"{out} holds a trained run, not a download: use another --out.")
        if cfg.get("settings") != settings:
            diff = sorted(k for k in set(cfg.get("settings") or {}) | set(settings)
                          if (cfg.get("settings") or {}).get(k) != settings.get(k))
            raise RunFolderError(f"{out} holds a download with other measurement settings ({', '.join(diff)}): "
                                 "use the same options, or another --out.")
        return cfg
    if out.exists() and (not out.is_dir() or any(p.name != ".lock" for p in out.iterdir())):
        raise RunFolderError(f"{out} exists and is not an empty folder or an earlier `kdsae download`: use another --out.")
    return None


def staging_beside(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return make_temp_dir(f".{out.name}.download-", out.parent)


# ---- the authors' .pt layout ------------------------------------------------------------------------------------
def _candidates(layer: int, snapshot: str) -> list[str]:
    names = [paths.published_file(layer, snapshot)]
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
        raise MissingData(f"{src.repo}{f' (revision {revision})' if revision else ''} has no file {cands[0]} "
                          f"(it holds {len(pts)} .pt files{', e.g. ' + pts[0] if pts else ''}).")
    for c in cands:
        if hub.cached(src.repo, c, revision, cache) is not None:
            return c
    return cands[0]


def _done(out: Path, src: Source, layer: int, snap: str, listed: dict, sha256: str | None, revision=None) -> bool:
    """True when `out` already holds this checkpoint converted from the same file (same digest when it is
    known, else the same revision), intact."""
    folder = paths.checkpoint_dir(out, src.name, layer, snap)
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
        rows.append({"trial": src.name, "layer": layer, "step": int(s.get("batch", -1)) + 1,
                     "tokens": int(round(float(s["tokens_M"]) * 1e6)), "mse": s.get("recon_loss"),
                     "l1": s.get("l1_loss"), "loss": None, "L0": s.get("L0"), "lambda": lam,
                     "alive_frac": s.get("frac_alive")})
    return rows


def _tokens(extra: dict, snap: str, src: Source):
    seen = (extra.get("config") or {}).get("tokens_seen") if isinstance(extra.get("config"), dict) else None
    if isinstance(seen, int) and seen > 0:
        return seen
    return src.tokens if snap == FINAL else int(snapshot_tokens(snap))


def _download_pt(out: Path, src: Source, layers, snapshots, revision, cache, settings, old, progress) -> dict:
    from kdsae_core.data.activations import model_display_name
    jobs = [(int(lay), s) for lay in layers for s in snapshots]
    listed = manifest.read_manifest(out) if out.exists() else {}
    listing = hub.list_files(src.repo, revision)
    names = {(lay, s): _choose(lay, s, listing, src, revision, cache) for lay, s in jobs}
    if hub.cache_only():  # everything must be in the cache (or already converted): say so before any work
        missing = [names[j] for j in jobs if hub.cached(src.repo, names[j], revision, cache) is None
                   and not _done(out, src, *j, listed, None, revision)]
        if missing:
            more = f" ({len(missing) - 1} more of the {len(jobs)} files asked for are missing too)" if len(missing) > 1 else ""
            err = hub._missing_offline(src.repo, missing[0], revision, cache)
            raise MissingData(f"{str(err).rstrip('.')}{more}.")
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
            try:
                ck = layouts.load_pt(f.path)
            except BadFile as e:
                raise BadFile(hub.about(f, e)) from None
            shapes.add((ck.d_in, ck.d_sae))
            meta = {"trial": src.spec, "layer": lay, "snapshot": snap, "tokens": _tokens(ck.extra, snap, src),
                    "lambda": lam, "source": {"repo": src.repo, "revision": revision, "commit": f.commit, "file": name,
                                              "sha256": f.sha256, "etag": f.etag, "layout": ck.layout},
                    "source_config": ck.extra.get("config")}
            cfg = checkpoints.sae_cfg(ck.d_in, ck.d_sae, model=model_display_name(settings["model"]), layer=lay,
                                      context=settings["context"], dataset=settings["dataset"], kdsae=meta)
            from kdsae_core.sae.model import SAE
            sae = SAE(ck.d_in, ck.d_sae)
            sae.load_tensors(ck.tensors)
            rel = paths.checkpoint_dir(Path("."), src.name, lay, snap)
            checkpoints.save_checkpoint(staging / rel, sae, cfg)
            converted.append((lay, snap, rel))
            rows = _history(ck.extra, src, lay, lam)
            if rows and (lay not in history or snapshot_tokens(snap) >= history[lay][0]):
                history[lay] = (snapshot_tokens(snap), rows)
        bar.close()
        if len(shapes) > 1:
            raise BadFile(f"the files of {src.repo} disagree on their shapes ((d_in, d_sae) = "
                          f"{', '.join(map(str, sorted(shapes)))}): they are not one run.")
        if shapes and old is not None and {(old.get("d_in"), old.get("d_sae"))} != shapes:
            raise BadFile(f"{src.repo} holds SAEs of shape (d_in, d_sae) = {next(iter(shapes))}, but {out} already "
                          f"holds ({old.get('d_in')}, {old.get('d_sae')}): use another --out.")
        for lay, snap, rel in converted:
            replace_folder(staging / rel, out / rel)
            paths.measurement_file(out, src.name, lay, snap).unlink(missing_ok=True)  # measured from the old file
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"converted": len(converted), "history": {k: v[1] for k, v in history.items()},
            "shape": next(iter(shapes)) if shapes else None, "files": sources}


def _merge_metrics(out: Path, name: str, history: dict[int, list[dict]]) -> None:
    if not history:
        return
    path = paths.run_metrics(out)
    keep = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not (row.get("trial") == name and row.get("layer") in history):
            keep.append(line)
    keep += [json.dumps(r) for layer in sorted(history) for r in history[layer]]
    atomic_write_text(path, "".join(f"{line}\n" for line in keep))


def _write_config(out: Path, old: dict | None, src: Source, settings: dict, revision, result: dict) -> None:
    from kdsae_core.data.activations import model_display_name
    from kdsae_core.measure import list_checkpoints
    cks = list_checkpoints(out)
    if not cks:
        raise MissingData(f"nothing was converted into {out}.")
    first = checkpoints.read_cfg(cks[0].folder)
    cfg = dict(old or {})
    trials = dict(cfg.get("trials") or {})
    trials[src.name] = src.spec
    sources = dict(cfg.get("hub") or {})
    entry = dict(sources.get(src.name) or {})
    files = {**(entry.get("files") or {}), **result["files"]}
    sources[src.name] = {"repo": src.repo, "revision": revision, "files": files}
    labels = sorted({c.snapshot for c in cks}, key=snapshot_tokens)
    cfg.update({
        "settings": settings, "profile": HUB_PROFILE, "model": model_display_name(settings["model"]),
        "model_source": settings["model"], "layers": sorted({c.layer for c in cks}), "d_in": first["d_in"],
        "d_sae": first["d_sae"], "tokens": src.tokens if len(trials) == 1 or cfg.get("tokens") == src.tokens else None,
        "context": settings["context"], "dataset": settings["dataset"], "measure_tokens": settings["measure_tokens"],
        "trials": trials, "snapshots": [{"label": lab} for lab in labels], "hub": sources,
    })
    atomic_write_json(paths.run_config(out), cfg)


# ---- entry points -------------------------------------------------------------------------------------------------
def download_run(out: Path, trial: str | None = None, repo: str | None = None, name: str | None = None,
                 layers=None, snapshots=None, revision: str | None = None, cache: Path | None = None,
                 model: str | None = None, dataset: str | None = None, context: int | None = None,
                 batch_tokens: int | None = None, measure_tokens: int | None = None, progress: bool = True) -> Path:
    """Fetch and convert published checkpoints into the run folder `out`; return it."""
    src = resolve_source(trial, repo, name)
    out = Path(out).expanduser().absolute()
    paths.refuse_results(out, "--out")
    layers = None if layers is None else sorted({int(v) for v in layers})
    if layers is not None and any(v < 0 for v in layers):
        raise InvalidParameter(f"--layers must be 0-based layer numbers (got {layers}).")
    for s in snapshots or ():
        snapshot_tokens(s)  # names a bad label
    given = dict(model=model, dataset=dataset, context=context, batch_tokens=batch_tokens, measure_tokens=measure_tokens)
    earlier = _earlier_settings(out)  # adding to an earlier download: options not given keep its values
    settings = _measure_settings(**{k: v if v is not None else earlier.get(k) for k, v in given.items()})
    old = _existing(out, settings)
    from kdsae_core.hub import kdsae_repo
    if trial is None and kdsae_repo.is_kdsae_repo(src.repo, revision, cache):
        kdsae_repo.download(out, src.repo, layers, snapshots, revision, cache, old, progress)
        return out
    if layers is not None and trial is not None and max(layers) >= PUBLISHED_LAYERS:
        raise InvalidParameter(f"layer {max(layers)} does not exist: the published trials have layers "
                               f"0-{PUBLISHED_LAYERS - 1}.")
    layers = layers if layers is not None else list(range(PUBLISHED_LAYERS))
    snapshots = list(snapshots) if snapshots else list(PUBLISHED_SNAPSHOTS)
    result = _download_pt(out, src, layers, snapshots, revision, cache, settings, old, progress)
    out.mkdir(parents=True, exist_ok=True)
    _write_config(out, old, src, settings, revision, result)
    _merge_metrics(out, src.name, result["history"])
    manifest.write_manifest(out)
    return out


def default_device() -> str:
    """Where published checkpoints are measured unless --device says: the GPU when there is one."""
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def fetch_trial(trial: str, layers=None, snapshots=(FINAL,), revision: str | None = None, cache: Path | None = None,
                out: Path | None = None, progress: bool = False, tokens: int | None = None, device: str | None = None,
                **measure) -> Path:
    """A published trial downloaded, converted and measured into a cache run folder (paths.hub_run_dir): the
    chapters' `source="hub"`. `measure` (model, dataset, context, batch_tokens, measure_tokens) defaults to the
    paper's setting: Pythia-410M on the Pile. Offline with the files missing: MissingData naming the repository,
    the file and how to get it. Checkpoints and measurements already there are reused."""
    if trial not in PUBLISHED:
        raise InvalidParameter(f"trial must be one of {', '.join(PUBLISHED)} (got {trial!r}).")
    out = Path(out) if out is not None else paths.hub_run_dir(trial, revision)
    download_run(out, trial=trial, layers=layers, snapshots=list(snapshots) if snapshots else None, revision=revision,
                 cache=cache, progress=progress, **measure)
    from kdsae_core.measure import list_checkpoints, measure_run
    todo = [c for c in list_checkpoints(out, [trial], layers, snapshots)
            if not paths.measurement_file(out, c.trial, c.layer, c.snapshot).exists()]
    if todo:
        measure_run(out, tokens=tokens, trials=[trial], layers=sorted({c.layer for c in todo}),
                    snapshots=sorted({c.snapshot for c in todo}), progress=progress, device=device or default_device())
    return out


def measure_published_trial(trial: str, **kw) -> list[dict]:
    """The final-snapshot measurement of every layer of a published trial (for `kdsae verify --source hub`)."""
    out = fetch_trial(trial, snapshots=(FINAL,), **kw)
    files = sorted((out / "measurements" / trial).glob(f"layer*_{FINAL}.json"))
    if not files:
        raise MissingData(f"{out} has no final measurements of trial {trial}.")
    return [json.loads(p.read_text()) for p in files]


def report(out: Path) -> str:
    """One line on what a download holds."""
    from kdsae_core.measure import list_checkpoints
    cks = list_checkpoints(out)
    trials = sorted({c.trial for c in cks})
    return (f"{len(cks)} checkpoints ({', '.join(trials)}; layers {', '.join(str(v) for v in sorted({c.layer for c in cks}))}) "
            f"in {out}; measure them with `kdsae measure --run {out}`")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `kdsae download`")
