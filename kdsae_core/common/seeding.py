"""Seeds derived from keys, so that every model, data stream and SAE of both experiments draws its own numbers."""

from __future__ import annotations

import hashlib


def stream_seed(*key) -> int:
    """A stable 63-bit seed from any key (same on every machine and Python version)."""
    return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little") >> 1
