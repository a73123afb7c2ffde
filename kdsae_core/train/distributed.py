"""Several processes training one run (`torchrun --nproc-per-node N -m kdsae_core.cli train ...`).

Each rank owns a subset of the layers (layer i of the sorted list goes to rank i mod N) and trains every
trial's SAE at those layers. The language model's forward pass is data-parallel: rank 0 reads and tokenises
the text and broadcasts each batch of sequences, every rank runs its 1/N share of them, and the activations
of layer l are gathered, in rank order, on the rank that owns l -- so each SAE sees exactly the batch a single
process would give it, and the run equals the single-process run for the same seed. Collectives are
torch.distributed's (gloo on CPU, nccl on
GPU). Rank 0 writes the shared files (config, metrics log, manifest, trainer state index).

`LocalComm` is the same interface for one process; the trainer only talks to a comm.
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext

import torch
import torch.distributed as dist

from kdsae_core.common.errors import InvalidParameter
from kdsae_core.sae.plan import cuda_unavailable


class LocalComm:
    rank, world = 0, 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, layer: int, layers: list[int]) -> bool:
        return True

    def shard(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [steps, n_seq, context] -> the sequences this process runs through the model."""
        return tokens

    def broadcast_tokens(self, tokens: torch.Tensor | None, shape: tuple) -> torch.Tensor:
        """The first process's int64 tokens of `shape`, on every process (it alone reads the text)."""
        return tokens

    def route(self, x: dict[int, torch.Tensor], layers: list[int], steps: int) -> dict[int, torch.Tensor]:
        """This process's activations {layer: [tokens, d]} -> {owned layer: [steps, batch tokens, d]}."""
        return {layer: t.reshape(steps, -1, t.shape[-1]) for layer, t in x.items()}

    def gather_objects(self, obj) -> list:
        return [obj]

    def broadcast_object(self, obj):
        return obj

    def any(self, flags: list[bool]) -> list[bool]:
        return list(flags)

    def barrier(self) -> None:
        pass

    def lock(self, make_lock):
        return make_lock()

    def close(self) -> None:
        pass

    def fail(self, error: BaseException) -> None:
        """Called with the exception that ends this process's run (one process: nothing to do)."""


def check_cuda(device: str) -> None:
    """A CUDA device asked for where there is none: one sentence, also for a CPU-only torch build (before any
    process group or model would fail on it with a traceback)."""
    why = cuda_unavailable(str(device))
    if why:
        raise InvalidParameter(why)


class TorchComm(LocalComm):
    """A torch.distributed process group set up from torchrun's environment (RANK, WORLD_SIZE, ...)."""

    def __init__(self, device: str = "cpu"):
        check_cuda(device)

        self.dist = dist
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = torch.device(device)
        if self.device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", self.rank))
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)

    def owner(self, layer: int, layers: list[int]) -> int:
        return sorted(layers).index(layer) % self.world

    def owns(self, layer: int, layers: list[int]) -> bool:
        return self.owner(layer, layers) == self.rank

    def shard(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        if n % self.world:
            raise InvalidParameter(
                f"{n} sequences per batch do not split evenly over {self.world} processes: "
                "choose --batch-tokens / --context as a multiple of the process count."
            )
        k = n // self.world
        return tokens[:, self.rank * k : (self.rank + 1) * k]

    def broadcast_tokens(self, tokens: torch.Tensor | None, shape: tuple) -> torch.Tensor:
        here = self.device if self.device.type == "cuda" else torch.device("cpu")  # (nccl sends CUDA tensors only)
        buf = tokens.to(here) if self.is_main else torch.empty(shape, dtype=torch.int64, device=here)
        self.dist.broadcast(buf, src=0)
        return buf.cpu()

    def route(self, x: dict[int, torch.Tensor], layers: list[int], steps: int) -> dict[int, torch.Tensor]:
        """Gather every layer's shards on the layer's owner; each step's batch is the ranks' shares of it in rank
        order, exactly the batch one process would have."""
        out = {}
        for layer in sorted(layers):
            dst = self.owner(layer, layers)
            part = x[layer].contiguous()
            if self.rank == dst:
                parts = [torch.empty_like(part) for _ in range(self.world)]
                self.dist.gather(part, gather_list=parts, dst=dst)
                out[layer] = torch.cat([p.reshape(steps, -1, p.shape[-1]) for p in parts], dim=1)
            else:
                self.dist.gather(part, dst=dst)
        return out

    def gather_objects(self, obj) -> list:
        """Every rank's `obj` on rank 0 (in rank order); an empty list elsewhere."""
        got = [None] * self.world if self.is_main else None
        self.dist.gather_object(obj, got, dst=0)
        return got if self.is_main else []

    def broadcast_object(self, obj):
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, flags: list[bool]) -> list[bool]:
        t = torch.tensor(
            [int(bool(f)) for f in flags],
            dtype=torch.int64,
            device=self.device if self.device.type == "cuda" else "cpu",
        )
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def barrier(self) -> None:
        self.dist.barrier()

    def lock(self, make_lock):
        return make_lock() if self.is_main else nullcontext()

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()

    def fail(self, error: BaseException) -> None:
        """This rank failed while the others may be waiting in a collective (for nccl's 10-minute timeout): say
        why and leave at once, without the process group's shutdown (which would wait for them), so torchrun
        sees a failed worker and stops the others now."""
        print(f"kdsae (process {self.rank} of {self.world}): {error}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def make_comm(device: str = "cpu") -> LocalComm:
    return TorchComm(device) if launched_by_torchrun() else LocalComm()
