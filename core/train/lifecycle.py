"""Stop and pause requests for a run, safe to call from any thread.

The training session and the test stand-ins share this one mechanism, so the semantics (a stop
wakes a paused run; pausing blocks between steps) are defined in a single place.
"""

from __future__ import annotations

import threading


class RunControl:
    """Thread-safe stop/pause state. The running thread polls it between steps."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._blocked = threading.Event()  # set while the running thread waits in a pause
        self._save_on_stop = True

    def request_stop(self, save: bool = True) -> None:
        """End after the current step; `save` chooses whether the adapter is written."""
        self._save_on_stop = save
        self._stop.set()
        self._resume.set()  # a paused run must wake up to stop

    def request_pause(self) -> None:
        self._resume.clear()

    def request_resume(self) -> None:
        self._resume.set()

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def save_on_stop(self) -> bool:
        return self._save_on_stop

    def wait_while_paused(self) -> None:
        """Block the running thread until resumed or stopped; meanwhile it counts as blocked."""
        self._blocked.set()
        try:
            self._resume.wait()
        finally:
            self._blocked.clear()

    @property
    def blocked(self) -> bool:
        """True only while the running thread is really waiting between steps."""
        return self._blocked.is_set()

    def wait_until_blocked(self, timeout_s: float) -> bool:
        """Wait until the running thread is blocked in a pause; False after `timeout_s`."""
        return self._blocked.wait(timeout_s)
