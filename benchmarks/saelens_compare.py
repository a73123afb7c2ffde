"""kdsae's SAE step next to SAELens' standard SAE training step, in SAELens' own environment.

SAELens 6.x pins transformer-lens < 4, so it runs in .venv-saelens (`make saelens-env`); `SAELensWorker`
drives `saelens_worker.py` there over a pipe (one JSON line per command), so one script can alternate between
the two trainers while only one of them computes at a time.

Matching conventions (read from sae_lens/saes/sae.py, standard_sae.py and training/sae_trainer.py, 6.54):
- SAELens: loss = sum_d (x_hat - x)^2 averaged over tokens (MSE summed over d_in) + l1_coefficient *
  sum_i |z_i| ||W_dec,i|| averaged over tokens; b_dec is subtracted from the input (apply_b_dec_to_input);
  z = ReLU((x - b_dec) W_enc + b_enc); the trainer clips the gradient norm at 1.0 and runs torch Adam; the
  decoder norms are never reset (the L1 weighting by them replaces that).
- kdsae: loss = MSE averaged over tokens and d_in + lambda * L1 (`sum`: sum_i |z_i|, `mean`: that / d_sae);
  the decoder rows are renormalised after every step.
- So on unit-norm rows SAELens' loss is exactly d_in x ours when l1_coefficient = lambda * d_in (`sum`) or
  lambda * d_in / d_sae (`mean`). A loss d_in times larger has d_in times larger gradients; Adam then takes the
  same steps if its eps is d_in times larger, and clipping at 1.0 acts like clipping ours at 1 / d_in. The
  matched kdsae unit therefore uses grad_clip = 1 / d_in and Adam eps = 1e-8 / d_in, and we compare
  SAELens' losses divided by d_in with ours.
- What remains is the decoder: with the worker's `unit_norm` convention SAELens' decoder rows are rescaled to
  unit norm after each of its steps (as ours), and its L1 is read as sum_i |z_i| (its value on unit rows), so
  the gradient through the norm factor -- a component along each decoder row, which SAELens needs because it
  never renormalises -- is not added. The `shipped` convention leaves SAELens exactly as it comes; its
  trajectory then differs from ours by design, and `trajectory_comparison` reports by how much.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from kdsae_core.common.adam import ADAM_EPS
from kdsae_core.common.errors import MissingData
from kdsae_core.common.paths import REPO_ROOT
from kdsae_core.sae.model import TrialSpec
from kdsae_core.sae.step import SAEUnit

WORKER = Path(__file__).with_name("saelens_worker.py")
DEFAULT_PYTHON = REPO_ROOT / ".venv-saelens" / "bin" / "python"


def saelens_python(explicit: str | os.PathLike | None = None) -> Path:
    """The SAELens environment's python: `explicit`, else $KDSAE_SAELENS_PYTHON, else .venv-saelens/bin/python."""
    exe = Path(explicit or os.environ.get("KDSAE_SAELENS_PYTHON") or DEFAULT_PYTHON)
    if not exe.exists():
        raise MissingData(
            f"the SAELens environment's python {exe} does not exist: run `make saelens-env` "
            "(or set KDSAE_SAELENS_PYTHON)."
        )
    return exe


def matched_l1_coefficient(lam: float, form: str, d_in: int, d_sae: int) -> float:
    """SAELens' l1_coefficient whose loss is d_in x kdsae's loss with lambda `lam` in form `form`."""
    return lam * d_in if form == "sum" else lam * d_in / d_sae


def matched_unit(spec: TrialSpec, d_in: int, d_sae: int, seed: int, lr: float) -> SAEUnit:
    """A kdsae unit that takes the steps SAELens takes on a loss d_in times larger (clip 1.0, eps 1e-8)."""
    unit = SAEUnit(spec, 0, d_in, d_sae, seed=seed, lr=lr, grad_clip=1.0 / d_in)
    for group in unit.opt.param_groups:
        group["eps"] = ADAM_EPS / d_in
    return unit


class SAELensWorker:
    """A running saelens_worker.py (context manager). `env` extends this process's environment."""

    def __init__(self, python: str | os.PathLike | None = None, env: dict | None = None):
        self.python = saelens_python(python)
        self.proc = subprocess.Popen(
            [str(self.python), str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=str(REPO_ROOT),
        )

    def call(self, **job) -> dict:
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the SAELens worker ({self.python}) exited with status {self.proc.wait()}")
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"the SAELens worker failed: {out['error']}")
        return out

    def setup(
        self,
        unit_weights: dict[str, torch.Tensor],
        batches: list[torch.Tensor],
        l1_coefficient: float,
        lr: float,
        convention: str,
        threads: int | None = None,
        folder: Path | None = None,
        clock: str = "wall",
    ) -> dict:
        folder = Path(folder or tempfile.mkdtemp(prefix="kdsae-saelens-"))
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in unit_weights.items()}, str(folder / "weights.safetensors")
        )
        save_file({f"x{i}": b.contiguous() for i, b in enumerate(batches)}, str(folder / "batches.safetensors"))
        d_sae, d_in = unit_weights["W_dec"].shape
        return self.call(
            cmd="setup",
            d_in=int(d_in),
            d_sae=int(d_sae),
            l1_coefficient=float(l1_coefficient),
            lr=float(lr),
            weights=str(folder / "weights.safetensors"),
            batches=str(folder / "batches.safetensors"),
            convention=convention,
            threads=threads,
            clock=clock,
        )

    def steps(self, n: int) -> dict:
        return self.call(cmd="steps", n=int(n))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def trajectory_batches(d_in: int, B: int, n: int, seed: int = 0, scale: float = 1.0) -> list[torch.Tensor]:
    """Activation-like batches: sparse non-negative codes on a random unit dictionary, an offset, a little noise,
    times `scale`."""
    g = torch.Generator().manual_seed(seed)
    n_feat = 4 * d_in
    dictionary = torch.randn(n_feat, d_in, generator=g)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    offset = torch.randn(d_in, generator=g) * 0.5
    out = []
    for _ in range(n):
        codes = torch.rand(B, n_feat, generator=g) * (torch.rand(B, n_feat, generator=g) < 0.05)
        out.append((codes @ dictionary * 3 + offset + 0.05 * torch.randn(B, d_in, generator=g)) * scale)
    return out


def trajectory_comparison(
    d_in: int,
    d_sae: int,
    B: int,
    steps: int,
    spec: TrialSpec,
    lr: float = 3e-4,
    seed: int = 0,
    scale: float = 1.0,
    python=None,
    conventions=("unit_norm", "shipped"),
    threads=None,
    worker: SAELensWorker | None = None,
) -> dict:
    """Train kdsae's matched unit and SAELens (each convention) from the same weights on the same batches.

    Returns our losses (and MSE, L1 parts, how many steps were clipped), SAELens' divided by d_in, and per
    convention the largest relative difference of the loss over the steps. `worker`: a running SAELensWorker
    to reuse (else one is started and stopped)."""
    batches = trajectory_batches(d_in, B, steps, seed, scale)
    unit = matched_unit(spec, d_in, d_sae, seed, lr)
    init = {k: v.clone() for k, v in unit.sae.tensors().items()}
    ours = {"loss": [], "mse": [], "l1": [], "clipped": 0}
    for x in batches:
        s = unit.step(x)
        ours["loss"].append(float(s.loss))
        ours["mse"].append(float(s.mse))
        ours["l1"].append(float(s.l1))
        ours["clipped"] += int(float(unit.opt.grad_scale) > 1.0)
    l1c = matched_l1_coefficient(spec.l1_coeff, spec.l1_form, d_in, d_sae)
    out = {
        "d_in": d_in,
        "d_sae": d_sae,
        "batch_tokens": B,
        "steps": steps,
        "trial": spec.to_json(),
        "lr": lr,
        "seed": seed,
        "scale": scale,
        "saelens_l1_coefficient": l1c,
        "ours": ours,
        "saelens": {},
    }
    w = worker or SAELensWorker(python)
    try:
        for conv in conventions:
            with tempfile.TemporaryDirectory(prefix="kdsae-saelens-") as tmp:
                info = w.setup(init, batches, l1c, lr, conv, threads=threads, folder=Path(tmp))
                r = w.steps(steps)
            # SAELens reports l1_loss with its coefficient: / (d_in lambda) gives our L1 (either form).
            theirs = {
                "loss": [v / d_in for v in r["losses"]],
                "mse": [v / d_in for v in r["mse"]],
                "l1": [v / (d_in * spec.l1_coeff) for v in r["l1"]] if spec.l1_coeff else None,
            }
            rel = [abs(a - b) / abs(b) for a, b in zip(theirs["loss"], ours["loss"])]
            out["saelens"][conv] = {
                **theirs,
                "max_rel_diff_loss": max(rel),
                "rel_diff_loss_last": rel[-1],
                "info": info,
            }
    finally:
        if worker is None:
            w.close()
    return out
