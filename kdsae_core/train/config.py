"""Experiment 2 settings: one `SAETrainConfig` (the CLI options and the notebooks' parameters share its field
names), started from one of the two profiles in train/profiles.py."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from kdsae_core.common.errors import InvalidParameter
from kdsae_core.runs.tables import format_tokens
from kdsae_core.sae.model import TRIAL_NAMES, TrialSpec, paper_trials, pilot_trial
from kdsae_core.train.profiles import PROFILES, recorded_settings
from kdsae_core.train.settings import BY_NAME, KNOBS, SETTINGS


@dataclass
class SAETrainConfig:
    """Experiment 2 settings; the field names are the CLI options and the notebooks' parameters."""

    profile: str = "embedded"
    model: str = "embedded"
    layers: list[int] | None = None  # None: every layer of the model
    trials: list[str] = field(default_factory=lambda: list(TRIAL_NAMES))  # A, B, C or pilots like P7e-04
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
    # which SAE step (kdsae_core.sae.step.fused_backward): auto (dense or sparse per batch, by its density), dense,
    # sparse.
    # The paths sum in a different order, so only runs with the same sae_step are byte-identical.
    sae_step: str = "auto"
    # The trials' own knobs (train/settings.py): None is the paper's value, and a None knob is left out of
    # settings(), so the paper's trials record the settings they always have.
    lambda_a: float | None = None
    l1_form_a: str | None = None
    lambda_b: float | None = None
    l1_form_b: str | None = None
    lambda_c: float | None = None
    controller_rate: float | None = None
    error_bound: float | None = None

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
        for s in SETTINGS:  # each setting's type and range, as declared
            if getattr(self, s.name) is not None:
                s.check(getattr(self, s.name))
        if (self.d_sae is None) == (self.expansion is None):
            raise InvalidParameter("give exactly one of --d-sae and --expansion.")
        if self.batch_tokens % self.context:
            raise InvalidParameter(
                f"--batch-tokens ({self.batch_tokens}) must be a multiple of the context length "
                f"({self.context}): a batch is a whole number of sequences."
            )
        if self.tokens < self.batch_tokens:
            raise InvalidParameter(f"--tokens ({self.tokens}) is fewer than one batch ({self.batch_tokens} tokens).")
        if self.n_snapshots > self.steps:
            raise InvalidParameter(f"--n-snapshots ({self.n_snapshots}) exceeds the number of steps ({self.steps}).")
        if self.sae_step == "sparse" and self.dtype != "fp32":
            raise InvalidParameter(
                f"--sae-step sparse computes in fp32 only (got --dtype {self.dtype}): use auto "
                "(which stays dense in bf16) or dense."
            )
        if self.device not in ("cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise InvalidParameter(f"--device must be cpu or cuda (got {self.device!r}).")
        if len(set(self.trials)) != len(self.trials):
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
                    raise InvalidParameter(
                        f"pilot trial {name!r} must be P followed by its lambda, like P7e-04."
                    ) from None
                out[name] = dataclasses.replace(out[name], name=name)
            else:
                raise InvalidParameter(f"unknown trial {name!r}: use A, B, C or a pilot like P7e-04.")
            out[name].validate()
        for s in KNOBS:  # a trial's own knobs, where given
            if getattr(self, s.name) is not None and s.trial in out:
                out[s.trial] = dataclasses.replace(out[s.trial], **{s.attr: getattr(self, s.name)})
                out[s.trial].validate()
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
        """The recorded settings (config.json): every field, but a trial's knob only where it is given."""
        knobs = {s.name for s in KNOBS}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in knobs or v is not None}

    def value(self, name: str):
        """A setting's value in effect: a None knob is its trial's paper value."""
        s = BY_NAME[name]
        v = getattr(self, name)
        if v is None and s.attr:
            v = getattr(paper_trials(self.target_l0)[s.trial], s.attr)
        return v

    def differences(self, other: "SAETrainConfig") -> list[tuple[str, object, object]]:
        """[(setting, this value, the other's)] for every declared setting whose value in effect differs."""
        return [
            (s.name, self.value(s.name), other.value(s.name))
            for s in SETTINGS
            if self.value(s.name) != other.value(s.name)
        ]

    @classmethod
    def like(cls, settings: dict, **overrides) -> "SAETrainConfig":
        """A recorded run's settings (config.json) with some replaced (None: keep), validated: d_sae and
        expansion replace each other."""
        values = dict(recorded_settings(settings))
        given = {k: v for k, v in overrides.items() if v is not None}
        if "expansion" in given:
            values["d_sae"] = None
        elif "d_sae" in given:
            values["expansion"] = None
        return cls.from_json({**values, **given})


def refuse_unreachable_target(cfg: SAETrainConfig, given_target: float | None, label: str = "--target-l0") -> None:
    """A target L0 given above d_sae can never be reached (L0 counts active latents out of d_sae)."""
    if given_target is not None and cfg.d_sae is not None and given_target > cfg.d_sae:
        raise InvalidParameter(
            f"{label} must be a number in (0, d_sae = {cfg.d_sae}]: an SAE has no more active "
            f"latents than it has latents (got {given_target!r})."
        )
