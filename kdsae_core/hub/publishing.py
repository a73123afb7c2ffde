"""Publishing to the Hugging Face hub: the one write path, `upload` of a folder as the whole content of a
repository branch, refused offline and, unless forced, over existing files. Reading from the hub (fetch, list,
the offline rules, token redaction) is `client.py`; huggingface_hub is imported lazily, as there.
"""

from __future__ import annotations

from pathlib import Path

from kdsae_core.common.errors import MissingData
from kdsae_core.hub.client import HubError, check_repo_id, offline, redact


def require_online(what: str) -> None:
    if offline():
        raise MissingData(
            f"{what} needs the Hugging Face hub, but HF_HUB_OFFLINE=1 is set: unset it (and set "
            "HF_TOKEN to a token with write access) and run the command again."
        )


def upload(
    folder: Path,
    repo: str,
    revision: str | None = None,
    force: bool = False,
    private: bool = False,
    message: str | None = None,
) -> str:
    """Upload `folder` as the whole content of `repo` at `revision` (a branch; default main) with upload_folder.
    A revision that already holds files is refused unless `force`; with `force` its old files are replaced."""
    check_repo_id(repo)
    require_online(f"publishing to {repo}")
    from huggingface_hub import HfApi  # lazy: see client.py's docstring
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi()
    branch = revision or "main"
    try:
        api.create_repo(repo, exist_ok=True, private=private)
        head, existing = _branch_head(api, repo, branch, force)
        # parent_commit: if anyone commits between the check above and this upload, the hub refuses it.
        info = api.upload_folder(
            repo_id=repo,
            folder_path=str(folder),
            revision=branch,
            parent_commit=head.sha,
            commit_message=message or "Upload a kdsae run",
            delete_patterns=["*"] if existing else None,
        )
    except OfflineModeIsEnabled:
        raise MissingData(
            f"publishing to {repo} needs the Hugging Face hub, but HF_HUB_OFFLINE=1 is set: unset it "
            "and run the command again."
        ) from None
    except HfHubHTTPError as e:
        raise HubError(
            redact(
                f"the hub refused the upload to {repo} ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:160] if str(e) else ''}); a write token in HF_TOKEN is needed."
            )
        ) from None
    except HubError:
        raise
    except Exception as e:  # noqa: BLE001 -- no answer at all (connection refused, timeout)
        raise HubError(
            redact(
                f"could not reach the hub to publish {repo} ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:120] if str(e) else ''}); nothing was uploaded."
            )
        ) from None
    return str(getattr(info, "commit_url", "") or f"https://huggingface.co/{repo}/tree/{branch}")


def _branch_head(api, repo: str, branch: str, force: bool) -> tuple:
    """The branch's head (created from main when new) and the files it holds besides .gitattributes; a branch
    that already holds files is refused unless `force`."""
    from huggingface_hub.errors import RevisionNotFoundError  # lazy: see client.py's docstring

    try:
        head, new_branch = api.model_info(repo, revision=branch), False
    except RevisionNotFoundError:  # a new branch starts from main's files: they are replaced, not "overwritten"
        api.create_branch(repo, branch=branch)
        head, new_branch = api.model_info(repo, revision=branch), True
    existing = [s.rfilename for s in (head.siblings or []) if s.rfilename != ".gitattributes"]
    if existing and not force and not new_branch:
        raise HubError(
            f"{repo} at revision {branch} already holds {len(existing)} files (e.g. {existing[0]}): "
            "pass --force to replace them, or publish to another --revision."
        )
    return head, existing
