"""`kdsae fetch-reference [--out DIR]`: download the authors' released Pythia-410M measurements.

Files come from the public GitHub repository Dawar13/COLM_ERDOS_labs (`results/exp2_sae/`) over raw
URLs. Each is validated (it must load as a measurement or a training-stats file) before it replaces
anything; a failed download leaves the folder as it was. The files may not be committed, so the
default target is a cache folder outside the repository, where `kdsae_core.common.paths.reference_dir()` finds it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from kdsae_core.common.errors import BadFile, InvalidParameter, MissingData
from kdsae_core.common.fileio import atomic_write_bytes
from kdsae_core.common.paths import REPO_ROOT, reference_download_dir

REPOSITORY = "Dawar13/COLM_ERDOS_labs"
FOLDER = "results/exp2_sae"
DEFAULT_REF = "main"
TIMEOUT_S = 30


def base_url(ref: str = DEFAULT_REF) -> str:
    """Raw-file URL of the folder; KDSAE_REFERENCE_URL overrides it (a mirror, or a local server in tests)."""
    return os.environ.get("KDSAE_REFERENCE_URL") or f"https://raw.githubusercontent.com/{REPOSITORY}/{ref}/{FOLDER}"


def register(sub) -> None:
    p = sub.add_parser("fetch-reference", help="download the authors' Pythia-410M reference measurements")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"target folder (default: {reference_download_dir()}, found automatically afterwards)",
    )
    p.add_argument("--ref", default=DEFAULT_REF, help="git branch, tag or commit of the authors' repository")
    p.set_defaults(func=run)


def target_dir(out: Path | None) -> Path:
    """The folder to write into: --out, else the cache folder. Never inside this repository."""
    target = (Path(out) if out is not None else reference_download_dir()).expanduser().resolve()
    if target == REPO_ROOT or REPO_ROOT in target.parents:
        raise InvalidParameter(
            f"--out {target} is inside the repository; the authors' data may not be committed: "
            "choose a folder outside it."
        )
    if target.exists() and not target.is_dir():
        raise InvalidParameter(f"--out {target} exists and is not a folder.")
    return target


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        raise MissingData(f"{url} answered HTTP {e.code}: the file is not there (try another --ref).") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise MissingData(
            f"could not reach {url} ({reason}): no network? Download the files from "
            f"https://github.com/{REPOSITORY}/tree/{DEFAULT_REF}/{FOLDER} by hand and set "
            "KDSAE_REFERENCE_DIR to their folder."
        ) from None


def _validate(name: str, data: bytes) -> None:
    """Load the downloaded bytes with the same loaders the book uses; raise BadFile if they do not load."""
    # pandas and numpy: imported when the verb runs, so that `kdsae --help` starts without them
    from kdsae_core import theory
    from kdsae_core.runs import reference as reference_data  # pandas, as above

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            if name.startswith("measurements_"):
                theory.load_measurement(path)
            else:
                reference_data.reference_training_stats(Path(tmp))
        except (BadFile, MissingData) as e:
            raise BadFile(f"the downloaded {name} is not a valid reference file ({e}); nothing was replaced.") from None


def fetch(out: Path | None = None, ref: str = DEFAULT_REF, progress: bool = False) -> Path:
    """Download every reference file into the target folder; return it. All files are downloaded and
    validated before any is written, so a failure leaves an existing folder untouched."""
    # pandas, and tqdm.auto (slow to import): imported when the verb runs, so that `kdsae --help` starts fast
    from tqdm.auto import tqdm

    from kdsae_core.runs.reference import REFERENCE_FILES  # pandas, as above

    target = target_dir(out)
    fetched = {}
    for name in tqdm(REFERENCE_FILES, desc="fetch-reference", unit="file", disable=not progress):
        data = _download(f"{base_url(ref)}/{name}")
        _validate(name, data)
        fetched[name] = data
    for name, data in fetched.items():
        atomic_write_bytes(target / name, data)
    return target


def run(args) -> int:
    target = fetch(args.out, args.ref, progress=sys.stderr.isatty())
    print(f"reference data in {target}")
    if Path(target) != reference_download_dir().resolve():
        print(f"set KDSAE_REFERENCE_DIR={target} so the book and tests find it")
    return 0
