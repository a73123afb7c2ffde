"""The activations each training step sees: the first process reads the tokens (tokenised ahead by the stream's
thread) and sends them to the others; one forward pass of the language model gives several steps' batches of
every layer, routed to the process that owns the layer."""

from __future__ import annotations

import torch

from kdsae_core.train.config import SAETrainConfig

FORWARD_TOKENS = 4096  # tokens per forward pass of the language model (several small steps' batches at once)


class ActivationBatches:
    """Each step's {layer: activations [batch_tokens, d_model]} in order, with the data position of the next step
    not yet trained on. `stream` is None on every process but the first."""

    def __init__(self, cfg: SAETrainConfig, stream, source, comm, layers: list[int]):
        self.cfg, self.stream, self.source, self.comm, self.layers = cfg, stream, source, comm, layers
        self.pending: list[tuple[dict[int, torch.Tensor], dict]] = []  # (activations, stream state) per step

    def forward_steps(self) -> int:
        return max(1, FORWARD_TOKENS // self.cfg.batch_tokens)

    def next(self, step: int) -> dict[int, torch.Tensor]:
        """The activations of step `step` + 1 (0-based `step` steps are done)."""
        if not self.pending:
            self._refill(step)
        x, _ = self.pending.pop(0)
        return x

    def stream_state(self) -> dict:
        """The data position of the next step not yet trained on (what a resumed run must read next)."""
        return self.pending[0][1] if self.pending else self.stream.state()

    def _refill(self, step: int) -> None:
        """Run the next few steps' sequences through the model in one forward pass (at least FORWARD_TOKENS
        tokens: one 128-token sequence at a time costs 1.4x more CPU per token on MiniLM). The SAEs still see
        the same batches in the same order; `stream_state` remembers where the first unused step begins."""
        cfg = self.cfg
        steps = min(self.forward_steps(), cfg.steps - step)
        states, tokens = [None] * steps, None
        if self.stream is not None:  # the first process reads the tokens (tokenised ahead by the stream's thread)
            batches = []
            for i in range(steps):
                states[i] = self.stream.state()
                batches.append(self.stream.next_batch(cfg.n_seq))
            tokens = torch.stack(batches)
        tokens = self.comm.broadcast_tokens(tokens, (steps, cfg.n_seq, cfg.context))
        x = self.comm.route(self.source(self.comm.shard(tokens).reshape(-1, cfg.context)), self.layers, steps)
        self.pending = [({layer: t[i] for layer, t in x.items()}, states[i]) for i in range(steps)]
