"""Atomic, verifiable file writes (temporary name, fsync, rename), staging folders, and the one JSON reader."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

from kdsae_core.common.errors import BadFile, KdsaeError, RunFolderError


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc; elsewhere set and restored at once)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temp_dir(prefix: str, parent: Path) -> Path:
    """A fresh staging folder that will be renamed into place. mkdtemp makes it 0700; the folder it becomes must
    have the mode any other tool would give it (0755 under umask 022), or a colleague could not read it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(folder, 0o777 & ~current_umask())
    return folder


def staging_beside(target: Path) -> Path:
    """A fresh staging folder next to `target` (same file system, so `replace_folder` is a rename): a download is
    assembled there and moved into place only once every file has been verified."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return make_temp_dir(f".{target.name}.download-", target.parent)


def read_json_object(path: Path, what: str = "") -> dict:
    """The JSON object stored in `path`. Anything else is BadFile, one sentence naming the file (after `what`,
    e.g. "measurement file"): it does not exist, is not valid JSON, or holds something other than an object."""
    label = f"{what} {path}" if what else str(path)
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BadFile(f"{label} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadFile(f"{label} is not valid JSON ({e}).") from None
    if not isinstance(data, dict):
        raise BadFile(f"{label} must hold a JSON object.")
    return data


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_chunks(path, [data])


def atomic_write_chunks(path: Path, chunks: Iterable) -> str:
    """Write the byte-like `chunks` one after the other to `path` (temporary, fsync, rename) and return the
    sha256 of what was written: a large file (an SAE's training state) streams to disk without ever being one
    bytes object in memory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    h = hashlib.sha256()
    try:
        # mkstemp creates 0600 whatever the umask; the renamed file gets what open() would give it (0644 under 022)
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                h.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise KdsaeError(
            f"could not write {path} ({e.strerror or e}: disk full or file too large?); "
            "the previous version of the file is intact."
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any, indent: int | None = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, allow_nan=False) + "\n")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_verified(path: Path, data: bytes) -> None:
    """Write `path` and `path.sha256` atomically, keeping the previous good generation as `path.prev`."""
    path = Path(path)
    digest = Path(f"{path}.sha256")
    if path.exists() and digest.exists():
        os.replace(path, f"{path}.prev")
        os.replace(digest, f"{path}.prev.sha256")
    atomic_write_bytes(path, data)
    atomic_write_text(digest, hashlib.sha256(data).hexdigest() + "\n")


def load_verified(path: Path) -> tuple[bytes, Path] | None:
    """The newest generation of `path` whose bytes match its digest, with the file it came from; None if
    there is none. A generation that fails its check is reported on stderr and skipped."""
    path = Path(path)
    for candidate in (path, Path(f"{path}.prev")):
        digest = Path(f"{candidate}.sha256")
        if not candidate.exists():
            continue
        data = candidate.read_bytes()
        expected = digest.read_text().strip() if digest.exists() else None
        if expected == hashlib.sha256(data).hexdigest():
            return data, candidate
        print(
            f"kdsae: {candidate} is truncated or corrupted (sha256 mismatch); using an older snapshot", file=sys.stderr
        )
    return None


def replace_folder(staged: Path, target: Path) -> None:
    """Move a finished staging folder to `target`, replacing an older copy (moved aside first, then removed)."""
    staged, target = Path(staged), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staged, target)
        shutil.rmtree(old)
    else:
        os.replace(staged, target)


def refuse_non_empty(out: Path, force: bool, option: str = "--out") -> None:
    """An output folder that already holds files is written into only with --force (every verb the same)."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not force:
        raise RunFolderError(f"{option} {out} is not empty: choose a fresh folder, or pass --force to write into it.")
