"""The main window: first start, opening models (and failing to), settings, drag and drop,
shortcuts, command line, closing during a run, and a Llama-3-70B config."""

from __future__ import annotations

from graftlab.app.__main__ import main  # noqa: F401 - importable entry point
from graftlab.core.adapter.plan import plan_adapter
from graftlab.core.config import AdapterConfig
from gui_waits import core_count, open_model, wait_loaded
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QApplication, QPushButton

pytest_plugins = ["gui_helpers"]  # fixtures: qsettings, make_window, 70B config


def test_first_start_opens_the_demo_ready_to_train(qtbot, make_window):
    w = make_window(open_demo=True)
    wait_loaded(qtbot, w)
    cfg = w.run_config()
    assert cfg.model.source == "demo:tiny-llama" and cfg.data.path == "demo:stories"
    assert cfg.adapter.targets == w.tree.preset("attention")
    assert int(w.adapter_panel.total_label.text().replace(",", "")) == core_count(w)
    assert w.model_panel.weights_label.text() == "random weights — demo only"
    assert w.data_panel.result is not None and w.data_panel.result.error is None
    assert w.start_action.isEnabled()


def test_a_nonexistent_model_path_shows_the_message_and_the_app_stays_usable(
        qtbot, make_window, tmp_path):
    w = make_window()
    w.open_model(str(tmp_path / "no-such-model"))
    qtbot.waitUntil(lambda: not w.is_loading(), timeout=30_000)
    assert "does not exist" in w.model_panel.error_label.text()
    assert w.tree is None and w.last_error and "does not exist" in w.last_error
    w.start_training()
    assert "open a model first" in w.last_error
    open_model(qtbot, w, "demo:tiny-llama")
    assert not w.model_panel.error_label.isVisibleTo(w)
    assert w.tree is not None


def test_a_folder_without_config_and_an_empty_source(qtbot, make_window, tmp_path):
    w = make_window()
    w.open_model(str(tmp_path))
    qtbot.waitUntil(lambda: not w.is_loading(), timeout=30_000)
    assert "has no config.json" in w.model_panel.error_label.text()
    w._on_open_requested("   ")
    assert "no model given" in w.model_panel.error_label.text()


def test_recent_models_and_window_state_are_remembered(qtbot, make_window, qsettings):
    w = make_window()
    open_model(qtbot, w, "demo:tiny-llama")
    assert w.settings.recent_models()[0] == "demo:tiny-llama"
    w.close()
    qsettings.sync()
    again = QSettings(qsettings.fileName(), QSettings.Format.IniFormat)
    assert again.value("window/geometry") is not None
    assert "demo:tiny-llama" in str(again.value("run/last_yaml"))


def test_last_run_is_restored_on_the_next_start(qtbot, make_window, qsettings):
    w = make_window()
    open_model(qtbot, w, "demo:tiny-llama")
    w.layer_tree.apply_preset("mlp")
    w.adapter_panel.rank_spin.setValue(4)
    cfg = w.run_config()
    w.close()
    w2 = make_window(open_demo=True)
    wait_loaded(qtbot, w2)
    assert w2.run_config() == cfg


def test_drop_of_a_data_file_and_a_model_folder(qtbot, make_window, write_jsonl):
    from graftlab.core.model.demo import demo_model_path

    w = make_window()
    w.show()
    data = write_jsonl([{"text": "hello world"}] * 3)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(data))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    w.dropEvent(event)
    assert w.data_panel.values().path == str(data)
    assert w.tabs.currentWidget() is w.data_panel
    assert w.open_path(str(demo_model_path("tiny-llama"))) == "model"
    wait_loaded(qtbot, w)
    assert w.source.kind == "folder"


def test_shortcuts(qtbot, make_window):
    w = make_window()
    keys = {a.text(): [s.toString() for s in a.shortcuts()] for a in w.actions()}
    assert keys["Open &model folder…"] == ["Ctrl+O"]
    assert keys["&Open run…"] == ["Ctrl+Shift+O"]
    assert keys["&Save run"] == ["Ctrl+S"]
    assert "Ctrl+Return" in keys["&Start training"]
    assert set(keys["&Pause / resume"]) == {"Ctrl+P", "Space"}
    assert keys["&Export adapter…"] == ["Ctrl+E"]
    assert keys["&Filter modules"] == ["Ctrl+F"]
    w.show()
    w.activateWindow()
    qtbot.waitActive(w)
    # through the QWindow, so the key goes through the shortcut map as a real key press does
    qtbot.keyClick(w.windowHandle(), Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: QApplication.focusWidget() is w.layer_tree.filter_edit,
                    timeout=2000)


def test_copy_command_line_saves_and_copies(qtbot, make_window, tmp_path):
    w = make_window()
    open_model(qtbot, w, "demo:tiny-llama")
    w.layer_tree.apply_preset("attention")
    w.run_files.run_path = tmp_path / "my run.yaml"
    command = w.run_files.copy_command_line()
    assert command == f"graftlab train '{(tmp_path / 'my run.yaml').resolve()}'"
    assert QApplication.clipboard().text() == command
    assert (tmp_path / "my run.yaml").is_file()
    assert w.windowTitle().startswith("my run.yaml")


def test_closing_during_a_run_asks_and_can_be_cancelled(qtbot, make_window, monkeypatch):
    w = make_window()
    w.show()
    state = {"running": True, "asked": 0, "stopped": 0}
    monkeypatch.setattr(w.controller, "is_running", lambda: state["running"])
    monkeypatch.setattr(w.controller, "stop", lambda save=True: state.__setitem__(
        "stopped", state["stopped"] + 1))
    monkeypatch.setattr(w.controller, "shutdown", lambda timeout_ms=0: True)

    def ask() -> bool:
        state["asked"] += 1
        return state["asked"] > 1  # first: cancel, then: stop and save

    monkeypatch.setattr(w, "_ask_stop_on_close", ask)
    assert not w.close()
    assert w.isVisible() and state["stopped"] == 0 and not w.closer.is_active()
    assert not w.close()  # stop and save: never a wait on the GUI thread, a progress dialog
    assert state["stopped"] == 1 and w.closer.is_active()
    assert "saving" in w.closer.label_text()
    state["running"] = False
    w._on_run_finished(None)  # runner.finished: closes by itself
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=2000)
    assert not w.closer.is_active()


def test_end_now_while_closing_asks_the_runner_to_kill(qtbot, make_window, monkeypatch):
    """The dialog's End now goes to the RunController, whose kill never cuts a save short (tested
    with a real child process in tests/core/test_run_control_races.py)."""
    w = make_window()
    w.show()
    state = {"running": True, "saving": True, "kills": 0}
    monkeypatch.setattr(w.controller, "is_running", lambda: state["running"])
    monkeypatch.setattr(w.controller, "is_saving", lambda: state["saving"])
    monkeypatch.setattr(w.controller, "stop", lambda save=True: None)
    monkeypatch.setattr(w.controller, "kill",
                        lambda: state.__setitem__("kills", state["kills"] + 1))
    monkeypatch.setattr(w, "_ask_stop_on_close", lambda: True)
    try:
        assert not w.close()
        qtbot.waitUntil(lambda: "written" in w.closer.label_text(), timeout=2000)
        end_now = next(b for b in w.closer.dialog.findChildren(QPushButton)
                       if b.text() == "End now")
        qtbot.mouseClick(end_now, Qt.MouseButton.LeftButton)
        assert state["kills"] == 1 and w.closer.is_active() and w.isVisible()
        qtbot.waitUntil(lambda: "as soon as the write" in w.closer.label_text(), timeout=2000)
    finally:
        state["running"] = False  # never leave the window stuck in "closing"
    w._on_run_finished(None)
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=2000)


def test_close_waits_for_the_run_when_the_step_is_still_running(qtbot, make_window,
                                                                monkeypatch):
    w = make_window()
    w.show()
    running = {"v": True}
    monkeypatch.setattr(w.controller, "is_running", lambda: running["v"])
    monkeypatch.setattr(w.controller, "stop", lambda save=True: None)
    monkeypatch.setattr(w.controller, "shutdown", lambda timeout_ms=0: not running["v"])
    monkeypatch.setattr(w, "_ask_stop_on_close", lambda: True)
    assert not w.close()  # the step in flight has not finished: the window stays
    running["v"] = False
    w._on_run_finished(None)  # runner.finished: closes by itself
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=2000)


def test_llama_70b_config_opens_and_all_linear_updates_every_count(
        qtbot, make_window, llama70b_config):
    # How long the clicks take is measured by tests/bench/bench_layer_tree_70b.py, not here.
    w = make_window()
    w.show()
    open_model(qtbot, w, str(llama70b_config))
    assert len(w.tree.modules) == 1047
    assert w.model_panel.weights_label.text().startswith("no")
    for preset in ("all-linear", "none", "all-linear"):
        qtbot.mouseClick(w.layer_tree.preset_buttons[preset], Qt.MouseButton.LeftButton)
    expected = plan_adapter(w.tree, AdapterConfig(targets=w.tree.preset("all-linear")))
    assert w.plan.trainable_params == expected.trainable_params == 103_546_880
    assert w.adapter_panel.total_label.text() == "103,546,880"
    assert w.tree_model.total_trainable() == expected.trainable_params
    # a config.json has no weights: training is refused with the core-style sentence
    w.start_training()
    assert "bare config.json" in w.last_error


def test_weights_download_shows_in_the_progress_bar(qtbot, make_window):
    from graftlab.core.train.events import Download

    w = make_window()
    w.status._on_run_events([Download(2**29, 2**30, "model.safetensors")])
    assert w.status.run_progress.value() == 500
    assert "downloading weights 0.50 of 1.00 GB" in w.eta_label.text()
