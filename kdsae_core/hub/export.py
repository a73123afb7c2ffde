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

import json
import os
import shutil
from pathlib import Path

from kdsae_core.runs import checkpoints
from kdsae_core.runs import manifest
from kdsae_core.common import paths
from kdsae_core.common.errors import BadFile, InvalidParameter, MissingData, RunFolderError
from kdsae_core.common.fileio import atomic_write_json, atomic_write_text, make_temp_dir, replace_folder
from kdsae_core.runs.tables import format_tokens, snapshot_tokens

EXPORTED_TOP = ("config.json", "metrics.jsonl")
NOT_EXPORTED = ("state", ".lock", "status.json", "MANIFEST.sha256", paths.MODEL_CARD_FILE)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _files(run: Path) -> list[str]:
    """The run's exported files other than checkpoints: config, metrics, summaries, measurements."""
    names = [n for n in EXPORTED_TOP if (run / n).exists()]
    names += sorted(p.name for p in run.glob("summary_*.csv"))
    names += sorted(str(p.relative_to(run)) for p in (run / "measurements").glob("*/layer*_*.json"))
    return names


def _verified(run: Path, listed: dict, rel: str) -> None:
    if rel not in listed:
        raise BadFile(f"{run / rel} is not listed in {paths.run_manifest(run)}, so it cannot be verified: "
                      "re-run `kdsae measure` (it rewrites the manifest) or remove the file.")
    problems = manifest.verify_manifest(run, only=[rel])
    if problems:
        raise BadFile(problems[0])


def _stage(run: Path, staging: Path, repo: str | None) -> int:
    from kdsae_core.measure import list_checkpoints
    listed = manifest.read_manifest(run)
    if not listed:
        raise BadFile(f"{run} has no MANIFEST.sha256, so its files cannot be verified: re-run `kdsae measure --run {run}` "
                      "to write one.")
    cks = list_checkpoints(run)
    if not cks:
        raise MissingData(f"{run} has no checkpoints to export.")
    for c in cks:
        folder_rel = c.folder.relative_to(run)
        weights = str(folder_rel / checkpoints.WEIGHTS_FILE)
        _verified(run, listed, str(folder_rel / checkpoints.CFG_FILE))
        if weights not in listed:
            raise BadFile(f"{run / weights} is not listed in {paths.run_manifest(run)}, so it cannot be verified.")
        _, cfg = checkpoints.load_checkpoint(c.folder, expected_sha256=listed[weights])  # digest, names, shapes
        _link_or_copy(c.folder / checkpoints.WEIGHTS_FILE, staging / weights)
        atomic_write_json(staging / folder_rel / checkpoints.CFG_FILE, checkpoints.saelens_cfg(cfg))
    for rel in _files(run):
        _verified(run, listed, rel)
        _link_or_copy(run / rel, staging / rel)
    atomic_write_text(staging / paths.MODEL_CARD_FILE, model_card(staging, repo))
    manifest.write_manifest(staging)
    return len(cks)


def export_run(run: Path, to: Path, repo: str | None = None, force: bool = False) -> Path:
    """Export `run` into `to` (new or empty; with `force`, an earlier export there is replaced)."""
    run, to = Path(run).expanduser().absolute(), Path(to).expanduser().absolute()
    if not paths.run_config(run).exists():
        raise RunFolderError(f"{run} is not a run folder (no config.json).")
    paths.refuse_results(to, "--to")
    if to.resolve() == run.resolve() or run.resolve() in to.resolve().parents:
        raise InvalidParameter(f"--to {to} is inside the run folder {run}: choose a folder outside it.")
    if to.resolve() in run.resolve().parents:
        raise InvalidParameter(f"--to {to} contains the run folder {run}: choose another folder.")
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        if not force:
            raise RunFolderError(f"{to} exists and is not empty: pass --force to replace it, or choose another --to.")
        if not (to / "MANIFEST.sha256").exists() or not (to / paths.MODEL_CARD_FILE).exists():
            raise RunFolderError(f"{to} is not an earlier export (no README.md and MANIFEST.sha256); it is not "
                                 "replaced even with --force: choose another --to.")
    to.parent.mkdir(parents=True, exist_ok=True)
    staging = make_temp_dir(f".{to.name}.export-", to.parent)
    try:
        _stage(run, staging, repo)
        replace_folder(staging, to)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return to


# ---- the model card -----------------------------------------------------------------------------------------
def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _metrics_table(folder: Path) -> str:
    rows = []
    for p in sorted((folder / "measurements").glob("*/layer*_*.json")):
        m = json.loads(p.read_text())
        rows.append(m)
    if not rows:
        return "No measurements yet: run `kdsae measure --run RUN` before exporting to include them.\n"
    last: dict[tuple, dict] = {}
    for m in rows:
        key = (m.get("trial"), int(m["layer"]))
        if key not in last or snapshot_tokens(m["snapshot"]) > snapshot_tokens(last[key]["snapshot"]):
            last[key] = m
    cols = [("trial", "trial"), ("layer", "layer"), ("snapshot", "snapshot"), ("avg_active", "L0"),
            ("F_alive", "alive F"), ("dead", "dead"), ("alpha", "α"), ("g_alpha", "g(α)"), ("d_star_S", "d*_S"),
            ("mse", "MSE"), ("explained_variance", "explained var."), ("measure_tokens", "tokens measured")]
    out = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for key in sorted(last):
        m = last[key]
        out.append("| " + " | ".join(_fmt(m.get(k)) for k, _ in cols) + " |")
    n_all = len(rows)
    return ("\n".join(out) + f"\n\nLast snapshot of each (trial, layer); all {n_all} measurements (every snapshot, with "
            "the sorted E[z²] importances and predicted floors) are in `measurements/`.\n")


def model_card(folder: Path, repo: str | None = None) -> str:
    """README.md of an export: front matter for the hub, what the SAEs are, how to load them, config, metrics."""
    cfg = json.loads(paths.run_config(folder).read_text())
    from kdsae_core.measure import list_checkpoints
    cks = list_checkpoints(folder)
    model = str(cfg.get("model") or "unknown model")
    is_hub_id = "/" in model and not model.startswith((".", "/", "~"))
    trials = sorted({c.trial for c in cks})
    layers = sorted({c.layer for c in cks})
    snaps = sorted({c.snapshot for c in cks}, key=snapshot_tokens)
    first = max((c for c in cks if (c.trial, c.layer) == (cks[0].trial, cks[0].layer)),
                key=lambda c: snapshot_tokens(c.snapshot))
    sae_id = f"checkpoints/{first.trial}/layer{first.layer:02d}/{first.snapshot}"
    front = ["---", "library_name: saelens", "tags:", "  - sparse-autoencoder", "  - saelens", "  - kdsae"]
    if is_hub_id:
        front.append(f"base_model: {model}")
    front += ["license: mit", "---", ""]
    tokens = cfg.get("tokens")
    settings = {k: v for k, v in (cfg.get("settings") or {}).items()}
    trial_text = "\n".join(f"- **{t}**: " + json.dumps((cfg.get("trials") or {}).get(t, {}), sort_keys=True)
                           for t in trials)
    source = cfg.get("hub")
    source_text = ("\nConverted from the published checkpoints of " +
                   ", ".join(f"`{v.get('repo')}` (trial {k})" for k, v in sorted(source.items())) +
                   " with `kdsae download` (b_pre folded into b_dec/b_enc exactly).\n") if isinstance(source, dict) else ""
    load_hub = (f'sae = SAE.from_pretrained("{repo}", "{sae_id}")\n' if repo else
                f'sae = SAE.from_pretrained("ORG/NAME", "{sae_id}")  # once published\n')
    body = f"""# Sparse autoencoders on {model} ({', '.join(f'trial {t}' for t in trials)})

Standard ReLU SAEs (z = ReLU((x − b_dec) W_enc + b_enc), x̂ = z W_dec + b_dec) on the residual stream
(`blocks.{{layer}}.hook_resid_post`) of **{model}**, layers {', '.join(map(str, layers))}, d_in {cfg.get('d_in')},
d_sae {cfg.get('d_sae')}{f', {format_tokens(float(tokens))} training tokens' if tokens else ''}; snapshots
{', '.join(snaps)}. Written by [kdsae](https://arxiv.org/abs/2604.04037), the reproducible companion to
*Geometric Limits of Knowledge Distillation: A Minimum-Width Theorem via Superposition Theory*.
{source_text}
## Files

- `checkpoints/{{trial}}/layer{{LL}}/{{snapshot}}/` — `cfg.json` + `sae_weights.safetensors` (SAELens format)
- `measurements/{{trial}}/layer{{LL}}_{{snapshot}}.json` — per-checkpoint measurements; `summary_{{trial}}.csv`
- `config.json` — the full training configuration; `metrics.jsonl` — the training curves
- `MANIFEST.sha256` — sha256 of every file (`sha256sum -c MANIFEST.sha256`)

## Loading

```python
from sae_lens import SAE
sae = SAE.load_from_disk("{sae_id}")            # a downloaded copy
{load_hub}```

or, with kdsae: `kdsae download --repo {repo or 'ORG/NAME'} --out RUN` then `kdsae measure --run RUN`.

## Training configuration

Settings (`config.json`):

```json
{json.dumps(settings, indent=1, sort_keys=True)}
```

Trials:

{trial_text}

## Measured metrics

{_metrics_table(folder)}"""
    return "\n".join(front) + body
