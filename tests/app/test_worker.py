"""The training worker: a core session in a QThread, batched event signals, pause/resume/stop."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import graftlab.app.run.worker
import pytest
from graftlab.app.plots.metric_plots import MetricPlots
from graftlab.app.run.background import BackgroundCall
from graftlab.app.run.worker import TrainingRunner
from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from graftlab.core.train.events import Failed, Finished, Paused, Resumed, Started, Step
from graftlab.core.train.lifecycle import RunControl
from gui_waits import happens_within
from PySide6.QtCore import QObject, Slot
from PySide6.QtWidgets import QLabel, QPushButton


def demo_cfg(tmp_path: Path, max_steps: int = 5) -> RunConfig:
    cfg = RunConfig()
    cfg.model.source = "demo:tiny-llama"
    cfg.data.path = "demo:stories"
    cfg.adapter.targets = ["model.layers.*.self_attn.q_proj"]
    cfg.training.max_steps = max_steps
    cfg.training.output_dir = str(tmp_path / "run")
    return cfg


class FakeResult:
    def __init__(self, steps: int, stopped_early: bool) -> None:
        self.steps, self.stopped_early = steps, stopped_early


class FakeSession(RunControl):
    """Scripted session: `step_time_s` per step, honours pause/stop like the real one."""

    step_time_s = 0.0
    fail_with: BaseException | None = None
    threads: list[str] = []

    def __init__(self, cfg: RunConfig, sinks) -> None:
        super().__init__()
        self.cfg, self.sinks = cfg, list(sinks)
        type(self).threads.append(threading.current_thread().name)

    def emit(self, ev) -> None:
        for sink in self.sinks:
            sink(ev)

    def run(self) -> FakeResult:
        type(self).threads.append(threading.current_thread().name)
        if self.fail_with is not None:
            msg = self.fail_with.message if isinstance(self.fail_with, UserError) else "boom"
            self.emit(Failed(msg, isinstance(self.fail_with, UserError)))
            raise self.fail_with
        total = self.cfg.training.max_steps
        self.emit(Started("run", total, 10, 1000, "cpu", "fp32", 8))
        step = 0
        while step < total and not self.stop_requested:
            if self.paused:
                self.emit(Paused(step))
                self.wait_while_paused()
                if self.stop_requested:
                    break
                self.emit(Resumed(step))
            if self.step_time_s:
                time.sleep(self.step_time_s)
            step += 1
            self.emit(Step(step, 1.0 / step, 1e-4, None, 0.0, 100.0, step, 0.0, None, 1.0))
        stopped = self.stop_requested
        self.emit(Finished(step, stopped, None, None, 0.0))
        return FakeResult(step, stopped)


@pytest.fixture
def runner(qtbot):
    r = TrainingRunner()
    yield r
    assert r.shutdown(10_000), "worker thread did not exit"
    qtbot.wait(10)  # let the queued thread-finished slot run before the runner goes


@pytest.fixture
def fake(monkeypatch):
    cls = type("Fake", (FakeSession,), {"threads": [], "step_time_s": 0.0, "fail_with": None})
    monkeypatch.setattr(graftlab.app.run.worker, "TrainingSession", cls)
    return cls


def collect(runner: TrainingRunner):
    batches, failures, results = [], [], []
    runner.events.connect(batches.append)
    runner.failed.connect(failures.append)
    runner.finished.connect(results.append)
    return batches, failures, results


def flat(batches):
    return [ev for batch in batches for ev in batch]


@pytest.mark.slow
def test_real_run_streams_steps_to_the_plots(qtbot, runner, tmp_path):
    plots = MetricPlots()
    qtbot.addWidget(plots)
    runner.events.connect(plots.append_events)
    batches, failures, results = collect(runner)
    with qtbot.waitSignal(runner.finished, timeout=120_000):
        runner.start(demo_cfg(tmp_path))
        assert runner.is_running()
    assert failures == []
    steps = [ev for ev in flat(batches) if isinstance(ev, Step)]
    assert [s.step for s in steps] == [1, 2, 3, 4, 5]
    assert all(s.loss > 0 for s in steps)
    result = results[0]
    assert result.steps == 5 and not result.stopped_early
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert not runner.is_running()
    assert plots.point_count("loss") == 5 and plots.point_count("trainable") == 2


@pytest.mark.slow
def test_real_run_pauses_resumes_and_stops(qtbot, runner, tmp_path):
    batches, failures, results = collect(runner)
    runner.start(demo_cfg(tmp_path, max_steps=100_000))

    def steps():
        return [ev for ev in flat(batches) if isinstance(ev, Step)]

    qtbot.waitUntil(lambda: len(steps()) >= 1, timeout=120_000)
    runner.pause()
    assert runner.is_paused()
    qtbot.waitUntil(lambda: any(isinstance(e, Paused) for e in flat(batches)), timeout=30_000)
    n = len(steps())
    assert not happens_within(qtbot, lambda: len(steps()) > n, 300), "steps arrived while paused"
    assert runner.is_paused()
    runner.resume()
    assert not runner.is_paused()
    qtbot.waitUntil(lambda: len(steps()) >= n + 2, timeout=30_000)
    assert any(isinstance(e, Resumed) for e in flat(batches))
    with qtbot.waitSignal(runner.finished, timeout=60_000):
        runner.stop()
    assert failures == []
    assert results[0].stopped_early and results[0].steps < 100_000
    assert (results[0].adapter_dir / "adapter_config.json").is_file()


def test_session_is_built_and_run_in_the_worker_thread(qtbot, runner, fake, tmp_path):
    with qtbot.waitSignal(runner.finished, timeout=10_000):
        runner.start(demo_cfg(tmp_path, max_steps=3))
    assert fake.threads and all(name != threading.main_thread().name for name in fake.threads)


def test_stop_ends_a_long_run_early(qtbot, runner, fake, tmp_path):
    fake.step_time_s = 0.001
    batches, failures, results = collect(runner)
    runner.start(demo_cfg(tmp_path, max_steps=1_000_000))
    qtbot.waitUntil(lambda: any(isinstance(e, Step) for e in flat(batches)), timeout=10_000)
    with qtbot.waitSignal(runner.finished, timeout=10_000):
        runner.stop()
    assert results[0].stopped_early and results[0].steps < 1_000_000
    assert failures == []


def test_stop_before_the_session_exists(qtbot, runner, fake, tmp_path):
    _batches, failures, results = collect(runner)
    with qtbot.waitSignal(runner.finished, timeout=10_000):
        runner.start(demo_cfg(tmp_path, max_steps=1_000_000))
        runner.stop()
    assert failures == [] and len(results) == 1
    assert results[0] is None or results[0].stopped_early


def test_pause_then_shutdown_joins(qtbot, fake, tmp_path):
    fake.step_time_s = 0.001
    runner = TrainingRunner()
    batches, _f, _r = collect(runner)
    runner.start(demo_cfg(tmp_path, max_steps=1_000_000))
    runner.pause()
    qtbot.waitUntil(lambda: any(isinstance(e, Paused) for e in flat(batches)), timeout=10_000)
    assert runner.shutdown(5_000)  # a paused run wakes up to stop
    qtbot.wait(10)


@pytest.mark.parametrize("error", [UserError("adapter.rank is 0; use 8.", field="adapter.rank"),
                                   RuntimeError("kaboom")])
def test_failing_session_reports_and_the_app_stays_usable(qtbot, runner, fake, tmp_path, error):
    fake.fail_with = error
    batches, failures, results = collect(runner)
    with qtbot.waitSignal(runner.finished, timeout=10_000):
        runner.start(demo_cfg(tmp_path))
    assert results == [None] and len(failures) == 1
    assert any(isinstance(e, Failed) for e in flat(batches))
    if isinstance(error, UserError):
        assert failures[0] == "adapter.rank is 0; use 8."
        assert runner.last_error.field == "adapter.rank"
    else:
        assert "RuntimeError: kaboom" in failures[0] and "Traceback" in failures[0]
    # the same runner trains again afterwards
    fake.fail_with = None
    with qtbot.waitSignal(runner.finished, timeout=10_000):
        runner.start(demo_cfg(tmp_path, max_steps=3))
    assert results[-1].steps == 3 and len(failures) == 1


def test_a_second_start_while_running_is_refused(qtbot, runner, fake, tmp_path):
    fake.step_time_s = 0.01
    runner.start(demo_cfg(tmp_path, max_steps=1_000))
    with pytest.raises(RuntimeError, match="already in progress"):
        runner.start(demo_cfg(tmp_path))
    with qtbot.waitSignal(runner.finished, timeout=10_000):
        runner.stop()


def test_batcher_caps_signals_at_about_ten_per_second(qtbot, runner, fake, tmp_path):
    fake.step_time_s = 0.0002
    total = 3_000
    batches, failures, _results = collect(runner)
    t0 = time.monotonic()
    with qtbot.waitSignal(runner.finished, timeout=30_000):
        runner.start(demo_cfg(tmp_path, max_steps=total))
    duration = time.monotonic() - t0
    steps = [e.step for e in flat(batches) if isinstance(e, Step)]
    assert steps == list(range(1, total + 1)), "events were lost or reordered"
    # Started and Finished flush at once; steps at most every 100 ms.
    assert len(batches) <= 10 * duration + 4, (len(batches), duration)
    assert failures == []


class _Receiver(QObject):
    """Does what the real UI does per batch: Qt calls that pass None/True/False."""

    def __init__(self) -> None:
        super().__init__()
        self.button = QPushButton("Pause")
        self.label = QLabel()
        self.plots = MetricPlots()
        self.count = 0

    @Slot(object)
    def on_events(self, batch) -> None:
        self.count += 1
        self.button.setEnabled(True)
        self.button.setEnabled(False)
        self.label.setText(None if self.count % 2 else "step")
        if self.count % 500 == 0:
            self.plots.append_events(batch)


@pytest.mark.slow
def test_100k_worker_signals_do_not_crash_the_process(qtbot, fake, tmp_path):
    """Guards the PySide6<6.12 pin: 6.12.0 on CPython 3.11 drops references to None/True/False
    on ordinary calls and aborts (`none_dealloc`) after a few hundred emits."""
    n = 100_000
    runner = TrainingRunner(flush_interval_s=0.0)  # one signal per event
    receiver = _Receiver()
    qtbot.addWidget(receiver.plots)
    runner.events.connect(receiver.on_events)
    before = [sys.getrefcount(x) for x in (None, True, False)]
    with qtbot.waitSignal(runner.finished, timeout=60_000):
        runner.start(demo_cfg(tmp_path, max_steps=n - 2))  # + Started + Finished
    assert receiver.count == n
    after = [sys.getrefcount(x) for x in (None, True, False)]
    for b, a in zip(before, after, strict=True):  # a leak of one reference per call shows here
        assert a > b - 5_000, (before, after)
    assert runner.shutdown(1_000)
    qtbot.wait(10)


def test_background_call_returns_result_or_exception(qtbot):
    call = BackgroundCall()
    got = []
    call.succeeded.connect(got.append)
    call.failed.connect(got.append)
    with qtbot.waitSignal(call.finished, timeout=5_000):
        call.start(lambda a, b: (a + b, threading.current_thread().name), 2, b=3)
    assert got[0][0] == 5 and got[0][1] != threading.main_thread().name
    with qtbot.waitSignal(call.finished, timeout=5_000):
        call.start(lambda: 1 / 0)
    assert isinstance(got[1], ZeroDivisionError) and "ZeroDivisionError" in \
        got[1].formatted_traceback
    assert call.wait(1_000)


@pytest.mark.slow
def test_gui_modules_do_not_import_torch():
    code = ("import sys\n"
            "import graftlab.app.run.worker, graftlab.app.plots.metric_plots\n"
            "import graftlab.app.panels.training_panel, graftlab.app.run.run_controller\n"
            "import graftlab.app.panels.log_view, graftlab.app.dialogs.export_dialog\n"
            "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


@pytest.mark.slow
def test_a_run_takes_the_spare_process_started_in_advance(qtbot, monkeypatch, tmp_path):
    """keep_spare_process(): torch is imported before Start; the run uses that process and a
    new spare is started for the next run."""
    import graftlab.core.process.child as child_session

    monkeypatch.setenv("GRAFTLAB_PRESTART", "1")
    runner = TrainingRunner()
    try:
        runner.keep_spare_process()
        spare = child_session._spare
        assert spare is not None and spare.proc.poll() is None
        pids: list[int] = []

        def on_events(batch) -> None:
            if any(isinstance(e, Started) for e in batch):
                pids.append(runner._control.session._proc.pid)

        runner.events.connect(on_events)
        with qtbot.waitSignal(runner.finished, timeout=180_000) as done:
            runner.start(demo_cfg(tmp_path, max_steps=2))
        assert done.args[0].steps == 2
        assert pids == [spare.proc.pid]  # the run went to the spare
        assert spare.proc.poll() is not None  # which has ended with the run
        new = child_session._spare
        assert new is not None and new is not spare and new.proc.poll() is None
        runner.keep_spare_process(False)
        assert child_session._spare is None and new.proc.poll() is not None
    finally:
        child_session.discard_spare()


@pytest.mark.slow
def test_a_bad_input_in_the_training_process_reaches_the_gui_as_a_user_error(
        qtbot, runner, tmp_path):
    """The real runner (a child process): the core's UserError comes back with its sentence
    and field, so the window can put it next to the field; nothing is written."""
    cfg = demo_cfg(tmp_path)
    cfg.data.path = str(tmp_path / "missing.jsonl")
    failures: list[str] = []
    runner.failed.connect(failures.append)
    with qtbot.waitSignal(runner.finished, timeout=120_000) as done:
        runner.start(cfg)
    assert done.args[0] is None
    error = runner.last_error
    assert isinstance(error, UserError) and error.field == "data.path"
    assert failures == [error.message] and "missing.jsonl" in error.message
    assert not (tmp_path / "run").exists()
