"""`kdsae train`: Experiment 2, one SAE per (trial, layer), all fed from one forward pass per batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from kdsae_core.common import paths
from kdsae_core.common.errors import BadFile, InvalidParameter, RunFolderError
from kdsae_core.train.profiles import PROFILES, recorded_settings
from kdsae_core.cli._args import int_list
from kdsae_core.cli.measure import render_text as measured_table

if TYPE_CHECKING:
    from kdsae_core.train.config import SAETrainConfig


ALL_LAYERS = "all"


def _layers(text: str):
    return ALL_LAYERS if text == ALL_LAYERS else int_list(text)


def _trials(text: str) -> list[str]:
    out = [t.strip() for t in text.split(",") if t.strip()]
    if not out:
        raise InvalidParameter("--trial needs at least one trial (A, B, C or a pilot like P7e-04).")
    return out


def register(sub) -> None:
    p = sub.add_parser("train", help="Experiment 2: train SAEs on every requested layer in the three L1 regimes")
    p.add_argument("--trial", type=_trials, default=None, help="trials, comma-separated: A, B, C, pilots like P7e-04 "
                   "(default A,B,C)")
    p.add_argument("--profile", choices=sorted(PROFILES),
                   help="embedded (default): all-MiniLM-L6-v2 on packaged text, CPU, minutes; paper: Pythia-410M, "
                        "300M Pile tokens, GPU + hub")
    p.add_argument("--model", help="hub id (EleutherAI/pythia-410m), local model folder, or `embedded`")
    p.add_argument("--layers", type=_layers, help="`all` (default) or 0-based layers, comma-separated")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--d-sae", type=int, help="latents per SAE")
    size.add_argument("--expansion", type=float, help="latents per SAE as a multiple of d_model")
    p.add_argument("--tokens", type=int, help="training tokens")
    p.add_argument("--n-snapshots", type=int, help="evenly spaced snapshots (the last is `final`)")
    p.add_argument("--batch-tokens", type=int, help="tokens per step (a multiple of --context)")
    p.add_argument("--context", type=int, help="tokens per sequence")
    p.add_argument("--dataset", help="`embedded`, a Hugging Face dataset name, or a local .txt/.jsonl file or folder")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--dtype", choices=["fp32", "bf16"])
    p.add_argument("--lr", type=float)
    p.add_argument("--target-l0", type=float, help="trial C's target mean L0 (default 150)")
    p.add_argument("--seed", type=int)
    p.add_argument("--measure-tokens", type=int, help="fresh tokens `kdsae measure` uses by default")
    p.add_argument("--state-every-tokens", type=int, help="also save a resumable state every N tokens")
    p.add_argument("--sae-step", choices=["auto", "dense", "sparse"],
                   help="the SAE step: auto (default; dense or sparse per batch by its density of active latents), "
                        "dense or sparse. Recorded in config.json; the paths round differently, so a rerun is "
                        "byte-identical only with the same --sae-step (the committed embedded run: dense)")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last saved state, with "
                   "the settings recorded in its config.json (other options may be given only if they agree)")
    p.add_argument("--force", action="store_true", help="start over in an --out that already holds a run")
    p.add_argument("--measure", action="store_true", help="measure every checkpoint when training ends")
    p.set_defaults(func=run)


def run(args) -> int:
    # torch: imported when the verb runs, so that `kdsae --help` starts without it
    from kdsae_core.measure import measure_run
    from kdsae_core.train.distributed import make_comm  # torch, as above
    from kdsae_core.train.config import SAETrainConfig  # torch, as above
    from kdsae_core.train.trainer import Trainer  # torch, as above

    overrides = dict(model=args.model, layers=args.layers, trials=args.trial, d_sae=args.d_sae,
                     expansion=args.expansion, tokens=args.tokens, n_snapshots=args.n_snapshots,
                     batch_tokens=args.batch_tokens, context=args.context, dataset=args.dataset, device=args.device,
                     dtype=args.dtype, lr=args.lr, target_l0=args.target_l0, seed=args.seed,
                     measure_tokens=args.measure_tokens, state_every_tokens=args.state_every_tokens,
                     sae_step=args.sae_step)
    given = {k: v for k, v in overrides.items() if v is not None}
    if args.resume and paths.run_config(args.out).exists():
        cfg = SAETrainConfig.from_json(resume_settings(args.out, args.profile, given))  # before anything loads
    else:
        if given.get("layers") == ALL_LAYERS:
            del given["layers"]  # every layer: the config's default
        cfg = SAETrainConfig.from_profile(args.profile or "embedded", **given)
    refuse_unused_target_l0(cfg, args.target_l0)
    comm = make_comm(cfg.device)  # several processes under torchrun, else this one
    try:
        Trainer(cfg, args.out, comm=comm).run(resume=args.resume, force=args.force)
    except Exception as e:  # (a stop by signal is a KeyboardInterrupt that every process takes together)
        comm.fail(e)
        raise
    finally:
        comm.close()
    if not comm.is_main:
        return 0
    print(f"kdsae train: run folder {args.out}")
    if args.measure:
        print(measured_table(measure_run(args.out), args.out))
    return 0


def resume_settings(out: Path, profile: str | None, given: dict) -> dict:
    """The settings a run folder recorded (config.json), for `--resume`: an option given as well must agree with
    them, or the resume is refused here, in one line naming each disagreement, before the model loads."""
    try:
        settings = json.loads(paths.run_config(out).read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        raise BadFile(f"{paths.run_config(out)} is not a readable run config, so the run cannot be resumed: "
                      "start it over with --force, or use another --out.") from None
    theirs = recorded_settings(settings)
    if profile is not None:
        given = {"profile": profile, **given}
    if given.get("layers") == ALL_LAYERS:
        given["layers"] = None
    if "expansion" in given:
        given["d_sae"] = None
    elif "d_sae" in given:
        given["expansion"] = None
    differ = [f"--{k.replace('_', '-')} {v!r} (the run has {theirs.get(k)!r})"
              for k, v in given.items() if theirs.get(k) != v]
    if differ:
        raise RunFolderError(f"{out} holds a run with other settings: {'; '.join(differ)}. Resume it with "
                             f"`kdsae train --out {out} --resume` alone (its own settings), or use another --out.")
    return settings


def refuse_unused_target_l0(cfg: SAETrainConfig, target_l0: float | None) -> None:
    """--target-l0 sets the adaptive trial's target only; with fixed-lambda trials alone it would do nothing."""
    if target_l0 is not None and not any(s.controller == "target_l0" for s in cfg.trial_specs().values()):
        raise InvalidParameter(f"--target-l0 applies only to trial C (adaptive lambda); trials {','.join(cfg.trials)} "
                               "have a fixed lambda: drop --target-l0 or add C to --trial.")
