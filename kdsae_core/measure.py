"""Measure trained SAEs (book/methods.md): for every (trial, layer, snapshot) checkpoint of a run, over
fresh tokens (the corpus' held-out measurement split): MSE, L1, combined loss, explained variance, L0,
alive F (fire rate > 1e-5), dead latents, alpha, g(alpha), d*_S, the sorted E[z^2] importances and the
predicted floors at {1/8 ... 1} x d_model. All checkpoints are measured from the same forward passes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from kdsae_core import theory
from kdsae_core.common.errors import BadFile, InvalidParameter, MissingData, RunFolderError
from kdsae_core.common.fileio import atomic_write_json, atomic_write_text, sha256_file
from kdsae_core.common.locks import run_lock
from kdsae_core.data import activations as acts
from kdsae_core.data.text import TokenStream
from kdsae_core.runs import checkpoints, layout, manifest
from kdsae_core.runs.layout import Checkpoint, list_checkpoints, snapshot_tokens
from kdsae_core.sae import plan as sae_plan

MEASURE_BATCH_TOKENS = 4096  # per forward pass; at least the training batch
SUMMARY_COLUMNS = [
    "layer",
    "L0",
    "alpha",
    "g_alpha",
    "d_star_S",
    "F_alive",
    "dead",
    "d_sae",
    "mse",
    "l1",
    "loss",
    "explained_variance",
    "tokens",
    "lambda",
]


MIN_MEASURE_TOKENS = 100_000  # below this, "fire rate > 1e-5" can only mean "fired at least once"


def alive_min_firings(n_tokens: int) -> int:
    """Fewest firings over n_tokens that make a latent alive (fire rate > theory.ALIVE_THRESHOLD)."""
    return math.floor(n_tokens * theory.ALIVE_THRESHOLD) + 1


_FP64_CHUNK_BYTES = 1 << 26  # the float64 copy of a block of rows, summed and freed (64 MB)


def _sum_sq64(t: torch.Tensor, dim=None) -> torch.Tensor:
    """Sum of squares in float64, exact per element (an fp32 square is exact in fp64), taken over blocks of rows
    so no float64 copy of the whole tensor is ever made (at the paper's batch z alone would be 8.6 GB twice)."""
    rows = max(1, _FP64_CHUNK_BYTES // (8 * max(1, t.shape[-1])))
    total = None
    for block in t.split(rows):
        part = block.double().square_().sum() if dim is None else block.double().square_().sum(dim)
        total = part if total is None else total.add_(part)
    return total


class _Accumulator:
    """Running sums for one SAE over the measurement tokens (float64 where it matters)."""

    def __init__(self, sae, d_in: int, d_sae: int, device):
        self.sae = sae
        f64 = dict(dtype=torch.float64, device=device)
        self.n = 0
        self.sse = torch.zeros((), **f64)
        self.sum_x = torch.zeros(d_in, **f64)
        self.sum_x2 = torch.zeros(d_in, **f64)
        self.fires = torch.zeros(d_sae, dtype=torch.int64, device=device)
        self.sum_z = torch.zeros(d_sae, **f64)
        self.sum_z2 = torch.zeros(d_sae, **f64)

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        z = self.sae.encode(x)
        err = self.sae.decode(z) - x
        self.n += x.shape[0]
        self.sse += _sum_sq64(err)
        self.sum_x += x.sum(0, dtype=torch.float64)
        self.sum_x2 += _sum_sq64(x, 0)
        self.fires += torch.count_nonzero(z, dim=0)
        self.sum_z += z.sum(0, dtype=torch.float64)
        self.sum_z2 += _sum_sq64(z, 0)


def _result(acc: _Accumulator, ck: Checkpoint, cfg: dict, run_cfg: dict) -> dict:
    meta = checkpoints.kdsae_meta(cfg)
    trial = meta.get("trial") or (run_cfg.get("trials") or {}).get(ck.trial) or {}
    form = trial.get("l1_form", "sum")
    lam = meta.get("lambda", trial.get("l1_coeff"))
    d_in, d_sae, n = int(cfg["d_in"]), int(cfg["d_sae"]), acc.n
    rate = acc.fires.double() / n
    alive = rate > theory.ALIVE_THRESHOLD
    F = int(alive.sum())
    L0 = float(acc.fires.sum()) / n
    importance = torch.sort(acc.sum_z2[alive] / n, descending=True).values.cpu().numpy()
    m = theory.Measurement(F_alive=F, avg_active=L0, sorted_importance=importance, layer=ck.layer, snapshot=ck.snapshot)
    variance = float((acc.sum_x2 - acc.sum_x.square() / n).sum())
    mse = float(acc.sse) / (n * d_in)
    l1 = float(acc.sum_z.sum()) / n / (1 if form == "sum" else d_sae)
    out = {
        "layer": ck.layer,
        "snapshot": ck.snapshot,
        "trial": ck.trial,
        "model": run_cfg.get("model"),
        "tokens": meta.get("tokens"),
        "measure_tokens": n,
        "d_in": d_in,
        "d_sae": d_sae,
        "F_alive": F,
        "dead": d_sae - F,
        "avg_active": L0,
        "mse": mse,
        "l1": l1,
        "lambda": lam,
        "l1_form": form,
        "loss": mse + float(lam) * l1 if lam is not None else None,
        "explained_variance": 1.0 - float(acc.sse) / variance if variance > 0 else None,
        "alive_threshold": theory.ALIVE_THRESHOLD,
    }
    out.update(_theory_fields(m, n, d_in))
    out["sorted_importance"] = importance.tolist()
    return out


def _theory_fields(m: theory.Measurement, n: int, d_in: int) -> dict:
    """The theory's quantities of a measurement (alpha, g(alpha), d*_S, L_inf, the predicted floors), or, when
    alpha = 1 - L0/F is outside (0, 1), a note saying why they are undefined."""
    F, L0 = m.F_alive, m.avg_active
    if 0 < L0 < F:
        return {
            "alpha": m.alpha,
            "g_alpha": m.g_alpha,
            "d_star_S": m.d_star_S,
            "L_inf": m.L_inf,
            "predictions": {str(k): v for k, v in m.predictions(theory.default_widths(d_in)).items()},
        }
    # the theory does not apply; say so rather than invent a value
    why = f"no latent fired on the {n:,} measurement tokens" if F == 0 else f"L0 = {L0:.4g} is not inside (0, F = {F})"
    return {
        "alpha": None,
        "g_alpha": None,
        "d_star_S": None,
        "L_inf": m.L_inf,
        "predictions": {},
        "note": f"{why}: alpha is undefined",
    }


def _write_summaries(run: Path, trials) -> list[Path]:
    """summary_{trial}.csv from the measurement files on disk: one row per layer, its last snapshot."""
    written = []
    for trial in sorted(trials):
        last: dict[int, dict] = {}
        for path in sorted(layout.measurement_dir(run, trial).glob("layer*_*.json")):
            r = json.loads(path.read_text())
            layer = int(r["layer"])
            if layer not in last or snapshot_tokens(r["snapshot"]) > snapshot_tokens(last[layer]["snapshot"]):
                last[layer] = r
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        for layer in sorted(last):
            w.writerow({**last[layer], "L0": last[layer]["avg_active"]})
        atomic_write_text(layout.summary_file(run, trial), buf.getvalue())
        written.append(layout.summary_file(run, trial))
    return written


def _refuse_fewer_tokens(run: Path, cks: list[Checkpoint], planned: int) -> None:
    """Measurements over more tokens are not replaced by less precise ones unless asked (--force)."""
    for c in cks:
        path = layout.measurement_file(run, c.trial, c.layer, c.snapshot)
        try:
            old = int(json.loads(path.read_text()).get("measure_tokens") or 0)
        except (OSError, ValueError, AttributeError):
            continue  # no (readable) measurement: nothing of value to protect
        if old > planned:
            raise RunFolderError(
                f"{path} was measured over {old:,} tokens; measuring over {planned:,} would replace it "
                f"with a less precise one: pass --force to do so, or --tokens {old}."
            )


def measure_run(
    run: Path,
    tokens: int | None = None,
    trials=None,
    layers=None,
    snapshots=None,
    progress: bool = True,
    batch_tokens: int | None = None,
    model=None,
    device: str | None = None,
    force: bool = False,
    memory_bytes: int | None = None,
) -> list[Path]:
    """Measure every selected checkpoint of `run`; write measurement JSONs, summaries and the manifest.

    The checkpoints are measured in groups that fit the device's free memory (`memory_bytes` overrides it), each
    group over the same measurement tokens in the same batches (sae_plan.measure_plan), so the grouping does
    not change the numbers."""
    run = Path(run)
    run_cfg = _run_config(run)
    settings = run_cfg.get("settings") or {}
    n_tokens = int(tokens or settings.get("measure_tokens") or 100_000)
    if n_tokens < 1:
        raise InvalidParameter(f"--tokens must be positive (got {n_tokens}).")
    cks = list_checkpoints(run, trials, layers, snapshots)
    if not cks:
        raise MissingData(
            f"{run} has no checkpoints to measure"
            + (" for the trials/layers/snapshots asked for" if trials or layers or snapshots else "")
            + "."
        )
    context = int(settings.get("context") or run_cfg.get("context") or 128)
    if not force:  # whole sequences are measured, so the count is rounded up to the context length
        _refuse_fewer_tokens(run, cks, math.ceil(n_tokens / context) * context)
    listed = manifest.read_manifest(run)
    device = device or settings.get("device", "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"
    with run_lock(run):
        model = model if model is not None else acts.load_model(run_cfg.get("model_source") or run_cfg["model"], device)
        d_model = int(model.cfg.d_model)
        cks = sorted(cks, key=lambda c: (c.layer, c.trial, snapshot_tokens(c.snapshot)))  # a group spans few layers
        cfgs = [_checked_cfg(run, c, listed, d_model) for c in cks]
        plan = _plan(
            model,
            cfgs,
            cks,
            context,
            batch_tokens or max(int(settings.get("batch_tokens") or 0), MEASURE_BATCH_TOKENS),
            memory_bytes if memory_bytes is not None else sae_plan.available_memory_bytes(str(device)),
        )
        pairs = list(zip(cks, cfgs))
        groups = [pairs[i : i + plan.saes_per_group] for i in range(0, len(pairs), plan.saes_per_group)]
        results = _measure_groups(
            run, run_cfg, model, groups, listed, device, context, plan.batch_tokens, n_tokens, progress
        )
        return _write_results(run, results)


def _run_config(run: Path) -> dict:
    """The run folder's config.json; a folder without one is refused."""
    if not layout.run_config(run).exists():
        raise RunFolderError(
            f"{run} is not a run folder (no config.json): train one with `kdsae train` or "
            "download one with `kdsae download`."
        )
    return json.loads(layout.run_config(run).read_text())


def _write_results(run: Path, results: list[dict]) -> list[Path]:
    """Every measurement's JSON and the summaries of their trials, listed in the manifest; the files written."""
    written = []
    for r in results:
        path = layout.measurement_file(run, r["trial"], r["layer"], r["snapshot"])
        atomic_write_json(path, r)
        written.append(path)
    written += _write_summaries(run, {r["trial"] for r in results})
    manifest.update_manifest(run, written)  # only these: a file damaged since it was listed stays caught
    return written


def _measure_groups(
    run: Path,
    run_cfg: dict,
    model,
    groups: list[list],
    listed: dict,
    device,
    context: int,
    batch_tokens: int,
    n_tokens: int,
    progress: bool,
) -> list[dict]:
    """The measurement of every (checkpoint, cfg) pair of `groups`, one pass of the model per group; every
    group's weights are checked before the first pass."""
    load = lambda c, dev: checkpoints.load_checkpoint(  # noqa: E731
        c.folder, listed.get(_rel(run, c, layout.WEIGHTS_FILE)), device=dev
    )[0]
    for c, _ in (p for g in groups[1:] for p in g):
        load(c, "cpu")  # later groups' files checked now (one at a time), so a bad one is refused before any pass
    first = [load(c, device) for c, _ in groups[0]]
    # said once the inputs are known to be good, so a refusal stays one line
    if progress and n_tokens < MIN_MEASURE_TOKENS:
        tqdm.write(
            f"kdsae measure: {n_tokens:,} measurement tokens is fewer than {MIN_MEASURE_TOKENS:,}"
            f": a latent counts as alive here if it fires at least {alive_min_firings(n_tokens)} time(s), so "
            "F_alive and alpha are not comparable with the paper's.",
            file=sys.stderr,
        )
    settings = run_cfg.get("settings") or {}
    dataset = settings.get("dataset") or run_cfg.get("dataset", "embedded")
    results = []
    for k, group in enumerate(groups):
        saes = first if k == 0 else [load(c, device) for c, _ in group]
        first = None
        accs = [(_Accumulator(sae, cfg["d_in"], cfg["d_sae"], device), c, cfg) for sae, (c, cfg) in zip(saes, group)]
        del saes
        _pass(model, accs, dataset, context, batch_tokens, n_tokens, progress)
        results += [_result(acc, c, cfg, run_cfg) for acc, c, cfg in accs]
        del accs  # this group's SAEs leave the device before the next group's arrive
    return results


def _rel(run: Path, c: Checkpoint, name: str) -> str:
    return str(c.folder.relative_to(run) / name)


def _checked_cfg(run: Path, c: Checkpoint, listed: dict, d_model: int) -> dict:
    """A checkpoint's cfg, checked against the manifest (its lambda and L1 form enter the loss) and the model."""
    cfg_rel = _rel(run, c, layout.CFG_FILE)
    if cfg_rel in listed and sha256_file(run / cfg_rel) != listed[cfg_rel]:
        raise BadFile(f"{run / cfg_rel} does not match its manifest sha256 (truncated or corrupted).")
    cfg = checkpoints.read_cfg(c.folder)
    if cfg["d_in"] != d_model:
        raise BadFile(f"{c.folder} has d_in {cfg['d_in']}, but the model's residual stream has {d_model}.")
    return cfg


def _plan(
    model, cfgs: list[dict], cks: list[Checkpoint], context: int, batch_tokens: int, budget: int | None
) -> sae_plan.MeasurePlan:
    """The batch and group size for the widest of these SAEs; a device too small for one SAE is one sentence."""
    d_sae = max(cfg["d_sae"] for cfg in cfgs)
    layers = sorted({c.layer for c in cks})
    plan = sae_plan.measure_plan(
        int(model.cfg.d_model),
        d_sae,
        batch_tokens,
        context,
        len(layers),
        budget,
        lambda n_seq: sae_plan.model_forward_bytes(model, n_seq, context, layers[-1] + 1),
    )
    if plan.saes_per_group < 1:
        raise InvalidParameter(
            f"measuring an SAE of {d_sae:,} latents needs {(plan.per_sae_bytes + plan.shared_bytes) / sae_plan.GB:.3g} "
            f"GB with one sequence per batch, more than the {budget / sae_plan.GB:.3g} GB free on "
            "this device: free memory or measure on another device (--device)."
        )
    return plan


def _pass(model, accs: list, dataset: str, context: int, batch_tokens: int, n_tokens: int, progress: bool) -> None:
    """One pass over the measurement tokens (from their start), feeding every accumulator of a group."""
    source = acts.ActivationSource(model, sorted({c.layer for _, c, _ in accs}))
    stream = TokenStream(model.tokenizer, dataset, context, split="measure")
    n_seq = max(1, batch_tokens // context)
    done = 0
    bar = tqdm(
        total=n_tokens,
        unit="tok",
        unit_scale=True,
        desc=f"measure {len(accs)} SAEs",
        disable=not progress,
        mininterval=2.0,
    )
    try:
        while done < n_tokens:
            take = min(n_seq, math.ceil((n_tokens - done) / context))
            x = source(stream.next_batch(take))
            for acc, c, _ in accs:
                acc.add(x[c.layer])
            done += take * context
            bar.update(take * context)
    finally:
        stream.close()  # its background thread
        bar.close()
