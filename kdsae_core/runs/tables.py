"""Read an Experiment 2 run folder into tidy pandas tables (the authors' reference data: runs/reference.py).

A run folder (runs/layout.py) holds `config.json`, `metrics.jsonl`,
`measurements/{trial}/layer{LL}_{snapshot}.json` and `summary_{trial}.csv` (one file read and checked:
runs/readers.py). Figures are drawn from the tables built here, so a figure's saved data can be checked against
the files it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from kdsae_core.common import paths
from kdsae_core.common.errors import BadFile, MissingData, RunFolderError
from kdsae_core.common.fileio import read_json_object, sha256_file
from kdsae_core.runs import layout, manifest
from kdsae_core.runs.layout import FINAL, snapshot_tokens
from kdsae_core.runs.readers import MEASUREMENT_SCALARS, PREDICTION_COLUMNS, measurement_row, read_metrics


def format_tokens(n: float) -> str:
    """300000 -> "300k", 300_000_000 -> "300M" (token budgets in titles)."""
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.4g}{suffix}"
    return f"{n:g}"


def model_label(model: str) -> str:
    """A model name as people say it: a local path becomes its last component."""
    return Path(model).name if str(model).startswith(("/", ".")) else str(model)


def layer_span(layers: Iterable[int]) -> str:
    """[0, 1, 2, 3] -> "layers 0-3"; [8, 12, 16] -> "layers 8, 12, 16" (0-based, as in the hook names)."""
    ls = sorted(int(v) for v in layers)
    if not ls:
        return "no layers"
    if len(ls) == 1:
        return f"layer {ls[0]}"
    if ls == list(range(ls[0], ls[-1] + 1)):
        return f"layers {ls[0]}\u2013{ls[-1]}"
    return "layers " + ", ".join(map(str, ls))


@dataclass
class RunData:
    """Everything a figure needs from one run folder (final snapshot unless asked otherwise)."""

    folder: Path
    config: dict
    metrics: pd.DataFrame
    measurements: pd.DataFrame  # one row per (trial, layer, snapshot); columns MEASUREMENT_SCALARS
    predictions: pd.DataFrame  # one row per (trial, layer, snapshot, width)
    importance: dict[tuple[str, int, str], np.ndarray] = field(repr=False)
    summaries: pd.DataFrame  # the summary_{trial}.csv files with a `trial` column

    @property
    def trials(self) -> list[str]:
        return sorted(set(self.measurements["trial"]) | set(self.metrics["trial"]))

    @property
    def layers(self) -> list[int]:
        return sorted(int(v) for v in set(self.measurements["layer"]))

    @property
    def model(self) -> str:
        return model_label(self.config.get("model", "unknown model"))

    @property
    def is_pythia(self) -> bool:
        return "pythia" in self.model.lower()

    @property
    def d_model(self) -> int | None:
        d = self.measurements["d_in"].dropna()
        return int(d.iloc[0]) if len(d) else None

    def only(self, trials) -> "RunData":
        """The same run restricted to some trials."""
        keep = set(trials)
        f = lambda df: df[df["trial"].isin(keep)].reset_index(drop=True)  # noqa: E731
        return RunData(
            self.folder,
            self.config,
            f(self.metrics),
            f(self.measurements),
            f(self.predictions),
            {k: v for k, v in self.importance.items() if k[0] in keep},
            f(self.summaries),
        )

    def final_snapshot(self, trial: str) -> str:
        snaps = self.measurements.loc[self.measurements["trial"] == trial, "snapshot"].unique().tolist()
        if not snaps:
            raise MissingData(f"{self.folder} has no measurements for trial {trial}.")
        return max(snaps, key=snapshot_tokens)

    def layer_table(self, trial: str, snapshot: str | None = None) -> pd.DataFrame:
        """One row per layer of one trial at one snapshot (default: the last one), sorted by layer."""
        snapshot = snapshot or self.final_snapshot(trial)
        m = self.measurements
        out = m[(m["trial"] == trial) & (m["snapshot"] == snapshot)].sort_values("layer").reset_index(drop=True)
        if out.empty:
            raise MissingData(f"{self.folder} has no trial {trial} measurements at snapshot {snapshot}.")
        return out

    def trial_metrics(self, trial: str) -> pd.DataFrame:
        out = self.metrics[self.metrics["trial"] == trial].sort_values(["layer", "tokens"]).reset_index(drop=True)
        if out.empty:
            raise MissingData(f"{layout.run_metrics(self.folder)} has no logged steps for trial {trial}.")
        return out

    def trial_config(self, trial: str) -> dict:
        trials = self.config.get("trials") or {}
        return trials.get(trial, {}) if isinstance(trials, dict) else {}

    def target_l0(self, trial: str) -> float | None:
        c = self.trial_config(trial)
        for holder in (c, c.get("controller") if isinstance(c.get("controller"), dict) else {}):
            for key in ("target_l0", "target_L0", "l0_target", "target"):
                if key in holder and holder[key] is not None:
                    return float(holder[key])
        return None

    def describe_trial(self, trial: str) -> str:
        """ "trial B: lambda 8e-05 fixed, sum L1" or "trial C: adaptive lambda (start 5e-04), target L0 150"."""
        c = self.trial_config(trial)
        lam, form = c.get("lambda", c.get("l1_coeff")), c.get("l1_form", "?")
        controller = c.get("controller")
        adaptive = bool(controller) and controller not in ("none", "fixed") or self.target_l0(trial) is not None
        lam_text = f"{lam:.0e}" if isinstance(lam, (int, float)) else "?"
        if adaptive:
            target = self.target_l0(trial)
            return f"trial {trial}: adaptive \u03bb (start {lam_text}, {form} L1)" + (
                f", target L0 {target:g}" if target is not None else ""
            )
        return f"trial {trial}: \u03bb {lam_text} fixed, {form} L1"

    def describe(self, trial: str | None = None, layers: Iterable[int] | None = None) -> str:
        """What a figure shows: model, layers, width and token budget, all read from config.json."""
        layers = self.layers if layers is None else layers
        tokens = self.config.get("tokens")
        parts = [
            self.model,
            layer_span(layers),
            f"d_sae {int(self.config['d_sae']):,}" if self.config.get("d_sae") else None,
            f"{format_tokens(float(tokens))} training tokens" if tokens else None,
        ]
        text = ", ".join(p for p in parts if p)
        return f"{text} \u2014 {self.describe_trial(trial)}" if trial else text

    def scale_note(self) -> str:
        """One sentence for page headers: which model this is, and that the embedded run is not Pythia."""
        d = f" (d_model {self.d_model})" if self.d_model else ""
        profile = str(self.config.get("profile", ""))
        if self.is_pythia:
            note = ""
        elif profile == "embedded":
            note = " This is the embedded default, not Pythia-410M: the same code at a smaller scale."
        elif "fixture" in profile:
            note = " This is a synthetic TEST FIXTURE, not measured data and not Pythia-410M."
        else:
            note = " This is not Pythia-410M."
        return f"Run `{paths.display_path(self.folder)}`: {self.describe()}{d}.{note}"


# ---- loading ------------------------------------------------------------------------------------------
def _manifest_check(run: Path):
    """path -> path, raising BadFile if the run's MANIFEST.sha256 lists the file with another digest. While a run
    is still training (no status.json) its config and metrics log legitimately run ahead of the manifest."""
    listed = manifest.read_manifest(run)
    growing = set() if layout.run_status(run).exists() else {layout.CONFIG_FILE, layout.METRICS_FILE}

    def verified(path: Path) -> Path:
        rel = Path(path).relative_to(run).as_posix()
        if rel in listed and rel not in growing and Path(path).exists() and sha256_file(path) != listed[rel]:
            raise BadFile(
                f"{path} does not match its manifest sha256 (truncated or corrupted): write it again "
                "(`kdsae measure`, `kdsae train --resume`) or fetch the run again."
            )
        return path

    return verified


def load_run(
    run: Path,
    trials: Iterable[str] | None = None,
    layers: Iterable[int] | None = None,
    snapshots: Iterable[str] | None = (FINAL,),
) -> RunData:
    """Load a run folder. `snapshots=None` loads every snapshot; the default loads `final` only (or, for
    a trial without a `final` file, its last snapshot). Every file read that the run's MANIFEST.sha256 lists
    must match its digest there (a truncated or bit-flipped file is named, never shown)."""
    run = Path(run)
    if not run.is_dir():
        raise RunFolderError(
            f"run folder {run} does not exist: train one with `kdsae train`, or name an existing run folder."
        )
    if not layout.run_config(run).exists():
        raise RunFolderError(f"{run} is not a run folder (no config.json).")
    verified = _manifest_check(run)
    config = read_json_object(verified(layout.run_config(run)))
    want_trials = set(trials) if trials is not None else None
    want_layers = {int(v) for v in layers} if layers is not None else None
    found = _measurement_files(run, want_trials, want_layers)
    measurements, predictions, importance = _measurement_tables(found, snapshots, verified)
    metrics = read_metrics(verified(layout.run_metrics(run)))
    if want_trials is not None:
        metrics = metrics[metrics["trial"].isin(want_trials)]
    if want_layers is not None:
        metrics = metrics[metrics["layer"].isin(want_layers)]
    summaries = _summaries(run, want_trials, verified)
    if measurements.empty and metrics.empty:
        raise RunFolderError(
            f"{run} holds no measurements and no metrics"
            + (f" for trials {sorted(want_trials)}" if want_trials else "")
            + (f" at layers {sorted(want_layers)}" if want_layers else "")
            + "."
        )
    return RunData(run, config, metrics.reset_index(drop=True), measurements, predictions, importance, summaries)


def _measurement_files(run: Path, want_trials, want_layers) -> dict[tuple[str, int], dict[str, Path]]:
    """(trial, layer) -> {snapshot: measurement file} of the selected trials and layers."""
    found: dict[tuple[str, int], dict[str, Path]] = {}
    for path in layout.measurement_files(run):
        key = layout.measurement_key(path)
        if key is None or (want_trials is not None and key[0] not in want_trials):
            continue
        trial, layer, snapshot = key
        if want_layers is not None and layer not in want_layers:
            continue
        snapshot_tokens(snapshot)  # rejects an unknown label early, naming it
        found.setdefault((trial, layer), {})[snapshot] = path
    return found


def _measurement_tables(found: dict, snapshots, verified) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The measurements, predictions and importances of the chosen snapshots of each (trial, layer)."""
    rows, preds, importance = [], [], {}
    for (trial, layer), by_snap in sorted(found.items()):
        chosen = list(by_snap) if snapshots is None else [s for s in snapshots if s in by_snap]
        if not chosen and snapshots is not None and FINAL in snapshots:
            chosen = [max(by_snap, key=snapshot_tokens)]
        for snap in chosen:
            row, imp, pred = measurement_row(verified(by_snap[snap]), trial, layer, snap)
            rows.append(row)
            preds.extend(pred)
            importance[(trial, layer, snap)] = imp
    measurements = pd.DataFrame(rows, columns=["trial", "layer", "snapshot", *MEASUREMENT_SCALARS])
    for col in ("alpha", "g_alpha", "d_star_S", "L_inf"):  # undefined (None) where alpha is: NaN, not objects
        measurements[col] = pd.to_numeric(measurements[col])
    predictions = pd.DataFrame(preds, columns=["trial", "layer", "snapshot", "width", *PREDICTION_COLUMNS])
    return measurements, predictions, importance


def _summaries(run: Path, want_trials, verified) -> pd.DataFrame:
    """The summary_{trial}.csv files of the selected trials, with a `trial` column."""
    summaries = []
    for path in layout.summary_files(run):
        trial = layout.summary_trial(path)
        if want_trials is None or trial in want_trials:
            try:
                summaries.append(pd.read_csv(verified(path)).assign(trial=trial))
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
                raise BadFile(f"{path} is not a readable CSV ({e}).") from None
    return pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame(columns=["trial", "layer"])


def combine_runs(runs: list[RunData]) -> RunData:
    """Several run folders of one model (e.g. one per published trial) as one RunData."""
    if not runs:
        raise MissingData("no run folders to combine.")
    models = {r.model for r in runs}
    if len(models) > 1:
        raise RunFolderError(f"cannot combine runs of different models ({', '.join(sorted(models))}).")
    if len(runs) == 1:
        return runs[0]
    config = dict(runs[0].config)
    config["trials"] = {k: v for r in runs for k, v in (r.config.get("trials") or {}).items()}
    config["layers"] = sorted({int(v) for r in runs for v in (r.config.get("layers") or [])})
    tokens = {r.config.get("tokens") for r in runs}
    if len(tokens) > 1:  # budgets differ: say so rather than show one of them
        config["tokens"] = None
    cat = lambda frames: pd.concat(frames, ignore_index=True)  # noqa: E731
    return RunData(
        Path(runs[0].folder),
        config,
        cat([r.metrics for r in runs]),
        cat([r.measurements for r in runs]),
        cat([r.predictions for r in runs]),
        {k: v for r in runs for k, v in r.importance.items()},
        cat([r.summaries for r in runs]),
    )
