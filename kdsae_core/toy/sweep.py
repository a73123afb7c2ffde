"""Experiment 1: the toy-model sweep (book/methods.md) as one batched program, trained and evaluated.

Every (sparsity, seed, width) model of a feature count n and teacher width d_T lives in one `Block`.
Models that share (n, alpha) share data batches; seeds differ in initialisation. The settings are
kdsae_core.toy.config's, the results file kdsae_core.toy.results'.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import torch
from tqdm.auto import tqdm

from kdsae_core.common.errors import InvalidParameter
from kdsae_core.common.fileio import atomic_write_json, load_verified, save_verified
from kdsae_core.common.locks import run_lock
from kdsae_core.common.paths import TOY_PARTS_DIR, TOY_RESULTS_FILE, TOY_STATE_FILE
from kdsae_core.common.seeding import stream_seed
from kdsae_core.common.signals import stop_requests
from kdsae_core.toy.config import REPRESENTED_THRESHOLDS, ToyConfig
from kdsae_core.toy.model import Block, DataStream, cosine_lr, importance_profile
from kdsae_core.toy.profiles import KNEE_WIDTHS
from kdsae_core.toy.results import assemble_results

EVAL_CHUNK = 4096


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

    def __init__(
        self,
        cfg: ToyConfig,
        out: Path | None = None,
        progress: bool = True,
        only: tuple | None = None,
        bar_position: int | None = None,
    ):
        """`only=(seed_index, width)` trains just that model of every configuration (and its teacher):
        the one-model-at-a-time reference for tests and benchmarks. `bar_position`: the progress bar's line
        when several sweeps share a terminal (toy_parallel)."""
        cfg.validate()
        self.cfg, self.out, self.progress = cfg, (Path(out) if out else None), progress
        self.bar_position = bar_position
        if only is not None and cfg.widths == KNEE_WIDTHS:
            raise InvalidParameter(
                "one model at a time (only=) needs widths that are the same at every sparsity, not --widths knee."
            )
        seeds = None if only is None else [only[0]]
        # levels[(n, d, w)]: the sparsity levels (indices into cfg.alpha) that train a student of width w; every
        # level unless the widths depend on alpha ("knee").
        self.levels = {
            (n, d, w): [a for a, alpha in enumerate(cfg.alpha) if w in cfg.student_widths(d, n, alpha)]
            for n in cfg.n
            for d in cfg.d_teacher
            for w in sorted({w for alpha in cfg.alpha for w in cfg.student_widths(d, n, alpha)})
        }
        if only is not None:
            self.levels = {(n, d, only[1]): list(range(len(cfg.alpha))) for n in cfg.n for d in cfg.d_teacher}
        self.widths = {
            (n, d): [w for (n2, d2, w) in self.levels if (n2, d2) == (n, d)] for n in cfg.n for d in cfg.d_teacher
        }
        self.teachers = {(n, d): build_blocks(cfg, n, d, "teacher", seeds=seeds) for n in cfg.n for d in cfg.d_teacher}
        # One block per student width: padding narrow students to d_T cost 1.2-1.6x in step time.
        self.students = {
            (n, d, w): build_blocks(cfg, n, d, "student", seeds=seeds, ws=[w], alphas=[cfg.alpha[a] for a in levels])
            for (n, d, w), levels in self.levels.items()
        }
        self.streams = {
            (phase, n): DataStream(n, cfg.alpha, (cfg.seed, phase)) for phase in ("teacher", "student") for n in cfg.n
        }
        self.phase, self.step_in_phase = ("teacher" if cfg.mode == "distill" else "student"), 0

    # -- state ------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "config": dataclasses.asdict(self.cfg),
            "phase": self.phase,
            "step": self.step_in_phase,
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
        bar = tqdm(
            total=cfg.steps,
            initial=start,
            desc=f"toy {phase}s ({n_models} models{n_list})",
            disable=not self.progress,
            unit="step",
            mininterval=2.0,
            position=self.bar_position,
        )
        with stop_requests() as stop:
            try:
                for step in range(start, cfg.steps):
                    self.train_step(phase, step)
                    self.step_in_phase = step + 1
                    bar.update(1)
                    if stop.requested or (stop_after is not None and step + 1 == stop_after):
                        self.save()
                        raise _Interrupted()
                    if self.out is not None and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                        self.save()
            finally:
                bar.close()

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
                    y = (
                        self.teachers[(n, d)].forward_level(a, x[a], scratch=True).unsqueeze(1)
                        if cfg.mode == "distill"
                        else None
                    )  # [S, 1, B, n]
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
            blocks = {
                d: [(self.teachers[(n, d)], every)]
                + [(self.students[(n, d, w)], self.levels[(n, d, w)]) for w in self.widths[(n, d)]]
                for d in cfg.d_teacher
            }
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
                measured = [
                    _split_floor(t / cfg.eval_samples, p / cfg.eval_samples, b.feature_norms(), b.kept_features())
                    for t, p, (b, _) in zip(totals[d], parts[d], bs)
                ]
                out[(n, d)] = {
                    "teacher": _by_level(measured[:1], [every], len(cfg.alpha)),
                    "student": _by_level(measured[1:], [levels for _, levels in bs[1:]], len(cfg.alpha)),
                }
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
    return {
        key: [
            torch.cat([m[key][own.index(a)] for m, own in zip(measured, levels) if a in own], dim=1).numpy()
            for a in range(n_levels)
        ]
        for key in measured[0]
    }


def run_sweep(
    cfg: ToyConfig, out: Path | None = None, progress: bool = True, resume: bool = True, bar_position: int | None = None
) -> dict:
    """Train, evaluate and (with `out`) write `out/toy_results.json` atomically. With `out`, the sweep
    holds the folder's lock, saves its state every `checkpoint_every` steps and resumes from it.
    (toy_parallel.run_parallel does the same over several processes.)"""
    if out is None:
        return _run(ToySweep(cfg, None, progress, bar_position=bar_position), None, resume)
    if (Path(out) / TOY_PARTS_DIR).is_dir():
        raise InvalidParameter(
            f"{out} holds the parts of a sweep split over processes ({TOY_PARTS_DIR}/): resume it "
            "with the same --jobs, or use another --out."
        )
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
