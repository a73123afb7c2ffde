"""`kdsae download --trial {A,B,C} | --repo ID --out DIR`: published checkpoints -> a run folder.

Files come through huggingface_hub (resumable, cached, HF_HUB_OFFLINE and HF_TOKEN honoured), are verified
against their hub etag (and, for runs published by kdsae, their manifest) and converted into checkpoint folders
(ARCHITECTURE.md). Then `kdsae measure --run DIR` measures them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kdsae_core.cli._args import int_list
from kdsae_core.hub.published_trials import PUBLISHED, PUBLISHED_SNAPSHOTS


def _labels(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def register(sub) -> None:
    trials = ", ".join(f"{t} = {p.repo} ({p.about})" for t, p in PUBLISHED.items())
    p = sub.add_parser(
        "download",
        help="download published checkpoints (the paper's trials) into a run folder",
        description=f"Published trials: {trials}.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trial", choices=sorted(PUBLISHED), help="one of the authors' published trials")
    src.add_argument("--repo", help="any hub repository in the same layout, or one written by `kdsae publish`")
    p.add_argument("--out", type=Path, required=True, help="run folder to write (new, empty, or an earlier download)")
    p.add_argument("--layers", type=int_list, help="0-based layers (default: all 24)")
    p.add_argument("--snapshots", type=_labels, help=f"snapshot labels (default: {','.join(PUBLISHED_SNAPSHOTS)})")
    p.add_argument("--revision", help="branch, tag or commit of the repository (default: main)")
    p.add_argument("--cache", type=Path, help="Hugging Face cache folder (default: HF_HUB_CACHE)")
    p.add_argument("--name", help="trial name in the run folder for --repo (default: its trial letter, or hub)")
    p.add_argument("--model", help="model the SAEs read, for `kdsae measure` (default: EleutherAI/pythia-410m)")
    p.add_argument("--dataset", help="measurement text (default: monology/pile-uncopyrighted; or a local file)")
    p.add_argument("--context", type=int, help="measurement context length (default: 1024)")
    p.add_argument("--measure-tokens", type=int, help="measurement tokens (default: the paper profile's)")
    p.set_defaults(func=run)


def run(args) -> int:
    # torch: imported when the verb runs, so that `kdsae --help` starts without it
    from kdsae_core.hub.published import download_run, report

    out = download_run(
        args.out,
        trial=args.trial,
        repo=args.repo,
        name=args.name,
        layers=args.layers,
        snapshots=args.snapshots,
        revision=args.revision,
        cache=args.cache,
        model=args.model,
        dataset=args.dataset,
        context=args.context,
        measure_tokens=args.measure_tokens,
        progress=sys.stderr.isatty(),
    )
    print(f"kdsae download: {report(out)}")
    return 0
