"""Stopping a long training loop cleanly: SIGINT or SIGTERM asks it to stop after its current step, once it has
saved a state it can resume from (the toy sweep, `kdsae train`)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Whether a stop signal has arrived (`requested`) while `stop_requests()` holds."""

    def __init__(self):
        self.requested = False


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Within the block, SIGINT and SIGTERM set the yielded request's `requested` instead of interrupting; the
    previous handlers come back after it. Off the main thread, where Python cannot set handlers, the signals keep
    their usual effect."""
    stop = StopRequest()

    def on_signal(signum, frame):
        stop.requested = True

    main = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS} if main else {}
    try:
        yield stop
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
