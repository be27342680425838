"""GUI robustness: many start/stop cycles without leaking threads or memory, a worker exception
never takes the app down, closing during a run (stop and save, or cancel)."""

from __future__ import annotations

import gc
import threading

import graftlab.app.run.worker
import psutil
import pytest
from fake_session import fresh_fake
from graftlab.app.run.worker import TrainingRunner
from graftlab.core.config import DataConfig, RunConfig, TrainingConfig
from graftlab.core.train.events import Step
from gui_waits import open_model
from PySide6.QtCore import QCoreApplication, QEvent, Qt, QThread
from PySide6.QtWidgets import QMessageBox

pytest_plugins = ["gui_helpers"]  # fixtures: qsettings, make_window

FAKE_CYCLES = 50
REAL_CYCLES = 3


def demo_cfg(out_dir, max_steps: int) -> RunConfig:
    cfg = RunConfig()
    cfg.model.source = "demo:tiny-llama"
    cfg.data.path = "demo:stories"
    cfg.data.max_length = 48
    cfg.adapter.targets = ["model.layers.*.self_attn.q_proj"]
    cfg.training.max_steps = max_steps
    cfg.training.batch_size = 4
    cfg.training.update_norms_every = 0
    cfg.training.output_dir = str(out_dir)
    return cfg


def python_threads() -> int:
    """Threads Python started (QThreads that ran Python code show up as dummies forever)."""
    return sum(not isinstance(t, threading._DummyThread) for t in threading.enumerate())


def settle(qtbot) -> None:
    qtbot.wait(20)
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()


def counts(runner: TrainingRunner) -> dict[str, float]:
    return {"python_threads": python_threads(),
            "os_threads": psutil.Process().num_threads(),
            "qthreads": len(runner.findChildren(QThread)),
            "rss_mb": psutil.Process().memory_info().rss / 2**20}


def cycle(qtbot, runner, cfg, steps: list[int], save: bool) -> None:
    start = len(steps)
    runner.start(cfg)
    qtbot.waitUntil(lambda: len(steps) > start, timeout=120_000)
    with qtbot.waitSignal(runner.finished, timeout=120_000):
        runner.stop(save)
    assert not runner.is_running()


@pytest.fixture
def runner(qtbot):
    r = TrainingRunner()
    steps: list[int] = []
    failures: list[str] = []
    r.events.connect(lambda batch: steps.extend(e.step for e in batch if isinstance(e, Step)))
    r.failed.connect(failures.append)
    r.steps, r.failures = steps, failures
    yield r
    assert r.shutdown(10_000), "worker thread did not exit"
    assert failures == []
    settle(qtbot)


@pytest.mark.slow
def test_fifty_start_stop_cycles_leak_no_threads_or_memory(qtbot, runner, monkeypatch,
                                                           tmp_path, capsys):
    monkeypatch.setattr(graftlab.app.run.worker, "TrainingSession", fresh_fake(step_time_s=0.0005))
    cfg = demo_cfg(tmp_path / "run", max_steps=1_000_000)
    for _ in range(3):  # warm-up: first-use allocations are not leaks
        cycle(qtbot, runner, cfg, runner.steps, save=True)
    settle(qtbot)
    before = counts(runner)
    for i in range(FAKE_CYCLES):
        cycle(qtbot, runner, cfg, runner.steps, save=i % 2 == 0)
    settle(qtbot)
    after = counts(runner)
    with capsys.disabled():
        print(f"\n{FAKE_CYCLES} start/stop cycles (fake session): "
              + ", ".join(f"{k} {before[k]:.0f} -> {after[k]:.0f}" for k in before))
    assert after["qthreads"] == before["qthreads"] == 0
    assert after["python_threads"] == before["python_threads"]
    assert after["os_threads"] <= before["os_threads"]
    assert after["rss_mb"] - before["rss_mb"] < 50


@pytest.mark.slow
def test_real_start_stop_cycles_on_the_demo_model(qtbot, runner, tmp_path, capsys):
    readings = []
    for i in range(REAL_CYCLES):
        cycle(qtbot, runner, demo_cfg(tmp_path / f"run{i}", max_steps=100_000), runner.steps,
              save=i == 0)
        settle(qtbot)
        readings.append(counts(runner))
    assert (tmp_path / "run0" / "adapter").is_dir() and not (tmp_path / "run1" / "adapter").exists()
    with capsys.disabled():
        print(f"\n{REAL_CYCLES} real cycles: "
              + "; ".join(", ".join(f"{k} {r[k]:.0f}" for k in r) for r in readings))
    # torch's thread pools start with the first run; after that nothing may pile up
    assert all(r["qthreads"] == 0 for r in readings)
    assert readings[-1]["python_threads"] == readings[0]["python_threads"]
    assert readings[-1]["os_threads"] <= readings[0]["os_threads"]


@pytest.fixture
def window(make_window):
    def make():
        w = make_window()
        w._ask_stop_on_close = lambda: True  # teardown after a failure never blocks on a question
        return w

    return make


def prepare(qtbot, w, out_dir) -> None:
    open_model(qtbot, w, "demo:tiny-llama")
    w.layer_tree.apply_preset("attention")
    w.data_panel.set_values(DataConfig(path="demo:stories", max_length=48))
    w.training_panel.set_values(TrainingConfig(max_steps=1_000_000, output_dir=str(out_dir)))


def test_a_worker_exception_never_takes_the_app_down(qtbot, window, monkeypatch, tmp_path):
    fake = fresh_fake(fail_with=RuntimeError("kaboom"), step_time_s=0.001)
    monkeypatch.setattr(graftlab.app.run.worker, "TrainingSession", fake)
    w = window()
    w.show()
    prepare(qtbot, w, tmp_path / "run")
    with qtbot.waitSignal(w.controller.finished, timeout=10_000):
        w.start_action.trigger()
    boxes = [b for b in w.findChildren(QMessageBox) if b.isVisible()]
    assert boxes and "still usable" in boxes[0].text()
    assert "RuntimeError: kaboom" in boxes[0].detailedText()
    boxes[0].close()
    assert w.start_action.isEnabled() and w.layer_tree.isEnabled()
    fake.fail_with = None  # a second run starts and trains
    steps: list = []
    w.controller.events.connect(lambda b: steps.extend(e for e in b if isinstance(e, Step)))
    w.start_action.trigger()
    qtbot.waitUntil(lambda: len(steps) >= 3, timeout=10_000)
    w.commands.stop_chooser = lambda parent: "save"
    with qtbot.waitSignal(w.controller.finished, timeout=10_000):
        w.stop_action.trigger()
    assert fake.created == 2


def test_closing_during_a_run_cancel_then_stop_and_save(qtbot, window, monkeypatch, tmp_path):
    fake = fresh_fake(step_time_s=0.002)
    monkeypatch.setattr(graftlab.app.run.worker, "TrainingSession", fake)
    w = window()
    w.show()
    prepare(qtbot, w, tmp_path / "run")
    results: list = []
    w.controller.finished.connect(results.append)
    w.start_action.trigger()
    qtbot.waitUntil(lambda: w.plots.point_count("loss") > 0, timeout=10_000)
    w._ask_stop_on_close = lambda: False  # cancel: the window and the run go on
    assert not w.close()
    assert w.isVisible() and w.controller.is_running()
    w._ask_stop_on_close = lambda: True  # stop and save, then close
    w.close()
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=10_000)
    qtbot.waitUntil(lambda: bool(results), timeout=10_000)
    assert not w.controller.is_running()
    assert results[0].stopped_early and results[0].adapter_dir is not None  # saved


@pytest.mark.slow
def test_closing_during_a_real_run_saves_and_closes(qtbot, window, tmp_path):
    w = window()
    w.show()
    prepare(qtbot, w, tmp_path / "run")
    w.start_action.trigger()
    qtbot.waitUntil(lambda: w.plots.point_count("loss") > 0, timeout=120_000)
    w.close()  # stop after this step, save; closes by itself once the thread has ended
    qtbot.waitUntil(lambda: not w.isVisible() and not w.controller.is_running(), timeout=60_000)
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_a_run_that_does_not_stop_can_be_ended_from_stop_or_close(qtbot, window, monkeypatch,
                                                                  tmp_path):
    """Stop pressed again while stopping (or the window closed again) offers to end the
    process; ending it reports what was kept, and the app stays usable (or closes)."""
    fake = fresh_fake(step_time_s=0.005, ignore_stop=True)
    monkeypatch.setattr(graftlab.app.run.worker, "TrainingSession", fake)
    w = window()
    w.show()
    prepare(qtbot, w, tmp_path / "run")
    asked: list[bool] = []
    # Wait, then End now
    w.commands.end_chooser = lambda parent: asked.append(True) or len(asked) > 1
    w.commands.stop_chooser = lambda parent: "save"
    w.start_action.trigger()
    qtbot.waitUntil(lambda: w.plots.point_count("loss") > 0, timeout=10_000)
    w.stop_action.trigger()
    assert w.training_panel.state() == "stopping"
    assert w.training_panel.stop_button.isEnabled()  # "End now…"
    with qtbot.assertNotEmitted(w.controller.finished, wait=100):
        w.stop_action.trigger()  # asked: Wait
    assert w.controller.is_running() and asked == [True]
    with qtbot.waitSignal(w.controller.finished, timeout=10_000):
        qtbot.mouseClick(w.training_panel.stop_button, Qt.MouseButton.LeftButton)  # End now
    assert "ended before it had stopped" in (w.last_error or "")
    assert w.start_action.isEnabled() and w.training_panel.state() == "idle"
    for box in w.findChildren(QMessageBox):
        box.close()

    # closing: the first close stops; closing again while it is still stopping ends it
    asked.clear()
    w.commands.end_chooser = lambda parent: asked.append(True) or True
    w._ask_stop_on_close = lambda: True
    w.start_action.trigger()
    qtbot.waitUntil(lambda: w.controller.is_running() and w.plots.point_count("loss") > 0,
                    timeout=10_000)
    assert not w.close()  # stopping; the run ignores it
    assert w.isVisible() and w.controller.is_running() and not asked
    w.close()
    qtbot.waitUntil(lambda: not w.isVisible() and not w.controller.is_running(), timeout=10_000)
    assert asked == [True]
