"""`RUN/MANIFEST.sha256`: the sha256 of every file of a run folder, in `sha256sum` format.

Updated incrementally (a file whose size and mtime are unchanged keeps its digest), written atomically;
writers that add to an existing run (`update_manifest`) re-hash only the files they wrote.
Not listed: the manifest itself, the lock, the resumable trainer state (it carries its own digests) and
temporary files.
"""

from __future__ import annotations

from pathlib import Path

from kdsae_core.common.errors import BadFile
from kdsae_core.common.fileio import atomic_write_text, sha256_file
from kdsae_core.runs import layout

_SKIP_DIRS = {layout.STATE_DIR}
_SKIP_NAMES = {layout.MANIFEST_FILE, layout.LOCK_FILE}


def _listed(run: Path) -> list[Path]:
    out = []
    for p in sorted(run.rglob("*")):
        rel = p.relative_to(run)
        if (
            not p.is_file()
            or rel.parts[0] in _SKIP_DIRS
            or p.name in _SKIP_NAMES
            or p.name.endswith(".tmp")
            or p.name.startswith(".")
        ):
            continue
        out.append(rel)
    return out


def read_manifest(run: Path) -> dict[str, str]:
    """{relative path: sha256}; empty when the run has no manifest."""
    path = layout.run_manifest(run)
    if not path.exists():
        return {}
    return parse_manifest(path.read_text(), path)


def parse_manifest(text: str, where) -> dict[str, str]:
    """{relative path: sha256} of a manifest's text (`where` names it in errors)."""
    out = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise BadFile(f"{where}, line {i}, is not `<sha256>  <path>`.")
        out[name] = digest
    return out


def _cached_digest(run: Path, key: str, cache: dict) -> str:
    """sha256 of run/key, taken from `cache` {rel: (size, mtime_ns, sha)} while the file's size and mtime are
    unchanged, else computed and cached."""
    st = (run / key).stat()
    hit = cache.get(key)
    if hit is None or hit[:2] != (st.st_size, st.st_mtime_ns):
        hit = cache[key] = (st.st_size, st.st_mtime_ns, sha256_file(run / key))
    return hit[2]


def _write(run: Path, digests: dict[str, str]) -> None:
    """The manifest in `sha256sum` format (`<sha256>  <path>`, sorted by path), written atomically."""
    atomic_write_text(layout.run_manifest(run), "".join(f"{d}  {n}\n" for n, d in sorted(digests.items())))


def write_manifest(run: Path, cache: dict | None = None) -> dict[str, str]:
    """Hash every listed file (reusing `cache` {rel: (size, mtime_ns, sha)} for unchanged ones) and write."""
    run = Path(run)
    cache = {} if cache is None else cache
    digests = {str(rel): _cached_digest(run, str(rel), cache) for rel in _listed(run)}
    _write(run, digests)
    return digests


def update_manifest(run: Path, written, cache: dict | None = None) -> dict[str, str]:
    """Record the digests of `written` (files the caller has just written, absolute or relative to `run`) and
    keep every other entry as listed, dropping those whose file is gone: a file damaged after it was listed
    is never re-blessed by a later writer. Without a manifest yet, every file is hashed (write_manifest)."""
    run = Path(run)
    if not layout.run_manifest(run).exists():
        return write_manifest(run, cache)
    cache = {} if cache is None else cache
    digests = read_manifest(run)
    for f in written:
        try:
            key = str(Path(f).relative_to(run))
        except ValueError:  # already relative to the run folder
            key = str(f)
        digests[key] = _cached_digest(run, key, cache)
    digests = {k: d for k, d in digests.items() if (run / k).is_file()}
    _write(run, digests)
    return digests


def verify_manifest(run: Path, only: list[str] | None = None) -> list[str]:
    """Problems (one sentence each) with the files the manifest lists: missing or changed."""
    run = Path(run)
    listed = read_manifest(run)
    problems = []
    for name, digest in sorted(listed.items()):
        if only is not None and name not in only:
            continue
        p = run / name
        if not p.exists():
            problems.append(f"{p} is listed in the manifest but missing.")
        elif sha256_file(p) != digest:
            problems.append(f"{p} does not match its manifest sha256 (truncated or corrupted).")
    return problems
