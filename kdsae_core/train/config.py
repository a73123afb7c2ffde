"""Experiment 2 settings: one `SAETrainConfig` (the CLI options and the notebooks' parameters share its field
names), started from one of the two profiles in train/profiles.py."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from kdsae_core.sae import sparse as sae_sparse
from kdsae_core.common.errors import InvalidParameter
from kdsae_core.runs.tables import format_tokens
from kdsae_core.sae.model import TrialSpec, paper_trials, pilot_trial
from kdsae_core.train.profiles import PROFILES, recorded_settings


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
    batch_tokens: int = 128
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
    # which SAE step (kdsae_core.sae.model.fused_backward): auto (dense or sparse per batch, by its density), dense, sparse.
    # The paths sum in a different order, so only runs with the same sae_step are byte-identical.
    sae_step: str = "auto"

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
        cfg = cls(**{k: v for k, v in recorded_settings(d).items() if k in known})
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
        if self.sae_step not in sae_sparse.PATHS:
            raise InvalidParameter(f"--sae-step must be one of {', '.join(sae_sparse.PATHS)} (got {self.sae_step!r}).")
        if self.sae_step == "sparse" and self.dtype != "fp32":
            raise InvalidParameter(f"--sae-step sparse computes in fp32 only (got --dtype {self.dtype}): use auto "
                                   "(which stays dense in bf16) or dense.")
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
