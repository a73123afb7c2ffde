"""The model card (README.md) of an export: front matter for the hub (`library_name: saelens`), what the SAEs
are, how to load them, the training configuration and the measured metrics, all read from the run folder."""

from __future__ import annotations

import json
from pathlib import Path

from kdsae_core.common.fileio import read_json_object
from kdsae_core.runs import layout
from kdsae_core.runs.layout import Checkpoint, list_checkpoints, snapshot_tokens
from kdsae_core.runs.tables import format_tokens


def model_card(folder: Path, repo: str | None = None) -> str:
    """README.md of an export: front matter for the hub, what the SAEs are, how to load them, config, metrics."""
    cfg = read_json_object(layout.run_config(folder))
    cks = list_checkpoints(folder)
    model = str(cfg.get("model") or "unknown model")
    trials = sorted({c.trial for c in cks})
    return (
        "\n".join(_front_matter(model))
        + _about(cfg, cks, model, trials)
        + _usage(folder, cfg, trials, _example_sae_id(cks), repo)
    )


def _front_matter(model: str) -> list[str]:
    front = ["---", "library_name: saelens", "tags:", "  - sparse-autoencoder", "  - saelens", "  - kdsae"]
    if "/" in model and not model.startswith((".", "/", "~")):  # a hub model id, not a local path
        front.append(f"base_model: {model}")
    return front + ["license: mit", "---", ""]


def _example_sae_id(cks: list[Checkpoint]) -> str:
    """The folder of the first (trial, layer)'s last snapshot: the SAE the loading example names."""
    first = max(
        (c for c in cks if (c.trial, c.layer) == (cks[0].trial, cks[0].layer)),
        key=lambda c: snapshot_tokens(c.snapshot),
    )
    return layout.checkpoint_dir(Path(""), first.trial, first.layer, first.snapshot).as_posix()


def _about(cfg: dict, cks: list[Checkpoint], model: str, trials: list[str]) -> str:
    """The title, what the SAEs are (and where a download came from), and the files of the export."""
    layers = sorted({c.layer for c in cks})
    snaps = sorted({c.snapshot for c in cks}, key=snapshot_tokens)
    tokens = cfg.get("tokens")
    source = cfg.get("hub")
    source_text = (
        (
            "\nConverted from the published checkpoints of "
            + ", ".join(f"`{v.get('repo')}` (trial {k})" for k, v in sorted(source.items()))
            + " with `kdsae download` (b_pre folded into b_dec/b_enc exactly).\n"
        )
        if isinstance(source, dict)
        else ""
    )
    return f"""# Sparse autoencoders on {model} ({", ".join(f"trial {t}" for t in trials)})

Standard ReLU SAEs (z = ReLU((x − b_dec) W_enc + b_enc), x̂ = z W_dec + b_dec) on the residual stream
(`blocks.{{layer}}.hook_resid_post`) of **{model}**, layers {", ".join(map(str, layers))}, d_in {cfg.get("d_in")},
d_sae {cfg.get("d_sae")}{f", {format_tokens(float(tokens))} training tokens" if tokens else ""}; snapshots
{", ".join(snaps)}. Written by [kdsae](https://arxiv.org/abs/2604.04037), the reproducible companion to
*Geometric Limits of Knowledge Distillation: A Minimum-Width Theorem via Superposition Theory*.
{source_text}
## Files

- `checkpoints/{{trial}}/layer{{LL}}/{{snapshot}}/` — `cfg.json` + `sae_weights.safetensors` (SAELens format)
- `measurements/{{trial}}/layer{{LL}}_{{snapshot}}.json` — per-checkpoint measurements; `summary_{{trial}}.csv`
- `config.json` — the full training configuration; `metrics.jsonl` — the training curves
- `MANIFEST.sha256` — sha256 of every file (`sha256sum -c MANIFEST.sha256`)

"""


def _usage(folder: Path, cfg: dict, trials: list[str], sae_id: str, repo: str | None) -> str:
    """How to load the SAEs, the training configuration, and the measured metrics."""
    settings = {k: v for k, v in (cfg.get("settings") or {}).items()}
    trial_text = "\n".join(
        f"- **{t}**: " + json.dumps((cfg.get("trials") or {}).get(t, {}), sort_keys=True) for t in trials
    )
    load_hub = (
        f'sae = SAE.from_pretrained("{repo}", "{sae_id}")\n'
        if repo
        else f'sae = SAE.from_pretrained("ORG/NAME", "{sae_id}")  # once published\n'
    )
    return f"""## Loading

```python
from sae_lens import SAE
sae = SAE.load_from_disk("{sae_id}")            # a downloaded copy
{load_hub}```

or, with kdsae: `kdsae download --repo {repo or "ORG/NAME"} --out RUN` then `kdsae measure --run RUN`.

## Training configuration

Settings (`config.json`):

```json
{json.dumps(settings, indent=1, sort_keys=True)}
```

Trials:

{trial_text}

## Measured metrics

{_metrics_table(folder)}"""


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _metrics_table(folder: Path) -> str:
    """The last snapshot of each (trial, layer) as a markdown table."""
    rows = [read_json_object(p) for p in layout.measurement_files(folder)]
    if not rows:
        return "No measurements yet: run `kdsae measure --run RUN` before exporting to include them.\n"
    last: dict[tuple, dict] = {}
    for m in rows:
        key = (m.get("trial"), int(m["layer"]))
        if key not in last or snapshot_tokens(m["snapshot"]) > snapshot_tokens(last[key]["snapshot"]):
            last[key] = m
    cols = [
        ("trial", "trial"),
        ("layer", "layer"),
        ("snapshot", "snapshot"),
        ("avg_active", "L0"),
        ("F_alive", "alive F"),
        ("dead", "dead"),
        ("alpha", "α"),
        ("g_alpha", "g(α)"),
        ("d_star_S", "d*_S"),
        ("mse", "MSE"),
        ("explained_variance", "explained var."),
        ("measure_tokens", "tokens measured"),
    ]
    out = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for key in sorted(last):
        m = last[key]
        out.append("| " + " | ".join(_fmt(m.get(k)) for k, _ in cols) + " |")
    n_all = len(rows)
    return (
        "\n".join(out) + f"\n\nLast snapshot of each (trial, layer); all {n_all} measurements (every snapshot, with "
        "the sorted E[z²] importances and predicted floors) are in `measurements/`.\n"
    )
