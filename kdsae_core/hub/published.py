"""Published checkpoints -> run folders (runs/layout.py): the three trials the authors put on the hub, any
repository in their `sae_layer{LL}_{snapshot}.pt` layout (authors_repo.py), and runs published by
`kdsae publish` (kdsae_repo.py).

`download_run` converts the selected files (verified by client.py) into checkpoint folders and writes
config.json, metrics.jsonl (the training history stored in the files) and MANIFEST.sha256. Everything is
converted into a staging folder beside --out first: a bad file leaves --out as it was. `fetch_trial` adds the
measurement (the chapters' `source="hub"` and `kdsae verify --source hub`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from kdsae_core.common import paths
from kdsae_core.common.errors import InvalidParameter, MissingData, RunFolderError
from kdsae_core.common.fileio import atomic_write_json, atomic_write_text, read_json_object
from kdsae_core.data.activations import model_display_name
from kdsae_core.hub import authors_repo, kdsae_repo
from kdsae_core.hub import client as hub
from kdsae_core.hub.authors_repo import Source
from kdsae_core.hub.published_trials import PUBLISHED, PUBLISHED_SNAPSHOTS
from kdsae_core.measure import measure_run
from kdsae_core.runs import checkpoints, layout, manifest
from kdsae_core.runs.layout import FINAL, list_checkpoints, snapshot_tokens
from kdsae_core.sae.model import paper_trials
from kdsae_core.train.config import PROFILES

PUBLISHED_LAYER_COUNT = 24  # layers 0-23 of Pythia-410M, every one in each published trial
PUBLISHED_TOKENS = 300_000_000  # the `final` snapshot of the published trials
PAPER_MODEL = "EleutherAI/pythia-410m"
HUB_PROFILE = "hub"


def resolve_source(trial: str | None = None, repo: str | None = None, name: str | None = None) -> Source:
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
    paper = PROFILES["paper"]
    context = int(context or paper["context"])
    batch = int(batch_tokens or max(context, paper["batch_tokens"] // paper["context"] * context))
    return {
        "profile": HUB_PROFILE,
        "model": model or PAPER_MODEL,
        "dataset": dataset or paper["dataset"],
        "context": context,
        "batch_tokens": batch,
        "measure_tokens": int(measure_tokens or paper["measure_tokens"]),
        "device": "cpu",
    }


# ---- the output folder ------------------------------------------------------------------------------------------
def _earlier_settings(out: Path) -> dict:
    try:
        cfg = json.loads(layout.run_config(out).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return (cfg.get("settings") or {}) if cfg.get("profile") == HUB_PROFILE else {}


def _existing(out: Path, settings: dict) -> dict | None:
    """The config of an earlier download into `out` (merged into), None for a new or empty folder; refuses
    any other content."""
    cfg_path = layout.run_config(out)
    if cfg_path.exists():
        try:
            cfg = json.loads(cfg_path.read_text())
        except json.JSONDecodeError:
            raise RunFolderError(f"{cfg_path} is not valid JSON: use another --out.") from None
        if cfg.get("profile") != HUB_PROFILE:
            raise RunFolderError(f"{out} holds a trained run, not a download: use another --out.")
        if cfg.get("settings") != settings:
            diff = sorted(
                k
                for k in set(cfg.get("settings") or {}) | set(settings)
                if (cfg.get("settings") or {}).get(k) != settings.get(k)
            )
            raise RunFolderError(
                f"{out} holds a download with other measurement settings ({', '.join(diff)}): "
                "use the same options, or another --out."
            )
        return cfg
    if out.exists() and (not out.is_dir() or any(p.name != layout.LOCK_FILE for p in out.iterdir())):
        raise RunFolderError(
            f"{out} exists and is not an empty folder or an earlier `kdsae download`: use another --out."
        )
    return None


def _merge_metrics(out: Path, name: str, history: dict[int, list[dict]]) -> None:
    if not history:
        return
    path = layout.run_metrics(out)
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
    cfg.update(
        {
            "settings": settings,
            "profile": HUB_PROFILE,
            "model": model_display_name(settings["model"]),
            "model_source": settings["model"],
            "layers": sorted({c.layer for c in cks}),
            "d_in": first["d_in"],
            "d_sae": first["d_sae"],
            "tokens": src.tokens if len(trials) == 1 or cfg.get("tokens") == src.tokens else None,
            "context": settings["context"],
            "dataset": settings["dataset"],
            "measure_tokens": settings["measure_tokens"],
            "trials": trials,
            "snapshots": [{"label": lab} for lab in labels],
            "hub": sources,
        }
    )
    atomic_write_json(layout.run_config(out), cfg)


# ---- entry points -------------------------------------------------------------------------------------------------
def download_run(
    out: Path,
    trial: str | None = None,
    repo: str | None = None,
    name: str | None = None,
    layers=None,
    snapshots=None,
    revision: str | None = None,
    cache: Path | None = None,
    model: str | None = None,
    dataset: str | None = None,
    context: int | None = None,
    batch_tokens: int | None = None,
    measure_tokens: int | None = None,
    progress: bool = True,
) -> Path:
    """Fetch and convert published checkpoints into the run folder `out`; return it."""
    src = resolve_source(trial, repo, name)
    out = Path(out).expanduser().absolute()
    paths.refuse_results(out, "--out")
    layers = None if layers is None else sorted({int(v) for v in layers})
    if layers is not None and any(v < 0 for v in layers):
        raise InvalidParameter(f"--layers must be 0-based layer numbers (got {layers}).")
    for s in snapshots or ():
        snapshot_tokens(s)  # names a bad label
    given = dict(
        model=model, dataset=dataset, context=context, batch_tokens=batch_tokens, measure_tokens=measure_tokens
    )
    earlier = _earlier_settings(out)  # adding to an earlier download: options not given keep its values
    settings = _measure_settings(**{k: v if v is not None else earlier.get(k) for k, v in given.items()})
    old = _existing(out, settings)
    if trial is None and kdsae_repo.is_kdsae_repo(src.repo, revision, cache):
        kdsae_repo.download(out, src.repo, layers, snapshots, revision, cache, old, progress)
        return out
    if layers is not None and trial is not None and max(layers) >= PUBLISHED_LAYER_COUNT:
        raise InvalidParameter(
            f"layer {max(layers)} does not exist: the published trials have layers 0-{PUBLISHED_LAYER_COUNT - 1}."
        )
    layers = layers if layers is not None else list(range(PUBLISHED_LAYER_COUNT))
    snapshots = list(snapshots) if snapshots else list(PUBLISHED_SNAPSHOTS)
    result = authors_repo.download(out, src, layers, snapshots, revision, cache, settings, old, progress)
    out.mkdir(parents=True, exist_ok=True)
    _write_config(out, old, src, settings, revision, result)
    _merge_metrics(out, src.name, result["history"])
    manifest.write_manifest(out)
    return out


def default_device() -> str:
    """Where published checkpoints are measured unless --device says: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def fetch_trial(
    trial: str,
    layers=None,
    snapshots=(FINAL,),
    revision: str | None = None,
    cache: Path | None = None,
    out: Path | None = None,
    progress: bool = False,
    tokens: int | None = None,
    device: str | None = None,
    **measure,
) -> Path:
    """A published trial downloaded, converted and measured into a cache run folder (paths.hub_run_dir): the
    chapters' `source="hub"`. `measure` (model, dataset, context, batch_tokens, measure_tokens) defaults to the
    paper's setting: Pythia-410M on the Pile. Offline with the files missing: MissingData naming the repository,
    the file and how to get it. Checkpoints and measurements already there are reused."""
    if trial not in PUBLISHED:
        raise InvalidParameter(f"trial must be one of {', '.join(PUBLISHED)} (got {trial!r}).")
    out = Path(out) if out is not None else paths.hub_run_dir(trial, revision)
    download_run(
        out,
        trial=trial,
        layers=layers,
        snapshots=list(snapshots) if snapshots else None,
        revision=revision,
        cache=cache,
        progress=progress,
        **measure,
    )
    todo = [
        c
        for c in list_checkpoints(out, [trial], layers, snapshots)
        if not layout.measurement_file(out, c.trial, c.layer, c.snapshot).exists()
    ]
    if todo:
        measure_run(
            out,
            tokens=tokens,
            trials=[trial],
            layers=sorted({c.layer for c in todo}),
            snapshots=sorted({c.snapshot for c in todo}),
            progress=progress,
            device=device or default_device(),
        )
    return out


def measure_published_trial(trial: str, **kw) -> list[dict]:
    """The final-snapshot measurement of every layer of a published trial (for `kdsae verify --source hub`)."""
    out = fetch_trial(trial, snapshots=(FINAL,), **kw)
    files = sorted(layout.measurement_dir(out, trial).glob(f"layer*_{FINAL}.json"))
    if not files:
        raise MissingData(f"{out} has no final measurements of trial {trial}.")
    return [read_json_object(p) for p in files]


def report(out: Path) -> str:
    """One line on what a download holds."""
    cks = list_checkpoints(out)
    trials = sorted({c.trial for c in cks})
    return (
        f"{len(cks)} checkpoints ({', '.join(trials)}; layers "
        f"{', '.join(str(v) for v in sorted({c.layer for c in cks}))}) "
        f"in {out}; measure them with `kdsae measure --run {out}`"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `kdsae download`")
