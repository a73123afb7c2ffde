"""`kdsae export --run DIR --to DIR`: a run as SAELens-loadable checkpoint folders with a model card and a
sha256 manifest (the layout `kdsae publish` uploads and `kdsae download --repo` reads back)."""

from __future__ import annotations

from pathlib import Path

from kdsae_core.hub.client import check_repo_id


def register(sub) -> None:
    p = sub.add_parser("export", help="export a run: SAELens checkpoint folders, model card, sha256 manifest")
    p.add_argument("--run", type=Path, required=True, help="run folder (from `kdsae train` or `kdsae download`)")
    p.add_argument("--to", type=Path, required=True, help="new or empty folder to write")
    p.add_argument("--repo", help="hub repository the model card's loading example names (ORG/NAME)")
    p.add_argument("--force", action="store_true", help="replace an earlier export in --to")
    p.set_defaults(func=run)


def run(args) -> int:
    # torch: imported when the verb runs, so that `kdsae --help` starts without it
    from kdsae_core.hub.export import export_run

    if args.repo:
        check_repo_id(args.repo)
    out = export_run(args.run, args.to, repo=args.repo, force=args.force)
    print(f"kdsae export: {out} (model card README.md, MANIFEST.sha256)")
    return 0
