"""TrainingPanel: the training section of run.yaml, run controls and progress."""

from __future__ import annotations

import dataclasses

import pytest
from graftlab.app.panels.log_view import LogView
from graftlab.app.panels.training_panel import TrainingPanel, field_docs, format_eta
from graftlab.core.config import TrainingConfig
from graftlab.core.train.events import Checkpoint, Failed, Finished, Message, Paused, Started, Step
from graftlab.core.train.lifecycle import RunPhase
from PySide6.QtCore import Qt


@pytest.fixture
def panel(qtbot):
    p = TrainingPanel(probe=False)
    qtbot.addWidget(p)
    return p


def test_defaults_and_round_trip(panel):
    assert panel.values() == TrainingConfig()
    cfg = TrainingConfig(max_steps=-1, epochs=2.5, batch_size=8, gradient_accumulation=4,
                         learning_rate=3e-5, scheduler="cosine", warmup_steps=10,
                         weight_decay=0.01, max_grad_norm=0.0, seed=7,
                         gradient_checkpointing=True, logging_steps=5, eval_steps=20,
                         checkpoint_every=50, checkpoint_limit=3, device="cpu",
                         precision="bf16", output_dir="/tmp/some run")
    panel.set_values(cfg)
    assert panel.values() == cfg


@pytest.mark.parametrize("setting,shown", [(None, "auto"), (True, "on"), (False, "off")])
def test_checkpointing_auto_on_off_and_kernels(panel, setting, shown):
    cfg = TrainingConfig(gradient_checkpointing=setting, kernels="on")
    panel.set_values(cfg)
    assert panel.fields["gradient_checkpointing"].currentText() == shown
    assert panel.fields["kernels"].currentText() == "on"
    assert panel.values() == cfg


def test_every_field_has_its_docstring_as_tooltip(panel):
    docs = field_docs(TrainingConfig)
    assert set(docs) == {f.name for f in dataclasses.fields(TrainingConfig)}
    for name, widget in panel.fields.items():
        assert widget.toolTip() == docs[name] and docs[name]
    assert "Optimizer steps" in panel.fields["max_steps"].toolTip()


def test_bad_learning_rate_becomes_nan_for_core_to_reject(panel):
    panel.fields["learning_rate"].setText("")
    assert panel.values().learning_rate != panel.values().learning_rate  # NaN


def test_buttons_follow_the_run_phase(panel, qtbot):
    b = panel
    expected = {  # start, pause, resume, stop
        RunPhase.IDLE: (True, False, False, False),
        RunPhase.STARTING: (False, True, False, True),
        RunPhase.RUNNING: (False, True, False, True),
        RunPhase.PAUSING: (False, False, True, True),
        RunPhase.PAUSED: (False, False, True, True),
        RunPhase.STOPPING: (False, False, False, True),  # "End now…"
        RunPhase.FINISHED: (False, False, False, False),
        RunPhase.FAILED: (False, False, False, False),
    }
    assert set(expected) == set(RunPhase)
    for phase, enabled in expected.items():
        panel.show_phase(phase)
        got = tuple(x.isEnabled() for x in (b.start_button, b.pause_button, b.resume_button,
                                            b.stop_button))
        assert got == enabled, phase
        assert panel.state() == phase and panel.state() == str(phase)
        assert panel.fields["batch_size"].isEnabled() == (phase is RunPhase.IDLE)
    assert panel.stop_button.text() == "Stop"
    panel.show_phase("stopping")
    assert panel.stop_button.text() == "End now…"
    with pytest.raises(ValueError):
        panel.show_phase("exploded")


def test_buttons_emit_requests(panel, qtbot):
    with qtbot.waitSignal(panel.start_requested, timeout=1_000):
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    panel.show_phase(RunPhase.RUNNING)
    with qtbot.waitSignal(panel.stop_requested, timeout=1_000) as blocker:
        qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [True]


def test_progress_and_eta_from_events(panel):
    panel.set_progress(12, 100, 83)
    assert panel.progress.value() == 12 and "1:23" in panel.eta_label.text()
    panel.append_events([Started("r", 50, 1, 10, "cpu", "fp32", 4),
                         Step(10, 1.0, 1e-4, 0.1, 0.1, 5.0, 10, 1.0, 3725.0, 1.0)])
    assert panel.progress.maximum() == 50 and panel.progress.value() == 10
    assert "1:02:05" in panel.eta_label.text()
    assert "CPU" in panel.device_label.text()
    panel.append_events([Paused(10)])
    assert "Paused" in panel.eta_label.text()
    panel.append_events([Finished(50, False, "a", 0.5, 61.0)])
    assert panel.progress.value() == 50 and "Finished" in panel.eta_label.text()
    assert format_eta(None) == "–" and format_eta(59.6) == "1:00"


def test_device_label_never_picks_bf16_on_a_gpu_without_it(panel):
    panel.set_accelerator({"cuda": True, "bf16": False, "name": "T4"})
    assert panel.resolved_device() == ("cuda", "fp32")
    assert panel.device_label.text() == "Will train on CUDA (T4) · fp32"


def test_device_label_resolves_auto(panel):
    panel.set_accelerator({"cuda": False, "bf16": False, "name": "CPU"})
    assert panel.resolved_device() == ("cpu", "fp32")
    assert "CPU" in panel.device_label.text()
    panel.fields["precision"].setCurrentText("fp16")
    assert panel.resolved_device() == ("cpu", "fp32")  # fp16 is GPU-only, as in core
    panel.fields["device"].setCurrentText("cuda")
    assert "No CUDA GPU" in panel.device_label.text()
    panel.set_accelerator({"cuda": True, "bf16": True, "name": "H200"})
    panel.fields["device"].setCurrentText("auto")
    panel.fields["precision"].setCurrentText("auto")
    assert panel.resolved_device() == ("cuda", "bf16")
    assert "H200" in panel.device_label.text()


@pytest.mark.slow  # the probe is a child process that imports torch
def test_device_probe_fills_the_label_in_the_background(qtbot):
    """The probe runs out of the window's process: the label fills in, torch stays out."""
    import sys

    torch_before = "torch" in sys.modules
    panel = TrainingPanel()
    qtbot.addWidget(panel)
    qtbot.waitUntil(lambda: panel.resolved_device() is not None, timeout=120_000)
    assert panel.device_label.text().startswith("Will train on")
    assert ("torch" in sys.modules) == torch_before  # the probe imported nothing here


def test_show_error_next_to_the_field(panel):
    assert not panel.show_error("adapter.rank", "rank is 0")
    assert panel.show_error("training.warmup_steps", "warmup is -1; use 0 or more.")
    assert panel.advanced_toggle.isChecked()  # an advanced field is made visible
    assert panel.error_label.text() == "warmup is -1; use 0 or more."
    panel.clear_error()
    assert panel.error_label.text() == ""


def test_log_view_shows_messages_and_failures_and_is_bounded(qtbot):
    log = LogView(max_lines=50)
    qtbot.addWidget(log)
    log.append_events([Message("data: 256 examples"), Message("odd <rank>", "warning"),
                       Checkpoint(3, "/tmp/ck"), Failed("rank is 0", True, "Traceback ...")])
    text = log.toPlainText()
    assert "data: 256 examples" in text and "warning: odd <rank>" in text
    assert "error: rank is 0" in text and "Traceback" in text and "/tmp/ck" in text
    log.append_events([Message(f"line {i}") for i in range(500)])
    assert log.blockCount() <= 50 and "line 499" in log.toPlainText()


def test_panel_works_without_python_sources(qtbot, monkeypatch):
    """A frozen (PyInstaller) build may ship no .py files: no tooltips, but no crash."""
    import inspect

    def no_source(_obj):
        raise OSError("could not get source code")

    monkeypatch.setattr(inspect, "getsource", no_source)
    assert field_docs(TrainingConfig) == {}
    panel = TrainingPanel(probe=False)
    qtbot.addWidget(panel)
    assert panel.values() == TrainingConfig()
