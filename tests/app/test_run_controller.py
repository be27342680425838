"""The RunController: the one object the window and panels talk to about a run. Its phase
follows the shared lifecycle; export-while-paused holds back a resume until the save is done.
Runs here use the scripted in-process session (no child process, no torch)."""

from __future__ import annotations

import graftlab.app.run.worker
import pytest
from fake_session import fresh_fake
from graftlab.app.panels.training_panel import TrainingPanel
from graftlab.app.run.run_controller import RunController
from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from graftlab.core.train.lifecycle import RunPhase

P = RunPhase


def cfg_for(tmp_path, max_steps: int = 1_000_000) -> RunConfig:
    cfg = RunConfig()
    cfg.training.max_steps = max_steps
    cfg.training.output_dir = str(tmp_path / "run")
    return cfg


@pytest.fixture
def fake(monkeypatch):
    cls = fresh_fake(step_time_s=0.002)
    monkeypatch.setattr(graftlab.app.run.worker, "TrainingSession", cls)
    return cls


@pytest.fixture
def controller(qtbot):
    c = RunController()
    phases: list[RunPhase] = []
    c.phase_changed.connect(phases.append)
    c.phases = phases  # type: ignore[attr-defined]
    yield c
    assert c.shutdown(10_000), "the run did not end"
    qtbot.waitUntil(lambda: not c.is_running(), timeout=10_000)


def test_a_whole_run_goes_through_the_phases_in_order(qtbot, fake, controller, tmp_path):
    assert controller.phase() is P.IDLE
    controller.start(cfg_for(tmp_path))
    assert controller.phases[0] is P.STARTING  # the worker thread may already be running
    qtbot.waitUntil(lambda: controller.phase() is P.RUNNING, timeout=10_000)
    controller.pause()
    qtbot.waitUntil(lambda: controller.phase() is P.PAUSED, timeout=10_000)
    assert controller.can_snapshot()
    controller.toggle_pause()
    assert controller.phase() is P.RUNNING and not controller.can_snapshot()
    with qtbot.waitSignal(controller.finished, timeout=10_000):
        controller.stop(save=False)
    assert controller.phase() is P.IDLE
    seen = [p for i, p in enumerate(controller.phases) if i == 0 or controller.phases[i - 1] != p]
    assert seen[0] is P.STARTING and seen[-2:] == [P.FINISHED, P.IDLE]
    assert P.STOPPING in seen and P.PAUSED in seen
    assert seen.index(P.PAUSING) < seen.index(P.PAUSED) < seen.index(P.STOPPING)


def test_a_pause_asked_before_the_session_exists_is_applied_when_it_does(qtbot, fake,
                                                                          controller, tmp_path):
    controller.start(cfg_for(tmp_path))
    controller.pause()  # the worker thread may not have built its session yet
    assert controller.phase() is P.PAUSING and controller.is_paused()
    qtbot.waitUntil(lambda: controller.phase() is P.PAUSED, timeout=10_000)
    controller.resume()
    qtbot.waitUntil(lambda: controller.phase() is P.RUNNING, timeout=10_000)


def test_a_failed_run_ends_failed_then_idle(qtbot, fake, controller, tmp_path):
    fake.fail_with = UserError("training.learning_rate is nan; use a number.",
                               "training.learning_rate")
    failures = []
    controller.failed.connect(failures.append)
    with qtbot.waitSignal(controller.finished, timeout=10_000):
        controller.start(cfg_for(tmp_path))
    assert failures == ["training.learning_rate is nan; use a number."]
    assert controller.last_error.field == "training.learning_rate"
    assert P.FAILED in controller.phases and controller.phases[-1] is P.IDLE


def test_export_while_paused_holds_back_a_resume_until_saved(qtbot, fake, controller,
                                                             tmp_path):
    fake.snapshot_time_s = 0.3
    controller.start(cfg_for(tmp_path))
    with pytest.raises(UserError, match="pause the run"):
        controller.snapshot_adapter(tmp_path / "too-early")
    controller.pause()
    qtbot.waitUntil(controller.can_snapshot, timeout=10_000)
    saved = []
    controller.snapshot_saved.connect(saved.append)
    controller.snapshot_adapter(tmp_path / "snap")
    assert controller.is_snapshotting() and not controller.can_snapshot()
    with pytest.raises(UserError, match="already being written"):
        controller.snapshot_adapter(tmp_path / "again")
    controller.resume()  # held back: training must not move under the save
    assert controller.phase() is P.PAUSED
    qtbot.waitUntil(lambda: bool(saved), timeout=10_000)
    assert fake.snapshot_log == [(str(tmp_path / "snap"), True)]
    qtbot.waitUntil(lambda: controller.phase() is P.RUNNING, timeout=10_000)  # then resumed


def test_the_training_panel_follows_and_drives_the_controller(qtbot, fake, controller,
                                                              tmp_path):
    panel = TrainingPanel(probe=False)
    qtbot.addWidget(panel)
    panel.bind(controller)
    assert panel.state() is P.IDLE and panel.start_button.isEnabled()
    controller.start(cfg_for(tmp_path))
    assert controller.phases[0] is P.STARTING  # shown first; the worker may be running already
    assert panel.state() in (P.STARTING, P.RUNNING) and not panel.start_button.isEnabled()
    qtbot.waitUntil(lambda: panel.state() is P.RUNNING, timeout=10_000)
    panel.pause_button.click()  # the panel asks the controller; no state of its own
    qtbot.waitUntil(lambda: panel.state() is P.PAUSED, timeout=10_000)
    assert panel.resume_button.isEnabled() and not panel.pause_button.isEnabled()
    panel.resume_button.click()
    assert controller.phase() is P.RUNNING and panel.state() is P.RUNNING
    with qtbot.waitSignal(controller.finished, timeout=10_000):
        controller.stop()
    assert panel.state() is P.IDLE and panel.fields["batch_size"].isEnabled()
