"""What a run is refused for before it writes anything (every process agrees on the verdict): a corpus that
cannot fill one batch, SAEs that do not fit in the memory free now, a file system without room for the run's
peak. Each refusal is one sentence saying what to change."""

from __future__ import annotations

from pathlib import Path

from kdsae_core.common.errors import InvalidParameter, KdsaeError
from kdsae_core.data.text import TokenStream
from kdsae_core.runs import layout
from kdsae_core.sae import plan as sae_plan
from kdsae_core.train.config import SAETrainConfig


def check_corpus(comm, tokenizer, cfg: SAETrainConfig) -> None:
    """A corpus that cannot fill one batch is refused now, before any file of the run folder is touched."""
    error = None
    if comm.is_main:
        probe = TokenStream(tokenizer, cfg.dataset, cfg.context)
        try:
            probe.next_batch(cfg.n_seq)
        except KdsaeError as e:
            error = e
        finally:
            probe.close()
    sent = comm.broadcast_object(None if error is None else str(error))
    if error is not None:
        raise error
    if sent is not None:
        raise KdsaeError(sent)


def check_memory(
    comm,
    model,
    cfg: SAETrainConfig,
    layers: list[int],
    d_in: int,
    d_sae: int,
    n_saes: int,
    n_seq: int,
    device: str,
    progress: bool,
) -> None:
    """Print the memory plan of this process's `n_saes` SAEs and refuse, before any file is written, a run whose
    SAEs do not fit in the memory free now (the language model is already loaded, so it is not counted again).
    `n_seq`: the sequences of one forward pass in this process."""
    forward = sae_plan.model_forward_bytes(model, n_seq, cfg.context, max(layers) + 1)
    plan = sae_plan.memory_plan(
        d_in,
        d_sae,
        cfg.batch_tokens,
        n_saes,
        len(layers),
        cfg.dtype,
        budget_bytes=sae_plan.available_memory_bytes(device),
        forward_bytes=forward,
    )
    if progress:
        print(sae_plan.format_memory_plan(plan), flush=True)
    fits = plan.budget_bytes is None or plan.total_bytes <= plan.budget_bytes
    if comm.any([not fits])[0]:
        here = (
            f"needs {plan.total_bytes / sae_plan.GB:.3g} GB on {device} but {plan.budget_bytes / sae_plan.GB:.3g} GB "
            f"are free, so at most {plan.saes_that_fit} of its {n_saes} SAEs fit"
            if not fits
            else "fits here, but another process's share does not"
        )
        raise InvalidParameter(
            f"this run {here}: train fewer layers (--layers) or trials (--trial), a smaller "
            "--d-sae or --batch-tokens, bf16 on a GPU, or spread the layers over more "
            "devices with torchrun."
        )


def check_disk(comm, out: Path, cfg: SAETrainConfig, d_in: int, d_sae: int, n_saes: int, progress: bool) -> None:
    """Refuse, before any file is written, a run whose folder's file system has less free space than the run's
    peak need (less what a resumed run already holds): a full disk mid-run loses hours and, under torchrun,
    leaves the other processes waiting in a collective."""
    plan = sae_plan.disk_plan(d_in, d_sae, n_saes, cfg.n_snapshots)
    short = 0
    if comm.is_main:
        held = sum(map(sae_plan.folder_bytes, (layout.checkpoints_root(out), layout.train_state_dir(out))))
        need = plan.peak_bytes - held  # a resumed (or forced) run's own files count towards its peak
        free = sae_plan.free_disk_bytes(out)
        short = need - free
        if progress:
            print(
                f"disk plan: {plan.peak_bytes / sae_plan.GB:.3g} GB at the peak ({n_saes} SAEs: {cfg.n_snapshots} "
                f"snapshots of {plan.snapshot_bytes / sae_plan.GB:.3g} GB and {sae_plan.STATE_GENERATIONS} states of "
                f"{plan.state_bytes / sae_plan.GB:.3g} GB each); {free / sae_plan.GB:.3g} GB free",
                flush=True,
            )
    short = comm.broadcast_object(short)
    if short > 0:
        raise InvalidParameter(
            f"this run needs {plan.peak_bytes / sae_plan.GB:.3g} GB of disk at its peak and "
            f"{short / sae_plan.GB:.3g} GB more than {out}'s file system has free: make room, "
            "use another --out, or train fewer layers, trials or snapshots."
        )
