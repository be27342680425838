"""Resume from the GUI, the stop question (save / discard / cancel) and export while paused."""

from __future__ import annotations

import graftlab.app.run.worker
import pytest
from fake_session import fresh_fake
from graftlab.app.dialogs.stop_dialog import CANCEL, DISCARD, SAVE, choice_of, stop_box
from graftlab.core.config import DataConfig, TrainingConfig
from graftlab.core.train.checkpoints import latest_checkpoint
from graftlab.core.train.events import Paused, Step, read_metrics
from gui_waits import open_model, wait_loaded
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

pytest_plugins = ["gui_helpers"]  # fixtures: qsettings, make_window


@pytest.fixture
def window(make_window):
    """A window whose close (also in teardown after a failure) stops a run without asking."""

    def make():
        w = make_window()
        w._ask_stop_on_close = lambda: True
        return w

    return make


def prepare(qtbot, w, out_dir, max_steps: int) -> None:
    """The demo model with attention adapters, short examples, a short run into `out_dir`."""
    open_model(qtbot, w, "demo:tiny-llama")
    w.layer_tree.apply_preset("attention")
    w.data_panel.set_values(DataConfig(path="demo:stories", max_length=48))
    w.training_panel.set_values(TrainingConfig(max_steps=max_steps, batch_size=4,
                                               output_dir=str(out_dir), update_norms_every=0))
    wait_loaded(qtbot, w)


def steps_of(batches) -> list[int]:
    return [ev.step for batch in batches for ev in batch if isinstance(ev, Step)]


LONG_RUN = 60  # steps: room for a stop to arrive (a tiny model's step takes milliseconds)


@pytest.mark.slow
def test_stop_discard_then_resume_from_the_dialog(qtbot, window, tmp_path):
    w = window()
    w.show()
    run = tmp_path / "runs" / "first"
    prepare(qtbot, w, run, max_steps=LONG_RUN)
    batches: list = []
    w.controller.events.connect(batches.append)
    w.start_action.trigger()
    qtbot.waitUntil(lambda: len(steps_of(batches)) >= 3, timeout=120_000)
    asked: list = []
    w.commands.stop_chooser = lambda parent: asked.append(parent) or DISCARD
    with qtbot.waitSignal(w.controller.finished, timeout=60_000):
        w.stop_action.trigger()
    assert asked == [w]
    assert not (run / "adapter").exists(), "discard writes no adapter"
    stopped_at = latest_checkpoint(run).step  # ...but the stop checkpoint keeps it resumable
    assert 3 <= stopped_at < LONG_RUN

    # File > Resume run… lists it (under the output folder's parent) with its progress
    w.training_panel.fields["output_dir"].setText(str(tmp_path / "runs" / "second"))
    w.resume_run_action.trigger()
    dialog = w.run_files.resume_dialog
    qtbot.waitUntil(lambda: not dialog.is_scanning() and bool(dialog.rows), timeout=10_000)
    assert [r.run_dir for r in dialog.rows] == [run]
    assert (dialog.rows[0].step, dialog.rows[0].max_steps) == (stopped_at, LONG_RUN)
    bar = dialog.table.cellWidget(0, 1)
    assert (bar.value(), bar.maximum()) == (stopped_at, LONG_RUN)
    assert dialog.table.item(0, 2).text()[:2] == "20"  # a date
    assert dialog.chosen_run() == run and dialog.resume_button.isEnabled()
    with qtbot.waitSignal(w.controller.finished, timeout=120_000):
        qtbot.mouseClick(dialog.resume_button, Qt.MouseButton.LeftButton)
        assert w.controller.is_running()
        assert w.plots.point_count("loss") == stopped_at  # the history so far
        assert not w.start_action.isEnabled()
    wait_loaded(qtbot, w)
    assert w.last_error is None
    assert w.run_config().training.output_dir == str(run)  # its run.yaml is in the window
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    steps = [e.step for e in read_metrics(run / "metrics.jsonl") if isinstance(e, Step)]
    assert steps == list(range(1, LONG_RUN + 1)), "every step exactly once"
    assert w.plots.point_count("loss") == LONG_RUN  # history + the live rest
    assert w.start_action.isEnabled()

    # a finished run is listed for reference but cannot be chosen
    dialog = w.run_files.open_resume_dialog()
    qtbot.waitUntil(lambda: not dialog.is_scanning() and bool(dialog.rows), timeout=10_000)
    assert dialog.rows[0].finished and dialog.chosen_run() is None
    assert not dialog.resume_button.isEnabled()
    dialog.reject()


@pytest.mark.slow
def test_resume_dialog_looks_in_a_chosen_folder_and_bad_folders_say_why(
        qtbot, window, tmp_path):
    w = window()
    dialog = w.run_files.open_resume_dialog()
    qtbot.waitUntil(lambda: not dialog.is_scanning(), timeout=10_000)
    assert dialog.rows == [] and "No resumable runs" in dialog.status_label.text()
    dialog.add_root(tmp_path)
    qtbot.waitUntil(lambda: not dialog.is_scanning(), timeout=10_000)
    assert str(tmp_path) in dialog.roots_label.text()
    dialog.reject()
    w.run_files.resume_run(tmp_path / "nothing")
    assert "not a Graftlab run folder" in w.last_error
    (tmp_path / "run.yaml").write_text("model: {source: demo:tiny-llama}\n")
    w.run_files.resume_run(tmp_path)
    assert "no complete checkpoint" in w.last_error
    assert not w.controller.is_running() and w.start_action.isEnabled()


def test_stop_question_defaults_to_save_and_says_the_run_stays_resumable(qtbot):
    box = stop_box(None)
    qtbot.addWidget(box)
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.Save)
    assert "resumable" in box.informativeText() and "Discard" in box.informativeText()
    assert choice_of(QMessageBox.StandardButton.Save) == SAVE
    assert choice_of(QMessageBox.StandardButton.Discard) == DISCARD
    assert choice_of(QMessageBox.StandardButton.Cancel) == CANCEL


@pytest.fixture
def fake(monkeypatch):
    cls = fresh_fake(step_time_s=0.002)
    monkeypatch.setattr(graftlab.app.run.worker, "TrainingSession", cls)
    return cls


def test_cancel_keeps_training_and_save_stops_with_the_adapter(qtbot, window, fake,
                                                               tmp_path):
    w = window()
    prepare(qtbot, w, tmp_path / "run", max_steps=1_000_000)
    results: list = []
    w.controller.finished.connect(results.append)
    w.start_training()
    assert w.last_error is None and w.controller.is_running()
    w.commands.stop_chooser = lambda parent: CANCEL
    with qtbot.assertNotEmitted(w.controller.finished, wait=50):
        w.training_panel.stop_button.click()
    assert w.controller.is_running() and w.training_panel.state() == "running"
    w.commands.stop_chooser = lambda parent: SAVE
    with qtbot.waitSignal(w.controller.finished, timeout=10_000):
        w.training_panel.stop_button.click()
    assert results[0].stopped_early and results[0].adapter_dir is not None


def test_export_while_paused_holds_a_resume_until_the_save_is_done(qtbot, window, fake,
                                                                    tmp_path):
    fake.snapshot_time_s = 0.3
    w = window()
    prepare(qtbot, w, tmp_path / "run", max_steps=1_000_000)
    batches: list = []
    w.controller.events.connect(batches.append)
    w.start_training()
    assert not w.export_current_action.isEnabled()
    w.adapters.export_current_adapter(tmp_path / "too-early")  # not paused: the sentence, no crash
    assert "pause the run" in w.last_error
    qtbot.waitUntil(lambda: len(steps_of(batches)) >= 5, timeout=10_000)
    w.pause_action.trigger()
    qtbot.waitUntil(lambda: any(isinstance(e, Paused) for b in batches for e in b),
                    timeout=10_000)
    assert w.export_current_action.isEnabled() and "paused" in w.eta_label.text()
    n = len(steps_of(batches))
    w.adapters.export_current_adapter(tmp_path / "snap")
    assert not w.export_current_action.isEnabled()
    w.resume_training()  # asked during the save: held back until it is written
    with qtbot.waitSignal(w.controller.snapshot_saved, timeout=10_000):
        pass
    assert fake.snapshot_log == [(str(tmp_path / "snap"), True)]
    assert fake.snapshot_threads and "MainThread" not in fake.snapshot_threads, \
        "the save runs off the GUI thread"
    assert w.adapters.last_snapshot[0][0] == tmp_path / "snap" / "adapter_model.safetensors"
    qtbot.waitUntil(lambda: len(steps_of(batches)) > n + 3, timeout=10_000)  # resumed
    w.commands.stop_chooser = lambda parent: SAVE
    with qtbot.waitSignal(w.controller.finished, timeout=10_000):
        w.ask_and_stop()
