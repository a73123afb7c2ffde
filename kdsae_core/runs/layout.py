"""The run folder as a format (ARCHITECTURE.md), declared once: every file and folder name, the paths built from
them, and the iterators over a run's checkpoints and measurements.

    RUN/config.json                                        the run's settings and trials
    RUN/metrics.jsonl                                      the training curves, one JSON object a line
    RUN/status.json                                        written when training has finished
    RUN/MANIFEST.sha256                                    sha256 of every file (`sha256sum -c`)
    RUN/checkpoints/{trial}/layer{LL}/{snapshot}/          cfg.json + sae_weights.safetensors (SAELens format)
    RUN/measurements/{trial}/layer{LL}_{snapshot}.json     one measured checkpoint
    RUN/summary_{trial}.csv                                one row per layer, its last snapshot
    RUN/state/                                             the resumable trainer state (never exported)
    RUN/.lock                                              held by the process writing the run

A snapshot label is a token count (`50M`, `150k`) or `final`. An export adds the model card README.md; the
authors' published checkpoints are named `sae_layer{LL}_{snapshot}.pt`.
Torch-free: `kdsae` starts without importing torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from kdsae_core.common.errors import BadFile
from kdsae_core.common.locks import LOCK_NAME

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
STATUS_FILE = "status.json"
MANIFEST_FILE = "MANIFEST.sha256"
CHECKPOINTS_DIR = "checkpoints"
MEASUREMENTS_DIR = "measurements"
STATE_DIR = "state"
LOCK_FILE = LOCK_NAME
SUMMARY_PREFIX = "summary_"
SUMMARY_GLOB = f"{SUMMARY_PREFIX}*.csv"
# A checkpoint folder, in SAELens' format:
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
# An export (`kdsae export`, `kdsae publish`) adds its model card:
MODEL_CARD_FILE = "README.md"
MEASUREMENT_GLOB = "*/layer*_*.json"  # under measurements/: {trial}/layer{LL}_{snapshot}.json

FINAL = "final"
_SNAPSHOT = re.compile(r"^(\d+(?:\.\d+)?)([kMB]?)$")
_MEASUREMENT_NAME = re.compile(r"^layer(\d+)_(.+)\.json$")


def snapshot_tokens(label: str) -> float:
    """Sort key of a snapshot label: "150k" -> 150e3, "50M" -> 50e6, "final" -> inf."""
    if label == FINAL:
        return math.inf
    m = _SNAPSHOT.match(label)
    if not m:
        raise BadFile(f"snapshot label {label!r} is neither a token count (like 50M or 150k) nor 'final'.")
    return float(m.group(1)) * {"": 1, "k": 1e3, "M": 1e6, "B": 1e9}[m.group(2)]


# ---- paths ------------------------------------------------------------------------------------------------------
def run_config(run: Path) -> Path:
    return Path(run) / CONFIG_FILE


def run_metrics(run: Path) -> Path:
    return Path(run) / METRICS_FILE


def run_status(run: Path) -> Path:
    return Path(run) / STATUS_FILE


def run_manifest(run: Path) -> Path:
    return Path(run) / MANIFEST_FILE


def checkpoints_root(run: Path) -> Path:
    return Path(run) / CHECKPOINTS_DIR


def checkpoint_dir(run: Path, trial: str, layer: int, snapshot: str) -> Path:
    return checkpoints_root(run) / trial / f"layer{layer:02d}" / snapshot


def measurements_root(run: Path) -> Path:
    return Path(run) / MEASUREMENTS_DIR


def measurement_dir(run: Path, trial: str) -> Path:
    return measurements_root(run) / trial


def measurement_file(run: Path, trial: str, layer: int, snapshot: str) -> Path:
    return measurement_dir(run, trial) / f"layer{layer:02d}_{snapshot}.json"


def summary_file(run: Path, trial: str) -> Path:
    return Path(run) / f"{SUMMARY_PREFIX}{trial}.csv"


def summary_trial(path: Path) -> str:
    """The trial a summary file is of: summary_B.csv -> B."""
    return Path(path).stem[len(SUMMARY_PREFIX) :]


def summary_files(run: Path) -> list[Path]:
    return sorted(Path(run).glob(SUMMARY_GLOB))


def train_state_dir(run: Path) -> Path:
    """Resumable trainer state (optimizer, controller, data position, RNG) of the last snapshot."""
    return Path(run) / STATE_DIR


def published_file(layer: int, snapshot: str) -> str:
    """Name of one of the authors' published checkpoints: `sae_layer{LL}_{snapshot}.pt`."""
    return f"sae_layer{layer:02d}_{snapshot}.pt"


# ---- what a run holds -------------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    trial: str
    layer: int
    snapshot: str
    folder: Path


def list_checkpoints(run: Path, trials=None, layers=None, snapshots=None) -> list[Checkpoint]:
    """The run's checkpoint folders (those with a cfg.json), optionally only some trials, layers and snapshots,
    sorted by trial, layer and snapshot tokens."""
    root = checkpoints_root(run)
    out = []
    for folder in sorted(root.glob("*/layer*/*")) if root.is_dir() else []:
        if not (folder / CFG_FILE).exists():
            continue
        trial, layer, snap = folder.parent.parent.name, int(folder.parent.name[len("layer") :]), folder.name
        if (
            (trials is None or trial in trials)
            and (layers is None or layer in layers)
            and (snapshots is None or snap in snapshots)
        ):
            out.append(Checkpoint(trial, layer, snap, folder))
    return sorted(out, key=lambda c: (c.trial, c.layer, snapshot_tokens(c.snapshot)))


def measurement_files(run: Path) -> list[Path]:
    """Every file under measurements/ named like a measurement, sorted by path."""
    root = measurements_root(run)
    return sorted(root.glob(MEASUREMENT_GLOB)) if root.is_dir() else []


def measurement_key(path: Path) -> tuple[str, int, str] | None:
    """(trial, layer, snapshot) of a measurement file, None when its name is not layer{LL}_{snapshot}.json."""
    match = _MEASUREMENT_NAME.match(Path(path).name)
    return (Path(path).parent.name, int(match.group(1)), match.group(2)) if match else None
