"""One live process per output folder: `RUN/.lock` holds the owner's pid; a stale lock is recovered."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from kdsae_core.common.errors import RunFolderError

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def run_lock(folder: Path):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise RunFolderError(
                    f"{folder} is in use by another live process (pid {pid}); wait for it or use another output folder."
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    else:
        raise RunFolderError(f"could not take the lock {lock}; remove it if no kdsae process uses {folder}.")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
