"""Experiment 1's settings: `ToyConfig`, whose field names are the notebook's papermill parameters and the options
of `kdsae toy`, filled from the named profiles of toy/profiles.py (book/methods.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kdsae_core import theory
from kdsae_core.common.errors import InvalidParameter
from kdsae_core.toy.model import importance_profile
from kdsae_core.toy.profiles import KNEE_WIDTHS, PROFILES

KNEE_TOLERANCE = 0.02  # knee width: first width within 2% of L_inf of the best measured floor
REPRESENTED_THRESHOLDS = (0.3, 0.5, 0.7)  # a feature is represented when ||W_i|| >= the threshold


@dataclass
class ToyConfig:
    """Experiment 1 settings. Field names are the notebook's papermill parameters."""

    profile: str = "quick"
    n: list[int] = field(default_factory=lambda: list(PROFILES["quick"]["n"]))
    alpha: list[float] = field(default_factory=lambda: list(PROFILES["quick"]["alpha"]))
    d_teacher: list[int] = field(default_factory=lambda: list(PROFILES["quick"]["d_teacher"]))
    widths: list[int] | str | None = None  # None: 1..d_T for each teacher; "knee": 1..min(n, ceil(1.5 d*_S) + 1)
    importance: str = "zipf:1"
    mode: str = "distill"
    steps: int = PROFILES["quick"]["steps"]
    batch: int = PROFILES["quick"]["batch"]
    lr: float = PROFILES["quick"]["lr"]
    seeds: int = PROFILES["quick"]["seeds"]
    eval_samples: int = PROFILES["quick"]["eval_samples"]
    seed: int = 0
    checkpoint_every: int = 1000

    @classmethod
    def from_profile(cls, profile: str, **overrides) -> "ToyConfig":
        if profile not in PROFILES:
            raise InvalidParameter(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}.")
        values = dict(PROFILES[profile], profile=profile)
        values.update({k: v for k, v in overrides.items() if v is not None})
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def ints(name, values, low):
            if not values or any(int(v) != v or v < low for v in values):
                raise InvalidParameter(f"--{name.replace('_', '-')} must be whole numbers >= {low} (got {values!r}).")

        ints("n", self.n, 2)
        ints("d_teacher", self.d_teacher, 1)
        for a in self.alpha:
            if not 0.0 < a < 1.0:
                raise InvalidParameter(f"--alpha must lie strictly between 0 and 1 (got {a!r}).")
        if self.widths == KNEE_WIDTHS and self.mode != "direct":
            raise InvalidParameter(
                "--widths knee is for --mode direct (a distilled student's floor stops at its "
                "teacher's width, so widths past the knee test nothing)."
            )
        if self.widths is not None and self.widths != KNEE_WIDTHS:
            ints("widths", self.widths, 1)
        if max(self.d_teacher) > min(self.n):
            raise InvalidParameter(f"teacher widths {self.d_teacher} must not exceed the feature count {min(self.n)}.")
        if self.mode not in ("distill", "direct"):
            raise InvalidParameter(f"--mode must be distill or direct (got {self.mode!r}).")
        importance_profile(self.importance, 2)
        for name in ("steps", "batch", "seeds", "eval_samples", "checkpoint_every"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise InvalidParameter(f"--{name.replace('_', '-')} must be a whole number >= 1.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InvalidParameter(f"--lr must be positive (got {self.lr!r}).")
        if (
            len(set(self.n)) != len(self.n)
            or len(set(self.alpha)) != len(self.alpha)
            or len(set(self.d_teacher)) != len(self.d_teacher)
        ):
            raise InvalidParameter("--n, --alpha and --d-teacher must not repeat a value.")

    def student_widths(self, d_t: int, n: int, alpha: float) -> list[int]:
        """The student widths of teacher width d_t at feature count n and sparsity alpha."""
        if self.widths is None:
            return list(range(1, d_t + 1))
        if self.widths == KNEE_WIDTHS:
            return list(range(1, min(n, math.ceil(1.5 * theory.critical_width(n, alpha)) + 1) + 1))
        return sorted(self.widths)

    def matches_paper_grid(self) -> bool:
        """The paper profile's grid in distill mode: the co-author's stated sweep (n, d_T, alpha, 20 seeds) with the
        steps, batch, learning rate and evaluation size of the independent re-implementation the profile follows."""
        p = PROFILES["paper"]
        return (
            sorted(self.n) == p["n"]
            and sorted(self.alpha) == p["alpha"]
            and sorted(self.d_teacher) == p["d_teacher"]
            and self.seeds == p["seeds"]
            and self.steps == p["steps"]
            and self.batch == p["batch"]
            and self.lr == p["lr"]
            and self.eval_samples == p["eval_samples"]
            and self.widths is None
            and self.mode == "distill"
        )
