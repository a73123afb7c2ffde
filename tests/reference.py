"""Access to the authors' released reference data for tests: skip without it, fail in CI."""

from __future__ import annotations

import os

import pytest

from kdsae_core.common.paths import reference_dir


def require_reference():
    """The reference folder, or skip (fail when KDSAE_REQUIRE_REFERENCE=1, as in CI)."""
    ref = reference_dir()
    if ref is None:
        msg = (
            "reference data not found: set KDSAE_REFERENCE_DIR to the authors' "
            "pythia410m_colm_erdos folder (or run `kdsae fetch-reference`)"
        )
        if os.environ.get("KDSAE_REQUIRE_REFERENCE") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return ref
