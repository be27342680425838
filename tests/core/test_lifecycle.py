"""The one run lifecycle: allowed moves, illegal moves raise, requests, event replay, and the
session-side pause point."""

from __future__ import annotations

import itertools
import threading

import pytest
from graftlab.core.train.events import Failed, Finished, Paused, Resumed, Started
from graftlab.core.train.lifecycle import (
    ALLOWED,
    IllegalTransitionError,
    Lifecycle,
    RunControl,
    RunPhase,
)

P = RunPhase


def started() -> Started:
    return Started("run", 10, 1, 100, "cpu", "fp32", 4)


def test_every_phase_has_a_row_and_the_table_matches_advance():
    assert set(ALLOWED) == set(RunPhase)
    for a, b in itertools.product(RunPhase, RunPhase):
        life = Lifecycle(a)
        if b in ALLOWED[a]:
            life.advance(b)
            assert life.phase is b
        else:
            with pytest.raises(IllegalTransitionError, match=f"from {a} to {b}"):
                life.advance(b)
            assert life.phase is a  # a refused move changes nothing


@pytest.mark.parametrize(("start", "to"), [
    (P.IDLE, P.RUNNING), (P.IDLE, P.PAUSED), (P.FINISHED, P.PAUSED), (P.STOPPING, P.RUNNING),
    (P.STOPPING, P.PAUSED), (P.PAUSED, P.PAUSING), (P.FAILED, P.FINISHED), (P.RUNNING, P.IDLE),
])
def test_illegal_moves_raise(start, to):
    with pytest.raises(IllegalTransitionError):
        Lifecycle(start).advance(to)


def test_requests_move_only_where_they_make_sense():
    life = Lifecycle(P.IDLE)
    assert not life.request_pause() and not life.request_stop() and life.phase is P.IDLE
    life.advance(P.STARTING)
    assert life.request_pause() and life.phase is P.PAUSING  # before the first step
    assert life.request_resume() and life.phase is P.RUNNING
    assert not life.request_resume()
    assert life.request_stop() and life.phase is P.STOPPING
    assert not life.request_pause() and not life.request_resume() and not life.request_stop()
    assert life.phase is P.STOPPING


def test_events_replay_a_whole_run_and_report_each_move():
    moves = []
    life = Lifecycle(P.STARTING, on_change=lambda a, b: moves.append((a, b)))
    assert life.apply(started()) is P.RUNNING
    life.request_pause()
    assert life.apply(Paused(3)) is P.PAUSED
    assert life.apply(Resumed(3)) is P.RUNNING  # resumed by someone else (the child)
    life.request_stop()
    assert life.apply(Finished(4, True, None, None, 1.0)) is P.FINISHED
    assert life.apply(Finished(4, True, None, None, 1.0)) is P.FINISHED  # said twice: no-op
    assert moves == [(P.STARTING, P.RUNNING), (P.RUNNING, P.PAUSING), (P.PAUSING, P.PAUSED),
                     (P.PAUSED, P.RUNNING), (P.RUNNING, P.STOPPING), (P.STOPPING, P.FINISHED)]


def test_events_overtaken_by_a_request_keep_the_requested_phase():
    life = Lifecycle(P.RUNNING)
    life.request_pause()
    life.request_resume()
    assert life.apply(Paused(2)) is P.RUNNING  # the resume request is already on its way
    life.request_pause()
    assert life.apply(Resumed(2)) is P.PAUSING  # the new pause request still holds
    life.request_stop()
    assert life.apply(Paused(3)) is P.STOPPING
    assert life.apply(Failed("boom", False)) is P.FAILED
    with pytest.raises(IllegalTransitionError):
        life.advance(P.RUNNING)


def test_a_run_stopped_from_outside_finishes_from_any_active_phase():
    for phase in (P.STARTING, P.RUNNING, P.PAUSING, P.PAUSED):
        life = Lifecycle(phase)
        life.end(failed=False)
        assert life.phase is P.FINISHED


def test_run_control_blocks_at_the_pause_point_until_resumed_or_stopped():
    control = RunControl()
    assert control.phase is P.STARTING and not control.paused
    control.request_pause()
    assert control.paused and control.phase is P.PAUSING
    reached = threading.Event()

    def train() -> None:
        control.wait_while_paused()
        reached.set()

    thread = threading.Thread(target=train)
    thread.start()
    assert control.lifecycle.wait_while(P.PAUSING, 5.0)
    assert control.phase is P.PAUSED and not reached.is_set()
    control.request_stop(save=False)
    thread.join(5.0)
    assert reached.is_set() and control.phase is P.STOPPING
    assert control.stop_requested and not control.save_on_stop
    control.request_stop(save=True)  # a later "save" does not undo the discard
    assert not control.save_on_stop


def test_the_pause_point_does_not_block_once_resumed():
    control = RunControl()
    control.request_pause()
    control.request_resume()
    control.wait_while_paused()  # returns at once
    assert control.phase is P.RUNNING


def test_a_process_session_keeps_requests_made_before_its_child_exists():
    from graftlab.core.config import RunConfig
    from graftlab.core.process.child import ProcessSession

    session = ProcessSession(RunConfig(), command=["unused"])
    assert session.phase is P.STARTING
    session.request_pause()
    assert session.phase is P.PAUSING and session.paused
    session.request_resume()
    session.request_stop(save=False)
    assert session.phase is P.STOPPING and not session.save_on_stop


CHILD_SCRIPT = r"""
import json, sys
sys.stdin.readline()  # the run
for line in [
    {"event": "started", "run_dir": "r", "total_steps": 3, "trainable_params": 1,
     "base_params": 2, "device": "cpu", "precision": "fp32", "num_examples": 4},
    {"event": "paused", "step": 1},
    {"event": "resumed", "step": 1},
    {"event": "finished", "step": 3, "stopped_early": False, "adapter_dir": None,
     "train_loss": 1.0, "elapsed_s": 0.1},
    {"result": {"run_dir": "r", "adapter_dir": None, "steps": 3, "stopped_early": False,
                "train_loss": 1.0}},
]:
    print(json.dumps(line), flush=True)
"""


@pytest.mark.slow  # starts a (tiny) process
def test_a_process_session_replays_its_childs_events_into_its_phase():
    import sys

    from graftlab.core.config import RunConfig
    from graftlab.core.process.child import ProcessSession

    seen = []
    session = ProcessSession(RunConfig(), [lambda ev: seen.append((ev.kind, session.phase))],
                             command=[sys.executable, "-c", CHILD_SCRIPT])
    session.request_pause()  # before the child exists: sent when it starts
    result = session.run()
    assert result.steps == 3 and session.phase is P.FINISHED
    # the phase has moved before each sink sees the event
    assert seen == [("started", P.PAUSING), ("paused", P.PAUSED), ("resumed", P.RUNNING),
                    ("finished", P.FINISHED)]
