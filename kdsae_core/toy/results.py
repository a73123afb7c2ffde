"""Experiment 1's results: toy_results.json from a sweep's measured floors (the theory's predictions and accuracy
beside them), and reading it back."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from kdsae_core import theory
from kdsae_core.common.errors import BadFile
from kdsae_core.common.fileio import read_json_object
from kdsae_core.common.paths import TOY_RESULTS_FILE
from kdsae_core.toy.config import KNEE_TOLERANCE, REPRESENTED_THRESHOLDS, ToyConfig
from kdsae_core.toy.model import expected_x_squared, importance_profile


def knee_width(widths: list[int], floors: list[float], L_inf: float) -> int:
    """First width whose measured floor is within KNEE_TOLERANCE * L_inf of the smallest floor."""
    best = min(floors)
    return next(w for w, f in zip(widths, floors) if f <= best + KNEE_TOLERANCE * L_inf)


def assemble_results(cfg: ToyConfig, measured: dict) -> dict:
    configs = []
    for n in cfg.n:
        imp = importance_profile(cfg.importance, n).numpy()
        for ai, a in enumerate(cfg.alpha):
            terms = imp * expected_x_squared(a)
            L_inf = float(terms.sum())
            g = theory.g_alpha(a)
            d_star = theory.critical_width(n, a)
            for d_t in cfg.d_teacher:
                ws = cfg.student_widths(d_t, n, a)
                m, t = measured[(n, d_t)]["student"], measured[(n, d_t)]["teacher"]
                per_seed = m["floor"][ai].T  # [K, S]
                med = np.median(per_seed, axis=1)
                pred = np.atleast_1d(theory.refined_floor(terms, ws, a))
                naive = np.atleast_1d(theory.naive_floor(L_inf, n, ws, a))
                below = np.asarray(ws) < d_star
                acc_rel = np.where(below, theory.accuracy_rel(pred, med), np.nan)
                acc_norm = theory.accuracy_norm(pred, med, L_inf)
                configs.append(
                    {
                        "n": n,
                        "alpha": a,
                        "d_teacher": d_t,
                        "importance": cfg.importance,
                        "mode": cfg.mode,
                        "widths": ws,
                        "measured_floor": per_seed.tolist(),
                        "measured_floor_median": med.tolist(),
                        "kept_features": m["kept"][ai].T.tolist(),
                        "teacher_floor": t["floor"][ai][:, 0].tolist() if cfg.mode == "distill" else None,
                        "predicted_floor": pred.tolist(),
                        "naive_floor": naive.tolist(),
                        "L_inf": L_inf,
                        "d_star_S": d_star,
                        "g_alpha": g,
                        "feature_budget": np.atleast_1d(theory.feature_budget(n, ws, a)).tolist(),
                        "accuracy_rel": [None if math.isnan(v) else float(v) for v in acc_rel],
                        "accuracy_norm": acc_norm.tolist(),
                        "knee_width": knee_width(ws, med.tolist(), L_inf),
                        **_represented_fields(m, ai, lambda v: v.T),
                        **(
                            _represented_fields(t, ai, lambda v: v[:, 0], prefix="teacher_")
                            if cfg.mode == "distill"
                            else {}
                        ),
                    }
                )
    return results_dict(cfg, configs, torch.get_num_threads())


def _represented_fields(measured: dict, ai: int, layout, prefix: str = "") -> dict:
    """`represented_features`, `floor_dropped` and `floor_interference` of level ai, each {threshold: values}
    (floors to 8 significant digits: they are read as fractions of L_inf, and the file stays small)."""

    def values(key, t):
        v = layout(measured[f"{key}@{t}"][ai])
        return v.tolist() if key == "represented" else np.vectorize(lambda f: float(f"{f:.8g}"))(v).tolist()

    return {
        prefix + name: {str(t): values(key, t) for t in REPRESENTED_THRESHOLDS}
        for name, key in (
            ("represented_features", "represented"),
            ("floor_dropped", "dropped"),
            ("floor_interference", "interference"),
        )
    }


def results_dict(cfg: ToyConfig, configs: list[dict], torch_threads: int) -> dict:
    """toy_results.json from its per-configuration entries (in the order n, alpha, d_T of cfg)."""
    medians, excluded = summarise_accuracy(configs)
    return {
        "configs": configs,
        "median_accuracy_by_alpha": medians,
        "excluded": excluded,
        "settings": {
            **dataclasses.asdict(cfg),
            "matches_paper_grid": cfg.matches_paper_grid(),
            "data_sharing": "models that share (n, alpha) share data batches; seeds differ in initialisation",
            "knee_tolerance": KNEE_TOLERANCE,
            "torch_threads": torch_threads,
        },
    }


def summarise_accuracy(configs: list[dict]) -> tuple[dict, dict]:
    """Median accuracy per alpha over all (config, width) pairs; `rel` only below d*_S."""
    medians = {"rel": {}, "norm": {}}
    excluded = {}
    for a in sorted({c["alpha"] for c in configs}):
        cs = [c for c in configs if c["alpha"] == a]
        rel = [v for c in cs for v in c["accuracy_rel"] if v is not None]
        norm = [v for c in cs for v in c["accuracy_norm"]]
        total = sum(len(c["widths"]) for c in cs)
        key = repr(a)
        medians["rel"][key] = float(np.median(rel)) if rel else "no pairs"
        medians["norm"][key] = float(np.median(norm))
        excluded[key] = {
            "pairs": total,
            "rel_excluded_at_or_above_d_star": total - len(rel),
            "reason": "accuracy_rel is defined only below d*_S, where a non-zero floor is predicted",
        }
    return medians, excluded


def load_results(path: Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / TOY_RESULTS_FILE
    if not path.exists():
        raise BadFile(f"toy results {path} do not exist; run `kdsae toy --out {path.parent}` first.")
    data = read_json_object(path, "toy results")
    if "configs" not in data:
        raise BadFile(f"toy results {path} lack the `configs` list.")
    return data
