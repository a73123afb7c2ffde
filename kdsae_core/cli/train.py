"""`kdsae train`: Experiment 2, one SAE per (trial, layer), all fed from one forward pass per batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from kdsae_core.cli._args import int_list
from kdsae_core.cli.measure import render_text as measured_table
from kdsae_core.common.errors import BadFile, InvalidParameter, RunFolderError
from kdsae_core.runs import layout
from kdsae_core.train.profiles import PROFILES, recorded_settings
from kdsae_core.train.settings import SETTINGS

if TYPE_CHECKING:
    from kdsae_core.train.config import SAETrainConfig


ALL_LAYERS = "all"


def register(sub) -> None:
    p = sub.add_parser("train", help="Experiment 2: train SAEs on every requested layer in the three L1 regimes")
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="embedded (default): all-MiniLM-L6-v2 on packaged text, CPU, minutes; paper: Pythia-410M, "
        "300M Pile tokens, GPU + hub",
    )
    add_setting_options(p)
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last saved state, with "
        "the settings recorded in its config.json (other options may be given only if they agree)",
    )
    p.add_argument("--force", action="store_true", help="start over in an --out that already holds a run")
    p.add_argument("--measure", action="store_true", help="measure every checkpoint when training ends")
    p.set_defaults(func=run)


def run(args) -> int:
    # torch: imported when the verb runs, so that `kdsae --help` starts without it
    from kdsae_core.measure import measure_run
    from kdsae_core.train.config import SAETrainConfig, refuse_unreachable_target  # torch, as above
    from kdsae_core.train.distributed import make_comm  # torch, as above
    from kdsae_core.train.trainer import Trainer  # torch, as above

    given = {s.name: getattr(args, s.name) for s in SETTINGS if getattr(args, s.name) is not None}
    if args.resume and layout.run_config(args.out).exists():
        cfg = SAETrainConfig.from_json(resume_settings(args.out, args.profile, given))  # before anything loads
    else:
        if given.get("layers") == ALL_LAYERS:
            del given["layers"]  # every layer: the config's default
        cfg = SAETrainConfig.from_profile(args.profile or "embedded", **given)
    refuse_unused_knobs(cfg, given)
    refuse_unreachable_target(cfg, args.target_l0)
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
        settings = json.loads(layout.run_config(out).read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        raise BadFile(
            f"{layout.run_config(out)} is not a readable run config, so the run cannot be resumed: "
            "start it over with --force, or use another --out."
        ) from None
    theirs = recorded_settings(settings)
    if profile is not None:
        given = {"profile": profile, **given}
    if given.get("layers") == ALL_LAYERS:
        given["layers"] = None
    if "expansion" in given:
        given["d_sae"] = None
    elif "d_sae" in given:
        given["expansion"] = None
    differ = [
        f"--{k.replace('_', '-')} {v!r} (the run has {theirs.get(k)!r})" for k, v in given.items() if theirs.get(k) != v
    ]
    if differ:
        raise RunFolderError(
            f"{out} holds a run with other settings: {'; '.join(differ)}. Resume it with "
            f"`kdsae train --out {out} --resume` alone (its own settings), or use another --out."
        )
    return settings


def refuse_unused_knobs(cfg: SAETrainConfig, given: dict) -> None:
    """A trial's knob (--target-l0, --lambda-a, ...) given without its trial would do nothing: refused."""
    trials = set(cfg.trial_specs())
    for s in SETTINGS:
        if s.trial and s.name in given and s.trial not in trials:
            raise InvalidParameter(
                f"{s.option} applies only to trial {s.trial}; trials {','.join(cfg.trials)} do not "
                f"include it: drop {s.option} or add {s.trial} to --trial."
            )


def _layers(text: str):
    return ALL_LAYERS if text == ALL_LAYERS else int_list(text)


def _trials(text: str) -> list[str]:
    out = [t.strip() for t in text.split(",") if t.strip()]
    if not out:
        raise InvalidParameter("--trial needs at least one trial (A, B, C or a pilot like P7e-04).")
    return out


ARG_TYPES = {"int": int, "float": float, "str": str, "layers": _layers, "trials": _trials}


def add_setting_options(p) -> None:
    """One option per declared setting (train/settings.py), with its help text and valid range; the options of
    a group (--d-sae, --expansion) exclude each other."""
    groups = {}
    for s in SETTINGS:
        if s.group and s.group not in groups:
            groups[s.group] = p.add_mutually_exclusive_group()
        where = groups[s.group] if s.group else p
        kw = {"choices": list(s.choices)} if s.kind == "choice" else {"type": ARG_TYPES[s.kind]}
        text = s.help if s.kind in ("choice", "layers", "trials", "str") else f"{s.help}; {s.valid_range()}"
        where.add_argument(s.option, dest=s.name, default=None, help=text.replace("%", "%%"), **kw)
