"""Experiment 2 training (book/methods.md): one SAE per (trial, layer), ALL fed from the same forward
pass of the language model per batch, with K evenly spaced snapshots, a per-step metrics log and exact
resume. One process, or several under torchrun (kdsae_core.train.distributed: each rank owns some layers).

Run folder (ARCHITECTURE.md, runs/layout.py): config.json, metrics.jsonl, MANIFEST.sha256,
checkpoints/{trial}/layer{LL}/{snapshot}/, state/ (resumable, removed when the run completes), status.json.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from kdsae_core.common.errors import BadFile, InvalidParameter, KdsaeError, RunFolderError
from kdsae_core.common.fileio import atomic_write_json, read_json_object
from kdsae_core.common.locks import run_lock
from kdsae_core.common.seeding import stream_seed
from kdsae_core.common.signals import stop_requests
from kdsae_core.data import activations as acts
from kdsae_core.data.text import TokenStream
from kdsae_core.measure import measure_run
from kdsae_core.runs import layout
from kdsae_core.sae import sparse as sae_sparse
from kdsae_core.sae.model import allow_tf32_on_cuda
from kdsae_core.sae.step import SAEUnit
from kdsae_core.train import state as train_state
from kdsae_core.train.batches import ActivationBatches
from kdsae_core.train.config import PROFILES, SAETrainConfig, recorded_settings  # noqa: F401  (re-exported: the engine's public names)
from kdsae_core.train.distributed import LocalComm, check_cuda
from kdsae_core.train.folder import prepare_folder
from kdsae_core.train.preflight import check_corpus, check_disk, check_memory
from kdsae_core.train.records import NumericalFault, RunFiles, unit_key

ACTIVATION_LIMIT = 1e6  # |x| above this (or non-finite) stops the run: the forward pass has blown up
SPARSE_THRESHOLD_KEY = "sparse_step_below_density"  # config.json: the density under which `auto` went sparse


class _Stop(Exception):
    """SIGINT/SIGTERM (or a test's stop_after_step): a resumable state has been written."""


class Trainer(RunFiles):
    """Train every (trial, layer) SAE of a config into a run folder.

    `comm` is the process group (LocalComm: this process trains every layer); `batch_hook(step,
    activations)` lets tests inject faults into a batch.
    """

    def __init__(
        self,
        cfg: SAETrainConfig,
        out: Path,
        progress: bool = True,
        model=None,
        comm=None,
        batch_hook: Callable[[int, dict], dict] | None = None,
    ):
        cfg.validate()
        self.cfg, self.out = cfg, Path(out)
        self.comm = comm or LocalComm()
        self.progress = progress and self.comm.is_main
        self.batch_hook = batch_hook
        self._model = model
        self.step = 0
        self._manifest_cache: dict = {}
        self._metrics_file = None

    # -- set-up -----------------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        check_cuda(cfg.device)
        if cfg.n_seq % self.comm.world:  # checked before config.json is written, not at the first batch
            raise InvalidParameter(
                f"{cfg.n_seq} sequences per batch do not split evenly over {self.comm.world} processes: "
                "choose --batch-tokens / --context as a multiple of the process count."
            )
        device = getattr(self.comm, "device", None) or cfg.device
        if str(device).startswith("cuda"):
            allow_tf32_on_cuda()  # the fp32 products (--dtype fp32, the measurement) at TF32's rate
        self.model = self._model if self._model is not None else acts.load_model(cfg.model, str(device))
        n_layers = acts.model_layers(self.model)
        self.layers = acts.check_layers(range(n_layers) if cfg.layers is None else cfg.layers, n_layers)
        autocast = torch.bfloat16 if cfg.dtype == "bf16" else None
        self.source = acts.ActivationSource(self.model, self.layers, autocast)
        self.d_in = self.source.d_model
        self.d_sae = cfg.resolved_d_sae(self.d_in)
        check_corpus(self.comm, self.model.tokenizer, cfg)
        # The first process alone reads and tokenises the text and sends every batch to the others.
        self.stream = TokenStream(self.model.tokenizer, cfg.dataset, cfg.context) if self.comm.is_main else None
        compute = torch.bfloat16 if cfg.dtype == "bf16" else None
        specs = cfg.trial_specs()
        self.all_keys = [unit_key(name, layer) for name in specs for layer in self.layers]
        self.batches = ActivationBatches(cfg, self.stream, self.source, self.comm, self.layers)
        n_seq = self.batches.forward_steps() * cfg.n_seq // self.comm.world  # sequences in one forward pass here
        check_memory(
            self.comm,
            self.model,
            cfg,
            self.layers,
            self.d_in,
            self.d_sae,
            len(specs) * sum(self.comm.owns(layer, self.layers) for layer in self.layers),
            n_seq,
            str(device),
            self.progress,
        )
        check_disk(self.comm, self.out, cfg, self.d_in, self.d_sae, len(self.all_keys), self.progress)
        self.units = {}
        for name, spec in specs.items():
            for layer in self.layers:
                if self.comm.owns(layer, self.layers):
                    # Every trial at a layer starts from the same weights: the trials differ only in their L1.
                    self.units[unit_key(name, layer)] = SAEUnit(
                        spec,
                        layer,
                        self.d_in,
                        self.d_sae,
                        stream_seed(cfg.seed, "sae", layer),
                        cfg.lr,
                        cfg.grad_clip,
                        str(device),
                        compute,
                        step_path=cfg.sae_step,
                    )
        self.sparse_below = sae_sparse.sparse_below_density(self.d_in, self.d_sae, torch.device(device).type)
        self._order = {k: i for i, k in enumerate(self.all_keys)}  # the log's row order, as one process writes it
        self.alive_window_steps = max(1, math.ceil(cfg.alive_window_tokens / cfg.batch_tokens))

    def run_config(self) -> dict:
        """config.json: the settings, plus what they resolved to for this model."""
        cfg = self.cfg
        return {
            "settings": cfg.settings(),
            "model": acts.model_display_name(cfg.model),
            "model_source": cfg.model,
            "profile": cfg.profile,
            "layers": self.layers,
            "n_layers": acts.model_layers(self.model),
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "tokens": cfg.tokens,
            "batch_tokens": cfg.batch_tokens,
            "context": cfg.context,
            "dataset": cfg.dataset,
            "seed": cfg.seed,
            "lr": cfg.lr,
            "measure_tokens": cfg.measure_tokens,
            "trials": {n: s.to_json() for n, s in cfg.trial_specs().items()},
            "snapshots": [
                {"label": lab, "step": s, "tokens": s * cfg.batch_tokens} for lab, s in cfg.snapshot_schedule()
            ],
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "processes": self.comm.world,
            # with settings.sae_step auto each step is dense or sparse by its batch's density (metrics.jsonl: sae_step
            # says which); the threshold auto uses (the crossover measured for this shape and device)
            SPARSE_THRESHOLD_KEY: self.sparse_below,
        }

    def _keep_recorded_threshold(self) -> None:
        """A resumed run keeps the density threshold of `auto` it started with (config.json), so its steps take the
        paths an uninterrupted run's would even if kdsae's measured crossovers changed in between."""
        recorded = None
        if self.comm.is_main and layout.run_config(self.out).exists():
            try:
                recorded = read_json_object(layout.run_config(self.out)).get(SPARSE_THRESHOLD_KEY)
            except BadFile:
                recorded = None  # prepare_folder says what is wrong with the folder
        recorded = self.comm.broadcast_object(recorded)
        # on a device where auto stays dense (no crossover measured there: a GPU), a CPU run's value does not apply
        if self.sparse_below > 0 and isinstance(recorded, (int, float)) and not isinstance(recorded, bool):
            self.sparse_below = float(recorded)
            for unit in self.units.values():
                unit.sparse_below = self.sparse_below

    # -- files ------------------------------------------------------------------------------------------

    # -- one step ---------------------------------------------------------------------------------------------
    def _batch(self) -> dict[int, torch.Tensor]:
        x = self.batches.next(self.step)
        if self.batch_hook is not None:
            x = self.batch_hook(self.step, x)
        return x

    def _check_activations(self, x: dict[int, torch.Tensor]) -> None:
        for layer, t in x.items():
            peak = t.abs().max()
            if not bool(torch.isfinite(peak)) or float(peak) > ACTIVATION_LIMIT:
                what = "not finite" if not bool(torch.isfinite(peak)) else f"exploding (|x| = {float(peak):.3g})"
                raise NumericalFault(
                    f"layer {layer} activations at step {self.step + 1} are {what}; "
                    f"the run stopped, {self._last_good()}."
                )

    def _train_step(self) -> tuple[list[dict], NumericalFault | None]:
        """Step every SAE this process owns; (metrics rows, the fault that stopped it or None)."""
        cfg = self.cfg
        x = self._batch()
        rows = []
        try:
            self._check_activations(x)
            for u in self.units.values():
                lam = float(u.controller.lam)
                s = u.step(x[u.layer])
                loss = float(s.loss)
                if not math.isfinite(loss):
                    raise NumericalFault(
                        f"the loss of trial {u.trial.name} at layer {u.layer} is {loss} at step "
                        f"{self.step + 1}; the run stopped, {self._last_good()}."
                    )
                rows.append(
                    {
                        "trial": u.trial.name,
                        "layer": u.layer,
                        "step": self.step + 1,
                        "tokens": (self.step + 1) * cfg.batch_tokens,
                        "mse": float(s.mse),
                        "l1": float(s.l1),
                        "loss": loss,
                        "L0": float(s.l0),
                        "lambda": lam,
                        "alive_frac": float(u.alive_fraction(self.alive_window_steps)),
                        "sae_step": s.path,
                    }
                )
        except NumericalFault as e:
            return rows, e
        return rows, None

    # -- the run ----------------------------------------------------------------------------------------------
    def run(self, resume: bool = False, force: bool = False, stop_after_step: int | None = None) -> Path:
        """Train to the end (or, with `stop_after_step`, save a resumable state there and raise KeyboardInterrupt)."""
        created = not self.out.exists()
        if self.comm.is_main:  # (another process making it could race the main one's removal of a refused run's folder)
            self.out.mkdir(parents=True, exist_ok=True)
        try:
            with self.comm.lock(lambda: run_lock(self.out)):
                return self._run_locked(resume, force, stop_after_step)
        except BaseException:
            if created and self.comm.is_main and not any(self.out.iterdir()):
                self.out.rmdir()  # a run refused before it wrote anything leaves no empty folder behind
            raise
        finally:
            if getattr(self, "stream", None) is not None:
                self.stream.close()  # its background thread

    def _run_locked(self, resume: bool, force: bool, stop_after_step: int | None) -> Path:
        self._setup()
        if resume:
            self._keep_recorded_threshold()
        decision = None
        if self.comm.is_main:
            try:
                decision = prepare_folder(self.out, self.cfg.settings(), self.run_config, resume, force)
            except KdsaeError as e:
                self.comm.broadcast_object(("error", str(e)))
                raise
        decision = self.comm.broadcast_object(decision)
        if isinstance(decision, tuple):
            raise RunFolderError(decision[1])
        if decision == "done":
            if self.comm.is_main and layout.train_state_dir(self.out).exists():
                # killed between status.json and the end: finish the manifest and drop the state
                self._record(layout.run_status(self.out))
                train_state.clear_state(self.out)
            return self.out
        resumed = decision == "resume" and self._resume_state()
        if not resumed:
            self.step = 0
            if self.comm.is_main:
                layout.run_metrics(self.out).write_text("")
        if self.comm.is_main:
            self._metrics_file = open(layout.run_metrics(self.out), "a", buffering=1 << 16)
        ended = False  # the loop ended normally or by a stop: a failing close is then the error to report
        try:
            self._loop(stop_after_step)
            ended = True
        except _Stop:
            ended = True
            raise KeyboardInterrupt(
                f"training stopped at step {self.step}; state saved, resume with --resume"
            ) from None
        finally:
            if self._metrics_file is not None:
                try:
                    self._metrics("close")
                except KdsaeError:
                    if ended:
                        raise
        self.comm.barrier()
        if self.comm.is_main:  # the state goes last: until status.json is on disk, a resume needs it
            atomic_write_json(
                layout.run_status(self.out),
                {"status": "complete", "step": self.step, "tokens": self.step * self.cfg.batch_tokens},
            )
            self._record(layout.run_status(self.out))
            train_state.clear_state(self.out)
        self.comm.barrier()
        return self.out

    def _loop(self, stop_after_step: int | None) -> None:
        cfg = self.cfg
        schedule = {s: lab for lab, s in cfg.snapshot_schedule()}
        state_every = math.ceil(cfg.state_every_tokens / cfg.batch_tokens) if cfg.state_every_tokens else 0
        bar = tqdm(
            total=cfg.steps * cfg.batch_tokens,
            initial=self.step * cfg.batch_tokens,
            unit="tok",
            unit_scale=True,
            desc=f"train {len(self.all_keys)} SAEs",
            disable=not self.progress,
            mininterval=2.0,
        )
        with stop_requests() as stop:
            try:
                t0, done0 = time.perf_counter(), self.step
                while self.step < cfg.steps:
                    rows, fault = self._train_step()
                    faulted, stopping = self.comm.any(
                        [fault is not None, stop.requested or stop_after_step == self.step + 1]
                    )
                    if faulted:
                        raise fault or NumericalFault(
                            f"another process of this run hit a numerical fault at step "
                            f"{self.step + 1} (see its message); the run stopped, {self._last_good()}."
                        )
                    self.step += 1
                    self._log(rows)
                    bar.update(cfg.batch_tokens)
                    saved = False
                    if self.step in schedule:
                        self._snapshot(schedule[self.step])
                    if self.step < cfg.steps and (
                        self.step in schedule or (state_every and self.step % state_every == 0) or stopping
                    ):
                        self._save_state()
                        saved = True
                    if stopping and self.step < cfg.steps:
                        assert saved
                        raise _Stop()
                    if self.progress and self.step % 10 == 0:
                        rate = (self.step - done0) * cfg.batch_tokens / max(time.perf_counter() - t0, 1e-9)
                        bar.set_postfix_str(f"{rate:,.0f} tok/s through {len(self.all_keys)} SAEs", refresh=False)
            finally:
                bar.close()


def train(
    cfg: SAETrainConfig, out: Path, resume: bool = False, force: bool = False, progress: bool = True, model=None
) -> Path:
    return Trainer(cfg, out, progress=progress, model=model).run(resume=resume, force=force)


def retrain_like(
    run: Path, out: Path, trials=None, layers=None, settings: dict | None = None, progress: bool = False
) -> Path:
    """Train again with a run folder's settings (optionally fewer trials or layers, and `settings` replaced: a
    chapter's science parameters) into `out`, and measure."""
    old = json.loads(layout.run_config(run).read_text())["settings"]
    given = dict(
        settings or {},
        trials=None if trials is None else list(trials),
        layers=None if layers is None else [int(v) for v in layers],
    )
    cfg = SAETrainConfig.like(old, **given)
    folder = train(cfg, out, resume=True, progress=progress)
    measure_run(folder, progress=progress)
    return folder


def train_pilots_like(
    run: Path, out: Path, lambdas=(1e-4, 2e-4, 7e-4), layers=None, settings: dict | None = None, progress: bool = False
) -> Path:
    """The pilot coefficients (trial A's `mean` form) with a run folder's other settings."""
    trials = [f"P{lam:.0e}" for lam in lambdas]
    return retrain_like(run, out, trials=trials, layers=layers, settings=settings, progress=progress)
