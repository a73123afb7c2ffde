"""Experiment 2 training (DESIGN.md section 4): one SAE per (trial, layer), ALL fed from the same forward
pass of the language model per batch, with K evenly spaced snapshots, a per-step metrics log and exact
resume.

Run folder (DESIGN.md section 5, paths.py): config.json, metrics.jsonl, MANIFEST.sha256,
checkpoints/{trial}/layer{LL}/{snapshot}/, state/ (resumable, removed when the run completes), status.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import activations as acts
from . import checkpoints, manifest, paths, train_state
from .errors import InvalidParameter, KdsaeError, RunFolderError
from .fileio import atomic_write_json, atomic_write_text
from .run_data import format_tokens
from .runlock import run_lock
from .sae import SAEUnit, TrialSpec, paper_trials, pilot_trial
from .toy import stream_seed

PROFILES: dict[str, dict] = {
    # Sized so the three trials on all 6 MiniLM layers train and measure in well under 30 minutes on 2 cores.
    "embedded": dict(model="embedded", dataset="embedded", d_sae=2048, tokens=300_000, n_snapshots=5,
                     batch_tokens=512, context=128, device="cpu", dtype="fp32", measure_tokens=100_000,
                     alive_window_tokens=100_000),
    # As the authors ran it (needs a GPU and the hub).
    "paper": dict(model="EleutherAI/pythia-410m", dataset="monology/pile-uncopyrighted", d_sae=32_768,
                  tokens=300_000_000, n_snapshots=6, batch_tokens=32_768, context=1024, device="cuda",
                  dtype="bf16", measure_tokens=1_000_000, alive_window_tokens=10_000_000),
}
ACTIVATION_LIMIT = 1e6  # |x| above this (or non-finite) stops the run: the forward pass has blown up
STATUS_FILE = "status.json"


class NumericalFault(KdsaeError):
    """A non-finite loss or exploding activations: the run stopped, its last good state intact."""


class _Stop(Exception):
    """SIGINT/SIGTERM (or a test's stop_after_step): a resumable state has been written."""


@dataclass
class SAETrainConfig:
    """Experiment 2 settings; the field names are the CLI options and the notebooks' parameters."""

    profile: str = "embedded"
    model: str = "embedded"
    layers: list[int] | None = None  # None: every layer of the model
    trials: list[str] = field(default_factory=lambda: ["A", "B", "C"])  # A, B, C or pilots like P7e-04
    d_sae: int | None = 2048
    expansion: float | None = None  # d_sae = expansion * d_model (instead of d_sae)
    tokens: int = 300_000
    n_snapshots: int = 5
    batch_tokens: int = 512
    context: int = 128
    dataset: str = "embedded"
    device: str = "cpu"
    dtype: str = "fp32"
    lr: float = 3e-4
    grad_clip: float = 1.0
    target_l0: float = 150.0
    seed: int = 0
    measure_tokens: int = 100_000
    alive_window_tokens: int = 100_000
    state_every_tokens: int = 0  # also write a resumable state every N tokens (0: at snapshots only)

    @classmethod
    def from_profile(cls, profile: str, **overrides) -> "SAETrainConfig":
        if profile not in PROFILES:
            raise InvalidParameter(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}.")
        values = dict(PROFILES[profile], profile=profile)
        if overrides.get("expansion") is not None:
            values["d_sae"] = None
        if overrides.get("d_sae") is not None:
            values["expansion"] = None
        values.update({k: v for k, v in overrides.items() if v is not None})
        cfg = cls(**values)
        cfg.validate()
        return cfg

    @classmethod
    def from_json(cls, d: dict) -> "SAETrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def whole(name, low):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise InvalidParameter(f"--{name.replace('_', '-')} must be a whole number >= {low} (got {v!r}).")

        for name, low in (("tokens", 1), ("n_snapshots", 1), ("batch_tokens", 1), ("context", 2), ("seed", 0),
                          ("measure_tokens", 1), ("alive_window_tokens", 1), ("state_every_tokens", 0)):
            whole(name, low)
        if (self.d_sae is None) == (self.expansion is None):
            raise InvalidParameter("give exactly one of --d-sae and --expansion.")
        if self.d_sae is not None:
            whole("d_sae", 1)
        if self.expansion is not None and not (math.isfinite(self.expansion) and self.expansion > 0):
            raise InvalidParameter(f"--expansion must be a positive number (got {self.expansion!r}).")
        if self.batch_tokens % self.context:
            raise InvalidParameter(f"--batch-tokens ({self.batch_tokens}) must be a multiple of the context length "
                                   f"({self.context}): a batch is a whole number of sequences.")
        if self.tokens < self.batch_tokens:
            raise InvalidParameter(f"--tokens ({self.tokens}) is fewer than one batch ({self.batch_tokens} tokens).")
        if self.n_snapshots > self.steps:
            raise InvalidParameter(f"--n-snapshots ({self.n_snapshots}) exceeds the number of steps ({self.steps}).")
        if self.dtype not in ("fp32", "bf16"):
            raise InvalidParameter(f"--dtype must be fp32 or bf16 (got {self.dtype!r}).")
        if self.device not in ("cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise InvalidParameter(f"--device must be cpu or cuda (got {self.device!r}).")
        for name in ("lr", "target_l0"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InvalidParameter(f"--{name.replace('_', '-')} must be a positive number (got {v!r}).")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise InvalidParameter(f"--grad-clip must be >= 0 (got {self.grad_clip!r}).")
        if self.layers is not None and (not self.layers or any(int(v) != v or v < 0 for v in self.layers)):
            raise InvalidParameter(f"--layers must be 0-based layer numbers (got {self.layers!r}).")
        if not self.trials or len(set(self.trials)) != len(self.trials):
            raise InvalidParameter(f"--trial must name distinct trials (got {self.trials!r}).")
        self.trial_specs()

    @property
    def steps(self) -> int:
        return math.ceil(self.tokens / self.batch_tokens)

    @property
    def n_seq(self) -> int:
        return self.batch_tokens // self.context

    def trial_specs(self) -> dict[str, TrialSpec]:
        known = paper_trials(self.target_l0)
        out = {}
        for name in self.trials:
            if name in known:
                out[name] = known[name]
            elif name.startswith("P"):
                try:
                    out[name] = pilot_trial(float(name[1:]))
                except ValueError:
                    raise InvalidParameter(f"pilot trial {name!r} must be P followed by its lambda, like P7e-04.") from None
                out[name] = dataclasses.replace(out[name], name=name)
            else:
                raise InvalidParameter(f"unknown trial {name!r}: use A, B, C or a pilot like P7e-04.")
            out[name].validate()
        return out

    def snapshot_schedule(self) -> list[tuple[str, int]]:
        """[(label, step)] for K evenly spaced token counts; the last label is `final`."""
        out = []
        for k in range(1, self.n_snapshots + 1):
            nominal = self.tokens * k / self.n_snapshots
            step = max(1, math.ceil(nominal / self.batch_tokens))
            out.append(("final" if k == self.n_snapshots else format_tokens(nominal), step))
        return out

    def resolved_d_sae(self, d_model: int) -> int:
        return int(self.d_sae) if self.d_sae is not None else max(1, round(self.expansion * d_model))

    def settings(self) -> dict:
        return dataclasses.asdict(self)


def owner_all(layer: int) -> bool:
    return True


class Trainer:
    """Train every (trial, layer) SAE of a config into a run folder.

    `owns(layer)` selects the layers this process trains (all of them, unless a distributed run shards them);
    `batch_hook(step, activations)` lets tests inject faults into a batch.
    """

    def __init__(self, cfg: SAETrainConfig, out: Path, progress: bool = True, model=None,
                 owns: Callable[[int], bool] = owner_all,
                 batch_hook: Callable[[int, dict], dict] | None = None):
        cfg.validate()
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.owns, self.batch_hook = owns, batch_hook
        self._model = model
        self.step = 0
        self._manifest_cache: dict = {}

    # -- set-up -----------------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise InvalidParameter("--device cuda was asked for, but no CUDA device is available here; use --device cpu.")
        self.model = self._model if self._model is not None else acts.load_model(cfg.model, cfg.device)
        n_layers = acts.model_layers(self.model)
        self.layers = acts.check_layers(range(n_layers) if cfg.layers is None else cfg.layers, n_layers)
        autocast = torch.bfloat16 if cfg.dtype == "bf16" else None
        self.source = acts.ActivationSource(self.model, self.layers, autocast)
        self.d_in = self.source.d_model
        self.d_sae = cfg.resolved_d_sae(self.d_in)
        self.stream = acts.TokenStream(self.model.tokenizer, cfg.dataset, cfg.context, "train")
        compute = torch.bfloat16 if cfg.dtype == "bf16" else None
        self.units = {}
        for name, spec in cfg.trial_specs().items():
            for layer in self.layers:
                if self.owns(layer):
                    # Every trial at a layer starts from the same weights: the trials differ only in their L1.
                    u = SAEUnit(spec, layer, self.d_in, self.d_sae, stream_seed(cfg.seed, "sae", layer), cfg.lr,
                                cfg.grad_clip, cfg.device, compute)
                    self.units[u.key] = u
        self.alive_window_steps = max(1, math.ceil(cfg.alive_window_tokens / cfg.batch_tokens))

    def run_config(self) -> dict:
        """config.json: the settings, plus what they resolved to for this model."""
        cfg = self.cfg
        return {
            "settings": cfg.settings(),
            "model": acts.model_display_name(cfg.model), "model_source": cfg.model, "profile": cfg.profile,
            "layers": self.layers, "n_layers": acts.model_layers(self.model), "d_in": self.d_in, "d_sae": self.d_sae,
            "tokens": cfg.tokens, "batch_tokens": cfg.batch_tokens, "context": cfg.context, "dataset": cfg.dataset,
            "seed": cfg.seed, "lr": cfg.lr, "measure_tokens": cfg.measure_tokens,
            "trials": {n: s.to_json() for n, s in cfg.trial_specs().items()},
            "snapshots": [{"label": lab, "step": s, "tokens": s * cfg.batch_tokens} for lab, s in cfg.snapshot_schedule()],
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        }

    def _prepare_folder(self, resume: bool, force: bool) -> bool:
        """True when resuming a state; refuses to mix runs."""
        out, cfg_path = self.out, paths.run_config(self.out)
        if cfg_path.exists():
            try:
                old = json.loads(cfg_path.read_text())
            except json.JSONDecodeError:
                old = {}
            if force and not resume:
                for sub in ("checkpoints", "measurements", "state"):
                    shutil.rmtree(out / sub, ignore_errors=True)
                for f in [paths.run_metrics(out), paths.run_manifest(out), out / STATUS_FILE, *out.glob("summary_*.csv")]:
                    f.unlink(missing_ok=True)
            elif not resume:
                raise RunFolderError(f"{out} already holds a run: pass --resume to continue it, --force to start it "
                                     "over, or use another --out.")
            elif old.get("settings") != self.cfg.settings():
                diff = sorted(k for k in set(old.get("settings") or {}) | set(self.cfg.settings())
                              if (old.get("settings") or {}).get(k) != self.cfg.settings().get(k))
                raise RunFolderError(f"{out} holds a run with other settings ({', '.join(diff) or 'unreadable config'}): "
                                     "resume it with its own settings, or use another --out.")
        elif any(out.iterdir()) if out.is_dir() else False:
            stray = [p.name for p in out.iterdir() if p.name != ".lock"]
            if stray and not force:
                raise RunFolderError(f"{out} is not empty and holds no run ({', '.join(sorted(stray)[:3])}...): use an "
                                     "empty or new --out, or --force.")
        atomic_write_json(cfg_path, self.run_config())
        return resume and self._load_state()

    def _load_state(self) -> bool:
        found = train_state.load_latest_state(self.out)
        if found is None:
            return False
        meta, units = found
        if meta.get("settings") != self.cfg.settings() or set(meta["units"]) != set(self.units):
            raise RunFolderError(f"the saved state in {paths.train_state_dir(self.out)} belongs to other settings; "
                                 "resume with the run's own settings, or use another --out.")
        for key, u in self.units.items():
            u.load_state(units[key])
        self.stream.load_state(meta["stream"])
        torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
        self.step = int(meta["step"])
        self._truncate_metrics(self.step)
        return True

    # -- files ------------------------------------------------------------------------------------------
    def _truncate_metrics(self, step: int) -> None:
        """Keep the complete metrics lines of steps <= step (a killed run may have logged further)."""
        path = paths.run_metrics(self.out)
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("step", 0) <= step:
                keep.append(line)
        atomic_write_text(path, "".join(f"{line}\n" for line in keep))

    def _save_state(self) -> None:
        meta = {"settings": self.cfg.settings(), "units": sorted(self.units), "stream": self.stream.state(),
                "torch_rng": torch.get_rng_state().tolist(), "tokens": self.step * self.cfg.batch_tokens}
        self._metrics_file.flush()
        train_state.save_state(self.out, self.step, meta, {k: u.state() for k, u in self.units.items()})

    def _snapshot(self, label: str) -> None:
        cfg = self.cfg
        for u in self.units.values():
            meta = {"trial": u.trial.to_json(), "layer": u.layer, "snapshot": label, "step": self.step,
                    "tokens": self.step * cfg.batch_tokens, "lambda": float(u.controller.lam), "seed": cfg.seed}
            c = checkpoints.sae_cfg(self.d_in, self.d_sae, model=acts.model_display_name(cfg.model), layer=u.layer,
                                    context=cfg.context, dataset=cfg.dataset, kdsae=meta)
            checkpoints.save_checkpoint(paths.checkpoint_dir(self.out, u.trial.name, u.layer, label), u.sae, c)
        self._metrics_file.flush()
        manifest.write_manifest(self.out, self._manifest_cache)

    # -- the loop ---------------------------------------------------------------------------------------------
    def _batch(self) -> dict[int, torch.Tensor]:
        tokens = self.stream.next_batch(self.cfg.n_seq)
        x = self.source(tokens)
        if self.batch_hook is not None:
            x = self.batch_hook(self.step, x)
        return x

    def _check_activations(self, x: dict[int, torch.Tensor]) -> None:
        for layer, t in x.items():
            peak = t.abs().max()
            if not bool(torch.isfinite(peak)) or float(peak) > ACTIVATION_LIMIT:
                raise NumericalFault(f"layer {layer} activations at step {self.step + 1} are "
                                     f"{'not finite' if not bool(torch.isfinite(peak)) else f'exploding (|x| = {float(peak):.3g})'}; "
                                     f"the run stopped, {self._last_good()}.")

    def _last_good(self) -> str:
        st = train_state.load_latest_state(self.out) if paths.train_state_dir(self.out).exists() else None
        return (f"its last good state (step {st[0]['step']}) is intact: fix the input and resume with --resume"
                if st else "no state had been saved yet")

    def _log(self, rows: list[dict]) -> None:
        self._metrics_file.write("".join(json.dumps(r) + "\n" for r in rows))

    def _train_step(self) -> None:
        cfg = self.cfg
        x = self._batch()
        self._check_activations(x)
        rows = []
        for u in self.units.values():
            lam = float(u.controller.lam)
            s = u.step(x[u.layer])
            loss = float(s.loss)
            if not math.isfinite(loss):
                raise NumericalFault(f"the loss of trial {u.trial.name} at layer {u.layer} is {loss} at step "
                                     f"{self.step + 1}; the run stopped, {self._last_good()}.")
            rows.append({"trial": u.trial.name, "layer": u.layer, "step": self.step + 1,
                         "tokens": (self.step + 1) * cfg.batch_tokens, "mse": float(s.mse), "l1": float(s.l1),
                         "loss": loss, "L0": float(s.l0), "lambda": lam,
                         "alive_frac": float(u.alive_fraction(self.alive_window_steps))})
        self.step += 1
        self._log(rows)

    def run(self, resume: bool = False, force: bool = False, stop_after_step: int | None = None) -> Path:
        """Train to the end (or, with `stop_after_step`, save a resumable state there and raise KeyboardInterrupt)."""
        self.out.mkdir(parents=True, exist_ok=True)
        with run_lock(self.out):
            self._setup()
            status = self.out / STATUS_FILE
            if resume and status.exists() and paths.run_config(self.out).exists() and \
                    json.loads(paths.run_config(self.out).read_text()).get("settings") == self.cfg.settings():
                return self.out  # already complete
            resumed = self._prepare_folder(resume, force)
            if not resumed:
                self.step = 0
                paths.run_metrics(self.out).write_text("")
            try:
                self._loop(stop_after_step)
            except _Stop:
                raise KeyboardInterrupt(f"training stopped at step {self.step}; state saved, resume with --resume") from None
            finally:
                self._metrics_file.close()
            train_state.clear_state(self.out)
            atomic_write_json(status, {"status": "complete", "step": self.step, "tokens": self.step * self.cfg.batch_tokens})
            manifest.write_manifest(self.out, self._manifest_cache)
        return self.out

    def _loop(self, stop_after_step: int | None) -> None:
        cfg = self.cfg
        self._metrics_file = open(paths.run_metrics(self.out), "a", buffering=1 << 16)
        schedule = dict((s, lab) for lab, s in cfg.snapshot_schedule())
        state_every = math.ceil(cfg.state_every_tokens / cfg.batch_tokens) if cfg.state_every_tokens else 0
        stop = {"flag": False}

        def on_signal(signum, frame):
            stop["flag"] = True

        old = ({s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
               if threading.current_thread() is threading.main_thread() else {})
        bar = tqdm(total=cfg.steps * cfg.batch_tokens, initial=self.step * cfg.batch_tokens, unit="tok",
                   unit_scale=True, desc=f"train {len(self.units)} SAEs", disable=not self.progress, mininterval=2.0)
        try:
            t0, done0 = time.perf_counter(), self.step
            while self.step < cfg.steps:
                self._train_step()
                bar.update(cfg.batch_tokens)
                if self.step in schedule:
                    self._snapshot(schedule[self.step])
                    if self.step < cfg.steps:
                        self._save_state()
                elif state_every and self.step % state_every == 0:
                    self._save_state()
                if (stop["flag"] or stop_after_step == self.step) and self.step < cfg.steps:
                    if self.step not in schedule and not (state_every and self.step % state_every == 0):
                        self._save_state()
                    raise _Stop()
                if self.progress and self.step % 10 == 0:
                    rate = (self.step - done0) * cfg.batch_tokens / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix_str(f"{rate / max(len(self.units), 1):,.0f} tok/s per SAE", refresh=False)
        finally:
            bar.close()
            for s, h in old.items():
                signal.signal(s, h)


def train(cfg: SAETrainConfig, out: Path, resume: bool = False, force: bool = False, progress: bool = True,
          model=None) -> Path:
    return Trainer(cfg, out, progress=progress, model=model).run(resume=resume, force=force)


def retrain_like(run: Path, out: Path, trials=None, layers=None) -> Path:
    """Train again with a run folder's settings (optionally fewer trials or layers) into `out`."""
    old = json.loads(paths.run_config(run).read_text())
    settings = dict(old["settings"])
    if trials is not None:
        settings["trials"] = list(trials)
    if layers is not None:
        settings["layers"] = [int(v) for v in layers]
    cfg = SAETrainConfig.from_json(settings)
    folder = train(cfg, out, resume=True, progress=False)
    from .measure import measure_run
    measure_run(folder, progress=False)
    return folder


def train_pilots_like(run: Path, out: Path, lambdas=(1e-4, 2e-4, 7e-4), layers=None) -> Path:
    """The pilot coefficients (trial A's `mean` form) with a run folder's other settings."""
    return retrain_like(run, out, trials=[f"P{lam:.0e}" for lam in lambdas], layers=layers)
