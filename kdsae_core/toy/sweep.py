"""Experiment 1: the toy-model sweep (book/methods.md) as one batched program, and its results.

Every (sparsity, seed, width) model of a feature count n and teacher width d_T lives in one `Block`.
Models that share (n, alpha) share data batches; seeds differ in initialisation.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import signal
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from kdsae_core import theory
from kdsae_core.common.errors import BadFile, InvalidParameter
from kdsae_core.common.fileio import atomic_write_json, load_verified, read_json_object, save_verified
from kdsae_core.common.locks import run_lock
from kdsae_core.common.paths import TOY_PARTS_DIR, TOY_RESULTS_FILE, TOY_STATE_FILE
from kdsae_core.toy.model import Block, DataStream, cosine_lr, expected_x_squared, importance_profile, stream_seed
from kdsae_core.toy.profiles import KNEE_WIDTHS, PROFILES

KNEE_TOLERANCE = 0.02  # knee width: first width within 2% of L_inf of the best measured floor
REPRESENTED_THRESHOLDS = (0.3, 0.5, 0.7)  # a feature is represented when ||W_i|| >= the threshold
EVAL_CHUNK = 4096


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
            raise InvalidParameter("--widths knee is for --mode direct (a distilled student's floor stops at its "
                                   "teacher's width, so widths past the knee test nothing).")
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
        if len(set(self.n)) != len(self.n) or len(set(self.alpha)) != len(self.alpha) \
                or len(set(self.d_teacher)) != len(self.d_teacher):
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
        return (sorted(self.n) == p["n"] and sorted(self.alpha) == p["alpha"]
                and sorted(self.d_teacher) == p["d_teacher"] and self.seeds == p["seeds"]
                and self.steps == p["steps"] and self.batch == p["batch"] and self.lr == p["lr"]
                and self.eval_samples == p["eval_samples"] and self.widths is None and self.mode == "distill")


# ---- building the batched program ------------------------------------------------------------------
def _model_seed(cfg: ToyConfig, role: str, n: int, alpha: float, d_t: int, width: int, s: int) -> int:
    return stream_seed(cfg.seed, role, n, alpha, d_t, width, s)


def build_blocks(cfg: ToyConfig, n: int, d_t: int, role: str, alphas=None, seeds=None, ws=None) -> Block:
    """The teachers (role `teacher`, K=1) or students (K widths, the same at every alpha) of one (n, d_T)."""
    alphas = cfg.alpha if alphas is None else alphas
    seeds = range(cfg.seeds) if seeds is None else seeds
    ws = ([d_t] if role == "teacher" else cfg.student_widths(d_t, n, alphas[0])) if ws is None else ws
    widths = [[[w for w in ws] for _ in seeds] for _ in alphas]
    model_seeds = [[[_model_seed(cfg, role, n, a, d_t, w, s) for w in ws] for s in seeds] for a in alphas]
    d = max(ws)
    return Block(n, d, widths, model_seeds, importance_profile(cfg.importance, n))


class _Interrupted(Exception):
    """Training stopped early with its state saved."""


class ToySweep:
    """The whole sweep: teacher phase, then student phase, resumable from `DIR/toy_state.pt`."""

    def __init__(self, cfg: ToyConfig, out: Path | None = None, progress: bool = True, only: tuple | None = None,
                 bar_position: int | None = None):
        """`only=(seed_index, width)` trains just that model of every configuration (and its teacher):
        the one-model-at-a-time reference for tests and benchmarks. `bar_position`: the progress bar's line
        when several sweeps share a terminal (toy_parallel)."""
        cfg.validate()
        self.cfg, self.out, self.progress = cfg, (Path(out) if out else None), progress
        self.bar_position = bar_position
        if only is not None and cfg.widths == KNEE_WIDTHS:
            raise InvalidParameter("one model at a time (only=) needs widths that are the same at every sparsity, "
                                   "not --widths knee.")
        seeds = None if only is None else [only[0]]
        # levels[(n, d, w)]: the sparsity levels (indices into cfg.alpha) that train a student of width w; every
        # level unless the widths depend on alpha ("knee").
        self.levels = {(n, d, w): [a for a, alpha in enumerate(cfg.alpha) if w in cfg.student_widths(d, n, alpha)]
                       for n in cfg.n for d in cfg.d_teacher
                       for w in sorted({w for alpha in cfg.alpha for w in cfg.student_widths(d, n, alpha)})}
        if only is not None:
            self.levels = {(n, d, only[1]): list(range(len(cfg.alpha))) for n in cfg.n for d in cfg.d_teacher}
        self.widths = {(n, d): [w for (n2, d2, w) in self.levels if (n2, d2) == (n, d)]
                       for n in cfg.n for d in cfg.d_teacher}
        self.teachers = {(n, d): build_blocks(cfg, n, d, "teacher", seeds=seeds)
                         for n in cfg.n for d in cfg.d_teacher}
        # One block per student width: padding narrow students to d_T cost 1.2-1.6x in step time.
        self.students = {(n, d, w): build_blocks(cfg, n, d, "student", seeds=seeds, ws=[w],
                                                 alphas=[cfg.alpha[a] for a in levels])
                         for (n, d, w), levels in self.levels.items()}
        self.streams = {(phase, n): DataStream(n, cfg.alpha, (cfg.seed, phase))
                        for phase in ("teacher", "student") for n in cfg.n}
        self.phase, self.step_in_phase = ("teacher" if cfg.mode == "distill" else "student"), 0

    # -- state ------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "config": dataclasses.asdict(self.cfg), "phase": self.phase, "step": self.step_in_phase,
            "teachers": {k: b.state() for k, b in self.teachers.items()},
            "students": {k: b.state() for k, b in self.students.items()},
            "streams": {k: s.state() for k, s in self.streams.items()},
        }

    def save(self) -> None:
        if self.out is None:
            return
        buf = io.BytesIO()
        torch.save(self.state(), buf)
        save_verified(self.out / TOY_STATE_FILE, buf.getvalue())

    def try_resume(self) -> bool:
        """Load the newest intact state of `out` (a corrupted one falls back to the previous generation)."""
        if self.out is None:
            return False
        found = load_verified(self.out / TOY_STATE_FILE)
        if found is None:
            return False
        data, path = found
        st = torch.load(io.BytesIO(data), weights_only=True)
        if st["config"] != dataclasses.asdict(self.cfg):
            raise InvalidParameter(f"{path} belongs to a sweep with other settings; use another --out or delete it.")
        self.phase, self.step_in_phase = st["phase"], st["step"]
        for k, b in self.teachers.items():
            b.load_state(st["teachers"][k])
        for k, b in self.students.items():
            b.load_state(st["students"][k])
        for k, s in self.streams.items():
            s.load_state(st["streams"][k])
        return True

    # -- training ---------------------------------------------------------------------------------
    def _train_phase(self, phase: str, stop_after: int | None = None) -> None:
        cfg = self.cfg
        blocks = self.teachers if phase == "teacher" else self.students
        start = self.step_in_phase if self.phase == phase else 0
        self.phase, self.step_in_phase = phase, start
        n_models = sum(b.count for b in blocks.values())
        n_list = "" if self.bar_position is None else f", n = {','.join(map(str, cfg.n))}"
        bar = tqdm(total=cfg.steps, initial=start, desc=f"toy {phase}s ({n_models} models{n_list})",
                   disable=not self.progress, unit="step", mininterval=2.0, position=self.bar_position)
        stop = {"flag": False}

        def on_signal(signum, frame):
            stop["flag"] = True

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} \
            if _main_thread() else {}
        try:
            for step in range(start, cfg.steps):
                self.train_step(phase, step)
                self.step_in_phase = step + 1
                bar.update(1)
                if stop["flag"] or (stop_after is not None and step + 1 == stop_after):
                    self.save()
                    raise _Interrupted()
                if self.out is not None and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                    self.save()
        finally:
            bar.close()
            for s, h in old.items():
                signal.signal(s, h)

    def train_step(self, phase: str, step: int) -> None:
        """One optimizer step of every model of the phase (teachers, or students against their teacher)."""
        cfg = self.cfg
        lr = cosine_lr(cfg.lr, step, cfg.steps)
        for n in cfg.n:
            x = self.streams[(phase, n)].sample(cfg.batch)
            for d in cfg.d_teacher:
                if phase == "teacher":
                    self.teachers[(n, d)].step(x, None, lr)
                    continue
                students = [self.students[(n, d, w)] for w in self.widths[(n, d)]]
                levels = [self.levels[(n, d, w)] for w in self.widths[(n, d)]]
                grads = [s.gradient_buffer() for s in students]
                # Level by level: the teacher's output for one sparsity level stays in cache while every
                # student width trains on it (all levels at once is 13 MB at n = 40, read once per width).
                for a in range(len(cfg.alpha)):
                    y = self.teachers[(n, d)].forward_level(a, x[a], scratch=True).unsqueeze(1) \
                        if cfg.mode == "distill" else None                          # [S, 1, B, n]
                    for student, grad, own in zip(students, grads, levels):
                        if a in own:
                            student.gradient_level(own.index(a), x[a], y, grad)
                for student, grad in zip(students, grads):
                    student.apply_gradient(grad, lr)

    def train(self, stop_after: tuple[str, int] | None = None) -> None:
        """Train to the end; `stop_after=(phase, step)` saves the state there and raises _Interrupted
        (what SIGINT/SIGTERM do too)."""
        def limit(phase):
            return stop_after[1] if stop_after and stop_after[0] == phase else None

        if self.cfg.mode == "distill" and self.phase == "teacher":
            self._train_phase("teacher", limit("teacher"))
            self.phase, self.step_in_phase = "student", 0
            self.save()
        if self.phase == "student":
            self._train_phase("student", limit("student"))
            self.phase = "done"

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self) -> dict:
        """Measured floors (loss against ground truth on fixed fresh samples), kept features, and each floor split
        by the features each model represents. out[(n, d)][key][a]: level a's values, [S, K_a] for students
        (the K_a widths trained at that level) and [S, 1] for the teacher."""
        cfg, out = self.cfg, {}
        for n in cfg.n:
            stream = DataStream(n, cfg.alpha, (cfg.seed, "eval"))
            every = list(range(len(cfg.alpha)))
            # (block, the levels it trained at): the teacher first, then one block per student width
            blocks = {d: [(self.teachers[(n, d)], every)]
                      + [(self.students[(n, d, w)], self.levels[(n, d, w)]) for w in self.widths[(n, d)]]
                      for d in cfg.d_teacher}
            totals = {d: [torch.zeros(b.shape, dtype=torch.float64) for b, _ in bs] for d, bs in blocks.items()}
            parts = {d: [torch.zeros(*b.shape, n, dtype=torch.float64) for b, _ in bs] for d, bs in blocks.items()}
            remaining = cfg.eval_samples
            while remaining:
                chunk = min(EVAL_CHUNK, remaining)
                x = stream.sample(chunk)
                for d, bs in blocks.items():
                    for total, part, (b, levels) in zip(totals[d], parts[d], bs):
                        loss, per_feature = b.loss_terms(x if levels == every else x[levels])
                        total += loss * chunk
                        part += per_feature * chunk
                remaining -= chunk
            for d, bs in blocks.items():
                measured = [_split_floor(t / cfg.eval_samples, p / cfg.eval_samples, b.feature_norms(), b.kept_features())
                            for t, p, (b, _) in zip(totals[d], parts[d], bs)]
                out[(n, d)] = {"teacher": _by_level(measured[:1], [every], len(cfg.alpha)),
                               "student": _by_level(measured[1:], [levels for _, levels in bs[1:]], len(cfg.alpha))}
        return out


def _split_floor(floor: torch.Tensor, per_feature: torch.Tensor, norms: torch.Tensor, kept: torch.Tensor) -> dict:
    """One block's measured floor [A, S, K] and, per threshold t, the features it represents (||W_i|| >= t), the
    loss on the features it drops (what the theory counts) and on those it represents (interference, which the
    theory sets to zero)."""
    out = {"floor": floor, "kept": kept}
    for t in REPRESENTED_THRESHOLDS:
        held = norms >= t
        out[f"represented@{t}"] = held.sum(-1)
        out[f"dropped@{t}"] = (per_feature * ~held).sum(-1)
        out[f"interference@{t}"] = (per_feature * held).sum(-1)
    return out


def _by_level(measured: list[dict], levels: list[list[int]], n_levels: int) -> dict:
    """Per-block values [A_b, S, 1] (a student block holds one width) regrouped per level: {key: [S, K_a] per a}."""
    return {key: [torch.cat([m[key][own.index(a)] for m, own in zip(measured, levels) if a in own], dim=1).numpy()
                  for a in range(n_levels)]
            for key in measured[0]}


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


# ---- results ------------------------------------------------------------------------------------------
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
                per_seed = m["floor"][ai].T          # [K, S]
                med = np.median(per_seed, axis=1)
                pred = np.atleast_1d(theory.refined_floor(terms, ws, a))
                naive = np.atleast_1d(theory.naive_floor(L_inf, n, ws, a))
                below = np.asarray(ws) < d_star
                acc_rel = np.where(below, theory.accuracy_rel(pred, med), np.nan)
                acc_norm = theory.accuracy_norm(pred, med, L_inf)
                configs.append({
                    "n": n, "alpha": a, "d_teacher": d_t, "importance": cfg.importance, "mode": cfg.mode,
                    "widths": ws,
                    "measured_floor": per_seed.tolist(),
                    "measured_floor_median": med.tolist(),
                    "kept_features": m["kept"][ai].T.tolist(),
                    "teacher_floor": t["floor"][ai][:, 0].tolist() if cfg.mode == "distill" else None,
                    "predicted_floor": pred.tolist(), "naive_floor": naive.tolist(),
                    "L_inf": L_inf, "d_star_S": d_star, "g_alpha": g,
                    "feature_budget": np.atleast_1d(theory.feature_budget(n, ws, a)).tolist(),
                    "accuracy_rel": [None if math.isnan(v) else float(v) for v in acc_rel],
                    "accuracy_norm": acc_norm.tolist(),
                    "knee_width": knee_width(ws, med.tolist(), L_inf),
                    **_represented_fields(m, ai, lambda v: v.T),
                    **(_represented_fields(t, ai, lambda v: v[:, 0], prefix="teacher_") if cfg.mode == "distill"
                       else {}),
                })
    return results_dict(cfg, configs, torch.get_num_threads())


def _represented_fields(measured: dict, ai: int, layout, prefix: str = "") -> dict:
    """`represented_features`, `floor_dropped` and `floor_interference` of level ai, each {threshold: values}
    (floors to 8 significant digits: they are read as fractions of L_inf, and the file stays small)."""
    def values(key, t):
        v = layout(measured[f"{key}@{t}"][ai])
        return v.tolist() if key == "represented" else np.vectorize(lambda f: float(f"{f:.8g}"))(v).tolist()

    return {prefix + name: {str(t): values(key, t) for t in REPRESENTED_THRESHOLDS}
            for name, key in (("represented_features", "represented"), ("floor_dropped", "dropped"),
                              ("floor_interference", "interference"))}


def results_dict(cfg: ToyConfig, configs: list[dict], torch_threads: int) -> dict:
    """toy_results.json from its per-configuration entries (in the order n, alpha, d_T of cfg)."""
    medians, excluded = summarise_accuracy(configs)
    return {"configs": configs, "median_accuracy_by_alpha": medians, "excluded": excluded,
            "settings": {**dataclasses.asdict(cfg), "matches_paper_grid": cfg.matches_paper_grid(),
                         "data_sharing": "models that share (n, alpha) share data batches; seeds differ in initialisation",
                         "knee_tolerance": KNEE_TOLERANCE, "torch_threads": torch_threads}}


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
        excluded[key] = {"pairs": total, "rel_excluded_at_or_above_d_star": total - len(rel),
                         "reason": "accuracy_rel is defined only below d*_S, where a non-zero floor is predicted"}
    return medians, excluded


def run_sweep(cfg: ToyConfig, out: Path | None = None, progress: bool = True, resume: bool = True,
              bar_position: int | None = None) -> dict:
    """Train, evaluate and (with `out`) write `out/toy_results.json` atomically. With `out`, the sweep
    holds the folder's lock, saves its state every `checkpoint_every` steps and resumes from it.
    (toy_parallel.run_parallel does the same over several processes.)"""
    if out is None:
        return _run(ToySweep(cfg, None, progress, bar_position=bar_position), None, resume)
    if (Path(out) / TOY_PARTS_DIR).is_dir():
        raise InvalidParameter(f"{out} holds the parts of a sweep split over processes ({TOY_PARTS_DIR}/): resume it "
                               "with the same --jobs, or use another --out.")
    with run_lock(out):
        return _run(ToySweep(cfg, out, progress, bar_position=bar_position), Path(out), resume)


def _run(sweep: ToySweep, out: Path | None, resume: bool) -> dict:
    if resume:
        sweep.try_resume()
    try:
        sweep.train()
    except _Interrupted:
        raise KeyboardInterrupt("toy sweep interrupted; state saved, rerun the same command to resume") from None
    results = assemble_results(sweep.cfg, sweep.evaluate())
    if out is not None:
        atomic_write_json(out / TOY_RESULTS_FILE, results)
        for leftover in out.glob(f"{TOY_STATE_FILE}*"):
            leftover.unlink()
    return results


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

