"""The main window's actions, keyboard shortcuts, menus and toolbar.

`install_actions(window)` creates every QAction as an attribute of the window (`start_action`,
`pause_action`, `export_current_action`, …: MainWindow lists them), wires each to the window's
slot and lays out the menu bar and the toolbar. The slots themselves stay on the window.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMessageBox, QStyle, QToolBar

if TYPE_CHECKING:
    from graftlab.app.windows.main_window import MainWindow

PRESETS = (("attention", "attention"), ("mlp", "MLP"), ("all-linear", "all linear"),
           ("none", "none"))  # (preset key, menu label), on Ctrl+1, Ctrl+2, Ctrl+3, Ctrl+0


def make_action(window: QMainWindow, text: str, slot: Callable[[], Any], shortcut: Any = None,
                tip: str = "", icon: QStyle.StandardPixmap | None = None) -> QAction:
    """An action on `window` that calls `slot()`; `shortcut` is one key sequence or a list."""
    action = QAction(text, window)
    if shortcut is not None:
        shortcuts = shortcut if isinstance(shortcut, list) else [shortcut]
        action.setShortcuts([QKeySequence(s) for s in shortcuts])
    if tip:
        action.setStatusTip(tip)
        action.setToolTip(tip)
    if icon is not None:
        action.setIcon(window.style().standardIcon(icon))
    action.triggered.connect(lambda _=False: slot())
    window.addAction(action)  # shortcuts work even with the menu bar hidden
    return action


def install_actions(w: MainWindow) -> None:
    """Create the actions on `w`, then its menus and toolbar."""
    act = partial(make_action, w)
    sp = QStyle.StandardPixmap
    w.open_model_action = act(
        "Open &model folder…", w.model_panel.browse_folder, QKeySequence.StandardKey.Open,
        "Open a Hugging Face model folder", sp.SP_DirOpenIcon)
    w.open_config_action = act("Open model &config.json…", w.model_panel.browse_config)
    w.open_cache_action = act("Open from the Hugging Face &cache…", w.model_panel.browse_cache)
    w.open_run_action = act("&Open run…", w.open_run_dialog, "Ctrl+Shift+O", "Open a run.yaml",
                            sp.SP_FileIcon)
    w.save_run_action = act("&Save run", w.save_run, QKeySequence.StandardKey.Save,
                            "Save the run as run.yaml", sp.SP_DialogSaveButton)
    w.save_run_as_action = act("Save run &as…", w.save_run_as, "Ctrl+Shift+S")
    w.copy_cmd_action = act(
        "Copy &command line", w.copy_command_line, "Ctrl+Shift+C",
        "Copy the `graftlab train run.yaml` command that reproduces this run")
    w.export_action = act("&Export adapter…", w.export_adapter, "Ctrl+E",
                          "Export the trained adapter", sp.SP_DialogApplyButton)
    w.export_current_action = act(
        "Export c&urrent adapter…", w.export_current_adapter, "Ctrl+Shift+E",
        "While paused: save the adapter as it is now")
    w.resume_run_action = act(
        "&Resume run…", w.open_resume_dialog, "Ctrl+R",
        "Continue a stopped or interrupted run from its last checkpoint")
    w.quit_action = act("&Quit", w.close, QKeySequence.StandardKey.Quit)
    w.start_action = act("&Start training", w.start_training, ["Ctrl+Return", "Ctrl+Enter"],
                         "Start training (Ctrl+Return)", sp.SP_MediaPlay)
    w.pause_action = act("&Pause / resume", w.toggle_pause, ["Ctrl+P", "Space"],
                         "Pause or resume (Ctrl+P)", sp.SP_MediaPause)
    w.stop_action = act("S&top…", w.ask_and_stop, "Ctrl+.",
                        "Stop after this step: save or discard the adapter", sp.SP_MediaStop)
    w.filter_action = act("&Filter modules", w.focus_filter, QKeySequence.StandardKey.Find)
    w.inspect_action = act("&Inspect adapter…", w.inspect_adapter, "Ctrl+I",
                           "Open any PEFT LoRA adapter folder in the inspector")
    w.compare_action = act("&Compare adapters…", w.compare_adapter_folders,
                           tip="Compare the updates of two adapter folders")
    w.preset_actions = {
        key: act(f"Preset: {label}", lambda k=key: w.layer_tree.apply_preset(k), f"Ctrl+{n}")
        for n, (key, label) in zip((1, 2, 3, 0), PRESETS, strict=True)}
    w.pause_action.setEnabled(False)
    w.stop_action.setEnabled(False)
    w.export_current_action.setEnabled(False)
    _build_menus(w)
    _build_toolbar(w)


def _build_menus(w: MainWindow) -> None:
    bar = w.menuBar()
    file_menu = bar.addMenu("&File")
    for a in (w.open_model_action, w.open_config_action, w.open_cache_action):
        file_menu.addAction(a)
    w.recent_menu = file_menu.addMenu("Recent &models")
    w.recent_menu.aboutToShow.connect(partial(_fill_recent_menu, w))
    file_menu.addSeparator()
    for a in (w.open_run_action, w.save_run_action, w.save_run_as_action, w.copy_cmd_action,
              w.resume_run_action):
        file_menu.addAction(a)
    file_menu.addSeparator()
    file_menu.addAction(w.export_action)
    file_menu.addAction(w.export_current_action)
    file_menu.addSeparator()
    file_menu.addAction(w.quit_action)
    select_menu = bar.addMenu("&Select")
    select_menu.addAction(w.filter_action)
    for a in w.preset_actions.values():
        select_menu.addAction(a)
    train_menu = bar.addMenu("&Train")
    for a in (w.start_action, w.pause_action, w.stop_action):
        train_menu.addAction(a)
    tools_menu = bar.addMenu("T&ools")
    tools_menu.addAction(w.inspect_action)
    tools_menu.addAction(w.compare_action)
    help_menu = bar.addMenu("&Help")
    help_menu.addAction("&About Graftlab", partial(_show_about, w))


def _build_toolbar(w: MainWindow) -> None:
    tools = QToolBar("Main")
    tools.setObjectName("mainToolbar")
    tools.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    tools.setMovable(False)
    for a in (w.open_model_action, w.open_run_action, w.save_run_action):
        tools.addAction(a)
    tools.addSeparator()
    for a in (w.start_action, w.pause_action, w.stop_action):
        tools.addAction(a)
    tools.addSeparator()
    tools.addAction(w.export_action)
    w.addToolBar(tools)


def _fill_recent_menu(w: MainWindow) -> None:
    """File > Recent models, filled each time it opens (the list changes as models open)."""
    w.recent_menu.clear()
    for spec in w.settings.recent_models():
        w.recent_menu.addAction(spec, lambda s=spec: w._on_open_requested(s))
    if w.recent_menu.isEmpty():
        w.recent_menu.addAction("(none yet)").setEnabled(False)


def _show_about(w: QMainWindow) -> None:
    QMessageBox.about(w, "About Graftlab",
                      "Graftlab: see and steer LoRA fine-tuning.\n"
                      "Every run is a run.yaml: `graftlab train run.yaml` replays it.")
