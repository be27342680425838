"""The run lifecycle: one set of phases, the moves allowed between them, and the pause/stop
requests built on them.

The same `Lifecycle` class tracks a run wherever it is watched from: inside the training
session (which blocks in its pause), in the parent of a child-process run (which replays the
child's events), and in the GUI (which shows the phase on its buttons). A move the table does
not allow is a bug in the caller and raises `IllegalTransitionError`; a request that makes no sense
in the current phase (pausing a run that is stopping) is not a move and is simply refused.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import StrEnum
from typing import Any


class RunPhase(StrEnum):
    IDLE = "idle"
    """No run (before the first, or after the last has ended and been cleaned up)."""
    STARTING = "starting"
    """Asked to run; checking input, loading data and weights (no step yet)."""
    RUNNING = "running"
    PAUSING = "pausing"
    """Pause asked for; the step in flight still changes the weights."""
    PAUSED = "paused"
    """Blocked between steps: the weights do not change (export-while-paused is safe)."""
    STOPPING = "stopping"
    """Stop asked for; the run ends after the current step."""
    FINISHED = "finished"
    FAILED = "failed"


P = RunPhase
ENDED = frozenset({P.FINISHED, P.FAILED})
ACTIVE = frozenset({P.STARTING, P.RUNNING, P.PAUSING, P.PAUSED, P.STOPPING})

# Any active phase may end: a run can fail anywhere, and a run stopped from outside (SIGTERM to
# the child, Ctrl+C in the CLI) finishes without its watchers having seen a stop request.
ALLOWED: dict[RunPhase, frozenset[RunPhase]] = {
    P.IDLE: frozenset({P.STARTING}),
    P.STARTING: frozenset({P.RUNNING, P.PAUSING, P.STOPPING}) | ENDED,
    P.RUNNING: frozenset({P.PAUSING, P.STOPPING}) | ENDED,
    P.PAUSING: frozenset({P.PAUSED, P.RUNNING, P.STOPPING}) | ENDED,
    P.PAUSED: frozenset({P.RUNNING, P.STOPPING}) | ENDED,
    P.STOPPING: ENDED,
    P.FINISHED: frozenset({P.IDLE, P.STARTING}),
    P.FAILED: frozenset({P.IDLE, P.STARTING}),
}


class IllegalTransitionError(RuntimeError):
    """A move the lifecycle does not allow (a bug in the caller, never bad user input)."""


class Lifecycle:
    """One run's phase, safe to read and change from any thread.

    `on_change(old, new)` is called after every move, on the thread that made it.
    """

    def __init__(self, phase: RunPhase = P.IDLE,
                 on_change: Callable[[RunPhase, RunPhase], None] | None = None) -> None:
        self._phase = phase
        self._listeners: list[Callable[[RunPhase, RunPhase], None]] = \
            [on_change] if on_change is not None else []
        self._cond = threading.Condition()

    @property
    def phase(self) -> RunPhase:
        return self._phase

    def watch(self, on_change: Callable[[RunPhase, RunPhase], None]) -> None:
        """Also call `on_change(old, new)` after every move."""
        self._listeners.append(on_change)

    def can(self, to: RunPhase) -> bool:
        return to in ALLOWED[self._phase]

    def advance(self, to: RunPhase) -> None:
        """Move to `to`; raises IllegalTransitionError when the table does not allow it."""
        self._move(to, None)

    def _move_if(self, allowed_from: frozenset[RunPhase] | set[RunPhase], to: RunPhase) -> bool:
        """Move to `to` only from one of `allowed_from` (checked and moved under one lock)."""
        return self._move(to, allowed_from)

    def _move(self, to: RunPhase, allowed_from: frozenset[RunPhase] | set[RunPhase] | None) -> bool:
        with self._cond:
            old = self._phase
            if allowed_from is not None and old not in allowed_from:
                return False
            if to not in ALLOWED[old]:
                raise IllegalTransitionError(f"a run cannot go from {old} to {to}")
            self._phase = to
            self._cond.notify_all()
        for listener in self._listeners:
            listener(old, to)
        return True

    # requests: refused (False) where they make no sense, never an error
    def request_pause(self) -> bool:
        return self._move_if({P.STARTING, P.RUNNING}, P.PAUSING)

    def request_resume(self) -> bool:
        return self._move_if({P.PAUSING, P.PAUSED}, P.RUNNING)

    def request_stop(self) -> bool:
        return self._move_if(ACTIVE - {P.STOPPING}, P.STOPPING)

    def end(self, failed: bool) -> None:
        """The run is over; no-op when an event already said how it ended."""
        self._move_if(ACTIVE, P.FAILED if failed else P.FINISHED)

    def apply(self, event: Any) -> RunPhase:
        """Follow a training event (graftlab.core.train.events); returns the phase after it.

        Events that arrive after a request overtook them keep the requested phase: `Paused`
        after a resume request stays running, `Resumed` after a new pause request stays pausing,
        and neither moves a stopping run.
        """
        kind = getattr(event, "kind", "")
        if kind == "started":
            self._move_if({P.STARTING}, P.RUNNING)
        elif kind == "paused":
            self._move_if({P.PAUSING}, P.PAUSED)
        elif kind == "resumed":
            self._move_if({P.PAUSED}, P.RUNNING)
        elif kind in ("finished", "failed"):
            self.end(failed=kind == "failed")
        return self._phase

    def wait_until(self, phase: RunPhase, timeout_s: float | None = None) -> bool:
        """Block until the phase is `phase`; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._phase is phase, timeout_s)

    def wait_while(self, phase: RunPhase, timeout_s: float | None = None) -> bool:
        """Block until the phase is no longer `phase`; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._phase is not phase, timeout_s)


class RunControl:
    """Stop and pause requests for the run's own thread, which polls them between steps.

    A stop wakes a paused run; `save_on_stop` says whether the adapter is written then.
    """

    def __init__(self) -> None:
        self.lifecycle = Lifecycle(P.STARTING)  # a session exists: its run is starting
        self._stop_requested = False
        self._save_on_stop = True

    @property
    def phase(self) -> RunPhase:
        return self.lifecycle.phase

    def request_stop(self, save: bool = True) -> None:
        """End after the current step; `save` chooses whether the adapter is written."""
        self._save_on_stop = save if not self._stop_requested else self._save_on_stop and save
        self._stop_requested = True
        self.lifecycle.request_stop()

    def request_pause(self) -> None:
        self.lifecycle.request_pause()

    def request_resume(self) -> None:
        self.lifecycle.request_resume()

    @property
    def paused(self) -> bool:
        """A pause is asked for or in effect (the step in flight may still be running)."""
        return self.phase in (P.PAUSING, P.PAUSED)

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    @property
    def save_on_stop(self) -> bool:
        return self._save_on_stop

    def wait_while_paused(self, timeout_s: float | None = None) -> bool:
        """Block the running thread at its pause point until resumed or stopped (or for at
        most `timeout_s`); True when the pause is over.

        Only here does the phase become PAUSED, so PAUSED means "really blocked between steps".
        """
        if self.phase is P.PAUSING:
            self.lifecycle.apply(_PAUSE_POINT)
        return self.lifecycle.wait_while(P.PAUSED, timeout_s)

    @property
    def blocked(self) -> bool:
        """True only while the running thread is really waiting between steps."""
        return self.phase is P.PAUSED

    def wait_until_blocked(self, timeout_s: float) -> bool:
        """Wait until the running thread is blocked in a pause; False after `timeout_s`."""
        return self.lifecycle.wait_until(P.PAUSED, timeout_s)


class _PausePoint:
    kind = "paused"


_PAUSE_POINT = _PausePoint()
