"""What a training run writes and reads back, as the trainer's half that touches files: the resumable state
(saved every snapshot, loaded on resume), the SAE snapshots, the manifest entries and the metrics log; and the
numerical fault that stops a run with its last good state intact. `Trainer` (train/trainer.py) mixes it in."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kdsae_core.common.errors import KdsaeError, RunFolderError
from kdsae_core.data import activations as acts
from kdsae_core.runs import checkpoints, layout, manifest
from kdsae_core.train import state as train_state
from kdsae_core.train.config import recorded_settings
from kdsae_core.train.folder import truncate_metrics


class NumericalFault(KdsaeError):
    """A non-finite loss or exploding activations: the run stopped, its last good state intact."""


def unit_key(trial: str, layer: int) -> str:
    return f"{trial}/layer{layer:02d}"


class RunFiles:
    """The trainer's file half (see the module): states, snapshots, manifest, metrics log."""

    def _resume_state(self) -> bool:
        """Load the newest generation every process finds intact for its own SAEs; False if there is none."""
        mine = train_state.intact_steps(self.out, sorted(self.units))
        found = self.comm.gather_objects(mine)
        chosen = next((s for s in mine if all(s in f for f in found)), None) if self.comm.is_main else None
        chosen = self.comm.broadcast_object(chosen)
        if chosen is None:
            return False
        meta = train_state.load_meta(self.out, chosen)
        if meta is None:
            raise RunFolderError(
                f"the saved state {train_state.generation_dir(self.out, chosen)} changed while it was "
                "being loaded: resume again."
            )
        if recorded_settings(meta.get("settings") or {}) != self.cfg.settings() or sorted(meta["units"]) != sorted(
            self.all_keys
        ):
            raise RunFolderError(
                f"the saved state in {layout.train_state_dir(self.out)} belongs to other settings; "
                "resume with the run's own settings, or use another --out."
            )
        for key, u in self.units.items():
            u.load_state(train_state.read_unit(self.out, meta, key))  # one SAE's state in memory at a time
        if self.stream is not None:
            self.stream.load_state(meta["stream"], train_state.read_stream(self.out, meta))
        torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
        self.step = int(meta["step"])
        if self.comm.is_main:
            truncate_metrics(self.out, self.step)
        return True

    def _check_weights(self) -> None:
        """Before anything is saved: an optimizer step that left non-finite weights must not become the
        "last good" state (checked only here, not every step: at the paper shape it is a pass over 5 GB)."""
        bad = next(
            (
                u
                for u in self.units.values()
                if not all(bool(torch.isfinite(t).all()) for t in u.sae.tensors().values())
            ),
            None,
        )
        (anywhere,) = self.comm.any([bad is not None])
        if anywhere:
            where = f"trial {bad.trial.name} at layer {bad.layer}" if bad else "another process's SAE"
            raise NumericalFault(
                f"the weights of {where} are not finite after step {self.step}; nothing was saved, {self._last_good()}."
            )

    def _save_state(self) -> None:
        self._check_weights()
        if self.comm.is_main:
            train_state.prune_before_write(self.out)
        self.comm.barrier()
        digests = train_state.write_units(self.out, self.step, {k: u.state for k, u in self.units.items()})
        every = self.comm.gather_objects(digests)
        if self.comm.is_main:
            stream = self.batches.stream_state()
            merged = {
                name: d
                for part in [*every, train_state.write_stream(self.out, self.step, self.stream.seen(stream))]
                for name, d in part.items()
            }
            meta = {
                "settings": self.cfg.settings(),
                "units": sorted(self.all_keys),
                "stream": stream,
                "torch_rng": torch.get_rng_state().tolist(),
                "tokens": self.step * self.cfg.batch_tokens,
            }
            self._metrics("flush")
            train_state.commit(self.out, self.step, meta, merged)
        self.comm.barrier()

    def _snapshot(self, label: str) -> None:
        cfg = self.cfg
        self._check_weights()
        for u in self.units.values():
            meta = {
                "trial": u.trial.to_json(),
                "layer": u.layer,
                "snapshot": label,
                "step": self.step,
                "tokens": self.step * cfg.batch_tokens,
                "lambda": float(u.controller.lam),
                "seed": cfg.seed,
            }
            c = checkpoints.sae_cfg(
                self.d_in,
                self.d_sae,
                model=acts.model_display_name(cfg.model),
                layer=u.layer,
                context=cfg.context,
                dataset=cfg.dataset,
                kdsae=meta,
            )
            checkpoints.save_checkpoint(layout.checkpoint_dir(self.out, u.trial.name, u.layer, label), u.sae, c)
        self.comm.barrier()
        if self.comm.is_main:
            self._metrics("flush")
            self._record(
                *(
                    layout.checkpoint_dir(self.out, trial, int(layer), label) / name
                    for trial, layer in (key.split("/layer") for key in self.all_keys)
                    for name in (layout.WEIGHTS_FILE, layout.CFG_FILE)
                )
            )

    def _record(self, *written: Path) -> None:
        """Put the files just written (and the config and log, which change as the run goes) in the manifest;
        entries of other files stay as listed, so a file damaged since is never re-blessed."""
        manifest.update_manifest(
            self.out, [layout.run_config(self.out), layout.run_metrics(self.out), *written], self._manifest_cache
        )

    def _last_good(self) -> str:
        st = train_state.load_latest_state(self.out, keys=[]) if layout.train_state_dir(self.out).exists() else None
        return (
            f"its last good state (step {st[0]['step']}) is intact: fix the input and resume with --resume"
            if st
            else "no state had been saved yet"
        )

    def _log(self, rows: list[dict]) -> None:
        every = self.comm.gather_objects(rows)
        if self.comm.is_main:
            merged = sorted(
                (r for part in every for r in part), key=lambda r: self._order[unit_key(r["trial"], r["layer"])]
            )
            self._metrics("write", "".join(json.dumps(r) + "\n" for r in merged))

    def _metrics(self, op: str, *args) -> None:
        """write / flush / close the metrics log: a full disk is one sentence naming it, never a traceback."""
        try:
            getattr(self._metrics_file, op)(*args)
        except OSError as e:
            raise KdsaeError(
                f"could not write {layout.run_metrics(self.out)} ({e.strerror or e}: disk full or file too "
                "large?); the last saved state is intact: make room and resume with --resume."
            ) from None
