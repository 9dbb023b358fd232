"""Ctrl-C at a safe point: the first SIGINT only sets a flag that a loop checks at its step boundaries (to save
and stop cleanly); a second one raises KeyboardInterrupt at once.

    with DeferredInterrupt() as interrupt:
        for step in ...:
            ...
            if interrupt.requested:
                save(); break
"""
from __future__ import annotations

import signal
import threading


class DeferredInterrupt:
    """Within the block, the first Ctrl-C only sets `requested`; a second one interrupts at once. The previous
    handler is restored on exit. A no-op outside the main thread (signals go to the main thread only)."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> bool:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False
