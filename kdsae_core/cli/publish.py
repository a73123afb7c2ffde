"""`kdsae publish --run DIR --repo ID`: upload a run to the Hugging Face hub in the exported layout.

The run is exported first (verified against its manifest, SAELens cfg.json files, model card, MANIFEST.sha256)
into a temporary folder beside it, then uploaded with `upload_folder` as one commit. A revision that already
holds files is refused without --force. Offline (HF_HUB_OFFLINE=1) it stops at once. The token comes from
HF_TOKEN (or `hf auth login`) and is never printed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from kdsae_core.common.errors import RunFolderError
from kdsae_core.hub import client as hub
from kdsae_core.hub import publishing
from kdsae_core.runs.layout import run_config


def register(sub) -> None:
    p = sub.add_parser("publish", help="upload a run to the Hugging Face hub (exported layout, sha256 manifest)")
    p.add_argument("--run", type=Path, required=True, help="run folder to publish")
    p.add_argument("--repo", required=True, help="hub repository ORG/NAME (created if missing)")
    p.add_argument("--revision", help="branch to publish to (default: main; created if missing)")
    p.add_argument("--force", action="store_true", help="replace the files of a revision that already holds some")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=run)


def publish(
    run: Path,
    repo: str,
    revision: str | None = None,
    force: bool = False,
    private: bool = False,
    message: str | None = None,
) -> str:
    # torch: imported when the verb runs, so that `kdsae --help` starts without it
    from kdsae_core.hub.export import export_run

    hub.check_repo_id(repo)
    publishing.require_online(f"publishing {run} to {repo}")
    run = Path(run).expanduser().absolute()
    if not run_config(run).exists():
        raise RunFolderError(f"{run} is not a run folder (no config.json).")
    tmp = Path(tempfile.mkdtemp(prefix=f".{run.name}.publish-", dir=run.parent))
    try:
        folder = export_run(run, tmp / "export", repo=repo)
        return publishing.upload(folder, repo, revision=revision, force=force, private=private, message=message)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args) -> int:
    url = publish(args.run, args.repo, args.revision, args.force, args.private, args.message)
    print(f"kdsae publish: {args.run} is on the hub: {url}")
    return 0
