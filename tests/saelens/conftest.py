"""The SAELens interpreter (.venv-saelens, its own environment: SAELens 6 pins transformer-lens < 4)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def saelens_python() -> Path:
    exe = os.environ.get("KDSAE_SAELENS_PYTHON")
    if not exe:
        if os.environ.get("KDSAE_REQUIRE_SAELENS") == "1":
            pytest.fail("KDSAE_REQUIRE_SAELENS=1 but KDSAE_SAELENS_PYTHON is not set: run `make test-saelens`.")
        pytest.skip("KDSAE_SAELENS_PYTHON is not set: `make test-saelens` builds .venv-saelens and runs this test")
    if not Path(exe).exists():
        pytest.fail(f"KDSAE_SAELENS_PYTHON={exe} does not exist: run `make saelens-env`.")
    return Path(exe)
