"""Hugging Face hub I/O: fetch verified files, list a repository. Nothing else talks to the hub but publishing.py,
which uploads a folder with the helpers here.

- Downloads go through `hf_hub_download` (resumable, cached in HF_HUB_CACHE or `cache`, HF_TOKEN honoured by
  huggingface_hub itself). `HF_HUB_OFFLINE=1` is honoured even when it is set after huggingface_hub was
  imported: the cache is then the only source, and a missing file is one sentence naming the repository, the
  file and how to get it.
- Every fetched file is verified against its hub etag (the sha256 of an LFS file, the git blob sha1 of a small
  one: the cache names blobs after it; online, when the cache holds a plain copy, it is asked for) and against
  an expected sha256 when the caller has a manifest. A mismatch is reported and the file re-fetched once;
  offline it is an error, never a silent load.
- File names that come from a listing or a manifest go through `safe_relpath`: no absolute paths, no `..`.
- The token never appears in a message: every text built from an exception goes through `redact`.

The published trials, their files and the conversion into run folders: `published.py`.

huggingface_hub is imported inside the functions that use it: `kdsae` builds every verb's parser at start (this
module among them), and a command that never reaches the hub should not pay for importing it.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from kdsae_core.common.errors import BadFile, InvalidParameter, KdsaeError, MissingData
from kdsae_core.common.fileio import sha256_file

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class HubError(KdsaeError):
    """The hub refused or could not serve a request (other than a missing file)."""


# ---- small helpers ------------------------------------------------------------------------------------------
def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now, or as huggingface_hub read it at import."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "on", "yes", "true"):
            return True
    from huggingface_hub import constants  # lazy: see the module docstring

    return bool(constants.HF_HUB_OFFLINE)


PROBE_SECONDS = 5.0  # the one plain request that tells whether the hub answers at all
_reachable: dict[str, bool] = {}  # endpoint -> whether it answered, asked once per process


def no_network() -> bool:
    """True when downloads are allowed but the hub does not answer one plain request (no retries, at most
    PROBE_SECONDS). Asked once per process: huggingface_hub would retry every request with back-off, about 50 s
    per file, before reaching the same conclusion. The cache is then the only source, as offline."""
    if offline():
        return False
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub import constants  # lazy: see the module docstring
    from huggingface_hub.utils import get_session  # lazy: see the module docstring

    endpoint = constants.ENDPOINT
    if endpoint not in _reachable:
        try:
            get_session().head(endpoint, timeout=PROBE_SECONDS)
            _reachable[endpoint] = True
        except (httpx2.ConnectError, httpx2.TimeoutException, httpx2.ProxyError):
            _reachable[endpoint] = False
        except Exception:  # noqa: BLE001 -- it answered, somehow: the real requests will say what is wrong
            _reachable[endpoint] = True
    return not _reachable[endpoint]


def cache_only() -> bool:
    """Files can come from the Hugging Face cache only: HF_HUB_OFFLINE, or no answer from the hub."""
    return offline() or no_network()


def redact(text: str) -> str:
    """`text` with any Hugging Face token (from the environment or huggingface_hub's store) replaced by ***."""
    secrets = [os.environ.get(v) for v in _TOKEN_VARS]
    try:
        from huggingface_hub import get_token  # lazy: see the module docstring

        secrets.append(get_token())
    except Exception:  # noqa: BLE001 -- a broken token store must not hide the real error
        pass
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return re.sub(r"hf_[A-Za-z0-9]{20,}", "***", text)


def check_repo_id(repo: str) -> str:
    if not isinstance(repo, str) or not _REPO_ID.match(repo) or ".." in repo:
        raise InvalidParameter(f"{repo!r} is not a Hugging Face repository id (expected ORG/NAME).")
    return repo


def safe_relpath(name: str) -> str:
    """A repository file name as a safe relative POSIX path, or InvalidParameter: absolute paths, `..`,
    backslashes, drive letters and empty or `.` components are refused."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise BadFile(f"refused the file name {name!r} from the hub: not a plain relative path.")
    p = PurePosixPath(name)
    if p.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise BadFile(
            f"refused the file name {name!r} from the hub: it would leave the target folder (absolute path or `..`)."
        )
    return str(p)


def inside(root: Path, rel: str) -> Path:
    """root / rel, refusing anything that resolves outside root (symlinks included)."""
    rel = safe_relpath(rel)
    root = Path(root).resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise BadFile(f"refused the file name {rel!r}: it resolves outside {root}.")
    return root / rel


def git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1()
    h.update(b"blob %d\0" % Path(path).stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- fetching -----------------------------------------------------------------------------------------------
@dataclass
class Fetched:
    repo: str
    filename: str
    path: Path  # in the Hugging Face cache
    commit: str | None
    sha256: str
    etag: str | None  # what the hub names the file's content (sha256 or git sha1), when known
    refetched: bool = False


def how_to_get(repo: str, filename: str, revision: str | None) -> str:
    rev = f" --revision {revision}" if revision else ""
    reach = (
        "unset HF_HUB_OFFLINE and run the same command" if offline() else "run the same command with the hub reachable"
    )
    return (
        f"{reach}, or on a machine with network access run `hf download {repo} {filename}{rev}` and copy its "
        "Hugging Face cache here (HF_HUB_CACHE, or --cache)"
    )


def missing_offline(repo: str, filename: str, revision: str | None, cache: Path | None) -> MissingData:
    """The error for a file that is not cached when the cache is the only source: what is missing and how to get it."""
    where = f"the Hugging Face cache {cache}" if cache else "the Hugging Face cache (HF_HUB_CACHE)"
    why = "HF_HUB_OFFLINE=1 forbids downloading it" if offline() else "the hub could not be reached"
    return MissingData(
        f"{repo}: {filename}{f' (revision {revision})' if revision else ''} is not in {where} and "
        f"{why}: {how_to_get(repo, filename, revision)}."
    )


def _commit_of(path: Path) -> str | None:
    parts = Path(path).parts
    if "snapshots" in parts:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if i + 1 < len(parts) and _HEX40.match(parts[i + 1]):
            return parts[i + 1]
    return None


def _etag(path: Path, repo: str, filename: str, revision: str | None) -> str | None:
    """The hub's name for the content of a cached file: the blob the snapshot entry links to, else (online)
    the etag the hub reports; None when neither is available (offline plain copy)."""
    p = Path(path)
    if p.is_symlink():
        name = Path(os.path.realpath(p)).name
        if _HEX64.match(name) or _HEX40.match(name):
            return name
    if cache_only():
        return None
    from huggingface_hub import get_hf_file_metadata, hf_hub_url  # lazy: see the module docstring

    try:
        meta = get_hf_file_metadata(hf_hub_url(repo, filename, revision=_commit_of(p) or revision))
    except Exception as e:  # noqa: BLE001 -- reported, then the file counts as unverifiable by etag
        print(
            redact(
                f"kdsae: could not ask the hub for the etag of {repo}/{filename} ({type(e).__name__}); "
                "checking it by its contents only"
            ),
            file=sys.stderr,
        )
        return None
    etag = (meta.etag or "").strip('"').removeprefix("W/").strip('"')
    return etag if _HEX64.match(etag) or _HEX40.match(etag) else None


def _problem(f: Fetched, expected_sha256: str | None, check: Callable[[Path], None] | None) -> str | None:
    """One sentence on what is wrong with a fetched file, or None."""
    if f.etag and _HEX64.match(f.etag) and f.sha256 != f.etag:
        return (
            f"{f.repo}: {f.filename} does not match its hub etag (sha256 {f.sha256[:12]}..., "
            f"expected {f.etag[:12]}...: truncated or corrupted)"
        )
    if f.etag and _HEX40.match(f.etag) and git_blob_sha1(f.path) != f.etag:
        return f"{f.repo}: {f.filename} does not match its hub etag (git blob sha1; truncated or corrupted)"
    if expected_sha256 and f.sha256 != expected_sha256:
        return f"{f.repo}: {f.filename} does not match its manifest sha256 (truncated or corrupted)"
    if check is not None:
        try:
            check(f.path)
        except BadFile as e:
            return about(f, e).rstrip(".")
    return None


def about(f: Fetched, e: Exception) -> str:
    """A message about the cached copy of a fetched file, naming the repository file instead of the cache path."""
    text = str(e).replace(f"{f.path}: ", "", 1).replace(f"{f.path} ", "", 1).removesuffix("; download it again.")
    sep = ": " if not text.startswith(("is ", "was ", "has ", "holds ", "does ")) else " "
    return f"{f.repo}: {f.filename}{sep}{text}"


def _download(repo, filename, revision, cache, force: bool) -> Path:
    from huggingface_hub import hf_hub_download  # lazy: see the module docstring
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    local = cache_only()
    try:
        return Path(
            hf_hub_download(
                repo,
                filename,
                revision=revision,
                cache_dir=str(cache) if cache else None,
                local_files_only=local,
                force_download=force and not local,
            )
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        if local:
            raise missing_offline(repo, filename, revision, cache) from None
        raise MissingData(
            f"{repo}: {filename} is not cached and the hub could not be reached: "
            f"{how_to_get(repo, filename, revision)}."
        ) from None
    except GatedRepoError:
        raise HubError(f"{repo} is gated: accept its terms on huggingface.co and set HF_TOKEN.") from None
    except RepositoryNotFoundError:
        raise MissingData(
            f"repository {repo} does not exist on the hub, or it is private and HF_TOKEN does not grant access to it."
        ) from None
    except RevisionNotFoundError:
        raise MissingData(f"{repo} has no revision {revision!r}.") from None
    except EntryNotFoundError:
        raise MissingData(f"{repo}{f' (revision {revision})' if revision else ''} has no file {filename}.") from None
    except Exception as e:  # noqa: BLE001 -- any other failure of the transfer, as one sentence
        raise HubError(
            redact(
                f"{repo}: {filename} could not be fetched ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:160] if str(e) else ''}); run the command again "
                "(downloads resume)."
            )
        ) from None


def fetch(
    repo: str,
    filename: str,
    revision: str | None = None,
    cache: Path | None = None,
    expected_sha256: str | None = None,
    check: Callable[[Path], None] | None = None,
) -> Fetched:
    """Fetch one file into the Hugging Face cache and verify it (etag, manifest sha256, `check`); a bad file
    is reported and re-fetched once when the hub is reachable, otherwise BadFile."""
    check_repo_id(repo)
    filename = safe_relpath(filename)
    refetched = False
    while True:
        path = _download(repo, filename, revision, cache, force=refetched)
        f = Fetched(
            repo, filename, path, _commit_of(path), sha256_file(path), _etag(path, repo, filename, revision), refetched
        )
        problem = _problem(f, expected_sha256, check)
        if problem is None:
            return f
        if refetched:
            raise BadFile(
                f"{problem}, even after downloading it again: the hub copy itself is damaged or the "
                "manifest is wrong; nothing was converted."
            )
        if cache_only():
            why = (
                "HF_HUB_OFFLINE=1 forbids fetching it again"
                if offline()
                else "the hub could not be reached to fetch it again"
            )
            raise BadFile(f"{problem}; it was not loaded, and {why}: {how_to_get(repo, filename, revision)}.")
        print(f"kdsae: {problem}; downloading it again", file=sys.stderr)
        refetched = True


def cached(repo: str, filename: str, revision: str | None = None, cache: Path | None = None) -> Path | None:
    """The cached copy of a file, without any network access; None when it is not cached."""
    from huggingface_hub import try_to_load_from_cache  # lazy: see the module docstring

    got = try_to_load_from_cache(repo, filename, cache_dir=str(cache) if cache else None, revision=revision)
    return Path(got) if isinstance(got, str) else None


def list_files(repo: str, revision: str | None = None) -> list[str] | None:
    """The repository's file names (validated), or None offline (the caller then works from the cache)."""
    check_repo_id(repo)
    if cache_only():
        return None
    from huggingface_hub import HfApi  # lazy: see the module docstring
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        names = HfApi().list_repo_files(repo, revision=revision)
    except RepositoryNotFoundError:
        raise MissingData(
            f"repository {repo} does not exist on the hub, or it is private and HF_TOKEN does not grant access to it."
        ) from None
    except RevisionNotFoundError:
        raise MissingData(f"{repo} has no revision {revision!r}.") from None
    except HfHubHTTPError as e:
        raise HubError(
            redact(
                f"the hub refused to list the files of {repo} ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:160] if str(e) else ''})."
            )
        ) from None
    except Exception as e:  # noqa: BLE001 -- no answer at all (connection refused, timeout): work from the cache
        print(
            redact(
                f"kdsae: could not reach the hub to list {repo} ({type(e).__name__}); using the files in the "
                "Hugging Face cache"
            ),
            file=sys.stderr,
        )
        return None
    return [safe_relpath(n) for n in names]
