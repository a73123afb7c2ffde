"""Closed-form quantities of the minimum-width theorem (defined on the book's methods page). numpy only.

alpha is the probability that a feature is INACTIVE (Elhage et al.'s sparsity S).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from kdsae_core.common.errors import BadFile, InvalidParameter
from kdsae_core.common.fileio import read_json_object

ALIVE_THRESHOLD = 1e-5


# ---- validation ---------------------------------------------------------------------------------
def _alpha_array(alpha) -> np.ndarray:
    a = np.asarray(alpha, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any(a <= 0.0) or np.any(a >= 1.0):
        raise InvalidParameter(f"alpha must lie strictly between 0 and 1 (got {alpha!r}).")
    return a


def _widths_array(widths) -> np.ndarray:
    w = np.asarray(widths, dtype=np.float64)
    if w.size == 0:
        raise InvalidParameter("widths must not be empty.")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise InvalidParameter(f"student widths must be positive (got {np.asarray(widths).tolist()!r}).")
    return w


def _feature_count(F) -> np.ndarray:
    f = np.asarray(F, dtype=np.float64)
    if not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise InvalidParameter(f"the feature count F must be positive (got {F!r}).")
    return f


def check_sorted_importance(importance: Sequence[float]) -> np.ndarray:
    imp = np.asarray(importance, dtype=np.float64)
    if imp.ndim != 1 or imp.size == 0:
        raise InvalidParameter("importances must be a non-empty 1-D sequence.")
    if not np.all(np.isfinite(imp)) or np.any(imp < 0):
        raise InvalidParameter("importances must be finite and non-negative.")
    if np.any(np.diff(imp) > 0):
        raise InvalidParameter("importances must be sorted in descending order (sort them first).")
    return imp


# ---- the formulas -------------------------------------------------------------------------------
def g_alpha(alpha):
    """Capacity function g(alpha) = 1 / ((1 - alpha) ln(1 / (1 - alpha)))."""
    a = _alpha_array(alpha)
    one_minus = 1.0 - a
    out = 1.0 / (one_minus * np.log(1.0 / one_minus))
    return out if out.ndim else float(out)


G_MINIMUM_ALPHA = 1.0 - math.exp(-1.0)  # g(alpha) is smallest here (g = e): it falls below this sparsity, rises above


def below_capacity_minimum(alpha) -> bool:
    """True where g(alpha) falls as alpha grows (alpha < 1 - 1/e): there a sparser layer is predicted less capacity."""
    return bool(np.any(_alpha_array(alpha) < G_MINIMUM_ALPHA))


def feature_budget(F, d_S, alpha):
    """F_S = min(F, floor(d_S g(alpha))): features a width-d_S student can encode."""
    f = _feature_count(F)
    w = _widths_array(d_S)
    out = np.minimum(f, np.floor(w * g_alpha(alpha))).astype(np.int64)
    return out if out.ndim else int(out)


def critical_width(F, alpha):
    """d*_S = F / g(alpha): the width below which distillation has a non-zero floor."""
    out = _feature_count(F) / g_alpha(alpha)
    return out if np.ndim(out) else float(out)


def refined_floor(sorted_importance: Sequence[float], d_S, alpha):
    """L*(d_S) = sum_{i > F_S} I_i E[x_i^2], terms sorted descending (one term per feature)."""
    terms = check_sorted_importance(sorted_importance)
    budget = np.atleast_1d(feature_budget(terms.size, d_S, alpha))
    tail = np.concatenate([np.cumsum(terms[::-1])[::-1], [0.0]])  # tail[k] = sum_{i >= k} terms[i]
    out = tail[budget]
    return out if np.ndim(d_S) else float(out[0])


def naive_floor(L_inf: float, F, d_S, alpha):
    """L_inf * max(0, 1 - d_S g(alpha) / F)."""
    if not np.isfinite(L_inf) or L_inf < 0:
        raise InvalidParameter(f"L_inf must be finite and non-negative (got {L_inf!r}).")
    out = L_inf * np.maximum(0.0, 1.0 - _widths_array(d_S) * g_alpha(alpha) / _feature_count(F))
    return out if np.ndim(d_S) else float(out)


def alpha_from_sae(F_alive, L0):
    """alpha = 1 - L0 / F for an SAE with F alive latents and L0 mean active latents per token."""
    f = _feature_count(F_alive)
    l0 = np.asarray(L0, dtype=np.float64)
    if np.any(l0 <= 0) or np.any(l0 >= f):
        raise InvalidParameter(f"L0 must lie in (0, F) (got L0={L0!r}, F={F_alive!r}).")
    out = 1.0 - l0 / f
    return out if out.ndim else float(out)


def accuracy_rel(predicted, measured):
    """max(0, 1 - |L_pred - L_meas| / L_meas); defined for pairs below d*_S."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.maximum(0.0, 1.0 - np.abs(p - m) / m)
    return np.where(m > 0, out, np.nan)


def accuracy_norm(predicted, measured, L_inf):
    """1 - |L_pred - L_meas| / L_inf; defined for every pair."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    return 1.0 - np.abs(p - m) / np.asarray(L_inf, float)


# ---- measurements of an SAE layer (ARCHITECTURE.md) ------------------------------------------
@dataclass(frozen=True)
class Measurement:
    """What the theory needs from one measured SAE: alive F, L0 and the sorted E[z^2] importances."""

    F_alive: int
    avg_active: float
    sorted_importance: np.ndarray
    layer: int | None = None
    snapshot: str | None = None

    @property
    def alpha(self) -> float:
        return alpha_from_sae(self.F_alive, self.avg_active)

    @property
    def g_alpha(self) -> float:
        return g_alpha(self.alpha)

    @property
    def d_star_S(self) -> float:
        return critical_width(self.F_alive, self.alpha)

    @property
    def L_inf(self) -> float:
        return float(self.sorted_importance.sum())

    def predictions(self, widths: Iterable[int]) -> dict[int, dict]:
        widths = [int(w) for w in widths]
        w = _widths_array(widths)
        kept = np.atleast_1d(feature_budget(self.F_alive, w, self.alpha))
        refined = np.atleast_1d(refined_floor(self.sorted_importance, w, self.alpha))
        naive = np.atleast_1d(naive_floor(self.L_inf, self.F_alive, w, self.alpha))
        return {
            width: {
                "features_kept": int(k),
                "features_dropped": int(self.F_alive - k),
                "predicted_floor": float(r),
                "naive_floor": float(n),
            }
            for width, k, r, n in zip(widths, kept, refined, naive)
        }

    def summary(self, widths: Iterable[int]) -> dict:
        return {
            "layer": self.layer,
            "snapshot": self.snapshot,
            "F_alive": self.F_alive,
            "avg_active": self.avg_active,
            "alpha": self.alpha,
            "g_alpha": self.g_alpha,
            "d_star_S": self.d_star_S,
            "L_inf": self.L_inf,
            "predictions": {str(k): v for k, v in self.predictions(widths).items()},
        }


def default_widths(d_model: int) -> list[int]:
    """Student widths {1/8, 1/4, 3/8, 1/2, 3/4, 1} x d_model (book/methods.md)."""
    return [max(1, round(d_model * f)) for f in (1 / 8, 1 / 4, 3 / 8, 1 / 2, 3 / 4, 1)]


def load_measurement(path: Path) -> Measurement:
    """Load a measurement JSON: ours, or the authors' released files (layer, F_alive, avg_active,
    sorted_importance only). Everything else is recomputed from those."""
    path = Path(path)
    data = read_json_object(path, "measurement file")
    missing = [k for k in ("F_alive", "avg_active", "sorted_importance") if k not in data]
    if missing:
        raise BadFile(f"measurement file {path} lacks the field(s) {', '.join(missing)}.")
    try:
        imp = check_sorted_importance(data["sorted_importance"])
        F = int(data["F_alive"])
        if F != imp.size:
            raise InvalidParameter(f"F_alive={F} but sorted_importance has {imp.size} entries")
        m = Measurement(
            F_alive=F,
            avg_active=float(data["avg_active"]),
            sorted_importance=imp,
            layer=data.get("layer"),
            snapshot=data.get("snapshot"),
        )
        _ = m.alpha  # validates L0 against F
    except (InvalidParameter, TypeError, ValueError) as e:
        raise BadFile(f"measurement file {path} is inconsistent: {e}") from None
    return m
