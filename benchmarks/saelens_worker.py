"""The SAELens side of benchmarks.saelens_compare (benchmarks/vs_saelens.py, tests/saelens/test_saelens_trajectory.py).

Run by the SAELens environment's python (.venv-saelens: sae-lens 6.x, torch 2.13.0 CPU); it imports only
sae_lens, torch and safetensors. It reads one JSON command per line on stdin and answers one JSON line on stdout:

  {"cmd": "setup", "d_in", "d_sae", "l1_coefficient", "lr", "weights": FILE, "batches": FILE,
   "convention": "shipped" | "unit_norm", "threads", "clock": "wall" | "cpu"}
      builds sae_lens.StandardTrainingSAE with the given initial weights (W_enc, b_enc, W_dec, b_dec from a
      safetensors FILE) and sae_lens.SAETrainer (constant lr, Adam betas (0.9, 0.999), no autocast, no wandb);
      the batches (safetensors FILE, tensors x0, x1, ...) are used in turn.
  {"cmd": "steps", "n"}      -> {"seconds": ..., "losses": [...], "mse": [...], "l1": [...]}
      n calls of SAETrainer.step (SAELens' own training step: its forward pass, its loss, autograd backward,
      clip_grad_norm_(1.0), its Adam), timed together.
  {"cmd": "quit"}

Conventions: "shipped" is SAELens' standard SAE as it comes (loss = MSE summed over d_in + l1_coefficient *
sum_i |z_i| ||W_dec,i||, decoder norms free). "unit_norm" is the same trainer with kdsae's conventions
(book/methods.md): decoder rows rescaled to unit norm after every trainer step, and the L1 read as
sum_i |z_i| -- on unit-norm rows that is the value SAELens' decoder-norm-weighted L1 has; only the gradient
through the norm factor (which is 1 here) is dropped.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from sae_lens import LoggingConfig, SAETrainer, StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.config import SAETrainerConfig
from safetensors.torch import load_file


class UnitNormL1SAE(StandardTrainingSAE):
    """SAELens' standard training SAE with the L1 as sum_i |z_i| (the value of its weighted L1 on unit rows)."""

    def calculate_aux_loss(self, step_input, feature_acts, hidden_pre, sae_out):
        return {"l1_loss": step_input.coefficients["l1"] * feature_acts.abs().sum(-1).mean()}


class Worker:
    def setup(self, job: dict) -> dict:
        if job.get("threads"):
            torch.set_num_threads(int(job["threads"]))
        self.convention = job.get("convention", "shipped")
        self.clock = time.process_time if job.get("clock") == "cpu" else time.perf_counter
        cls = UnitNormL1SAE if self.convention == "unit_norm" else StandardTrainingSAE
        cfg = StandardTrainingSAEConfig(
            d_in=int(job["d_in"]),
            d_sae=int(job["d_sae"]),
            l1_coefficient=float(job["l1_coefficient"]),
            dtype="float32",
            device="cpu",
            apply_b_dec_to_input=True,
            normalize_activations="none",
        )
        self.sae = cls(cfg)
        w = load_file(job["weights"])
        with torch.no_grad():
            for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
                getattr(self.sae, name).copy_(w[name])
        b = load_file(job["batches"])
        self.batches = [b[f"x{i}"] for i in range(len(b))]
        self.i = 0
        B = self.batches[0].shape[0]
        tcfg = SAETrainerConfig(
            total_training_samples=B * 10**9,
            train_batch_size_samples=B,
            lr=float(job.get("lr", 3e-4)),
            lr_end=float(job.get("lr", 3e-4)) / 10,
            adam_beta1=0.9,
            adam_beta2=0.999,
            device="cpu",
            autocast=False,
            logger=LoggingConfig(log_to_wandb=False),
        )
        self.trainer = SAETrainer(cfg=tcfg, sae=self.sae, data_provider=iter(()))
        import sae_lens

        return {
            "sae_lens": sae_lens.__version__,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "class": type(self.sae).__name__,
        }

    def steps(self, job: dict) -> dict:
        n = int(job["n"])
        losses, mse, l1 = [], [], []
        t = self.clock()
        for _ in range(n):
            x = self.batches[self.i % len(self.batches)]
            self.i += 1
            out = self.trainer.step(x)
            self.trainer.n_training_steps += 1
            if self.convention == "unit_norm":
                with torch.no_grad():
                    self.sae.W_dec.div_(self.sae.W_dec.norm(dim=1, keepdim=True))
            losses.append(out.loss.detach())
            mse.append(out.losses["mse_loss"].detach())
            l1.append(out.losses["l1_loss"].detach())
        seconds = self.clock() - t
        return {
            "seconds": seconds,
            "losses": [float(v) for v in losses],
            "mse": [float(v) for v in mse],
            "l1": [float(v) for v in l1],
        }


def main() -> None:
    w = Worker()
    for line in sys.stdin:
        job = json.loads(line)
        cmd = job.get("cmd")
        if cmd == "quit":
            break
        try:
            out = getattr(w, cmd)(job)
        except Exception as e:  # reported to the driver, which fails with it
            import traceback

            out = {"error": f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
