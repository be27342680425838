"""Building blocks for the main window's actions, menus and toolbar.

The window creates its actions itself (MainWindow._build_actions) with `make_action`, and
hands them to `build_menus` and `build_toolbar` as explicit lists; nothing here reaches into
the window's attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMenu, QMenuBar, QMessageBox, QStyle, QToolBar

PRESETS = (("attention", "attention"), ("mlp", "MLP"), ("all-linear", "all linear"),
           ("none", "none"))  # (preset key, menu label), on Ctrl+1, Ctrl+2, Ctrl+3, Ctrl+0

# One menu: (title, entries); an entry is an action, a submenu, or None for a separator.
MenuEntry = QAction | QMenu | None


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


def build_menus(bar: QMenuBar, menus: Sequence[tuple[str, Sequence[MenuEntry]]]) -> None:
    for title, entries in menus:
        menu = bar.addMenu(title)
        for entry in entries:
            if entry is None:
                menu.addSeparator()
            elif isinstance(entry, QMenu):
                menu.addMenu(entry)
            else:
                menu.addAction(entry)


def build_toolbar(window: QMainWindow, groups: Sequence[Sequence[QAction]]) -> QToolBar:
    """The main toolbar: groups of actions with separators between them."""
    tools = QToolBar("Main")
    tools.setObjectName("mainToolbar")
    tools.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    tools.setMovable(False)
    for i, group in enumerate(groups):
        if i:
            tools.addSeparator()
        for action in group:
            tools.addAction(action)
    window.addToolBar(tools)
    return tools


def recent_models_menu(parent: QMainWindow, recent: Callable[[], list[str]],
                       open_spec: Callable[[str], None]) -> QMenu:
    """File > Recent models, filled each time it opens (the list changes as models open)."""
    menu = QMenu("Recent &models", parent)

    def fill() -> None:
        menu.clear()
        for spec in recent():
            menu.addAction(spec, lambda s=spec: open_spec(s))
        if menu.isEmpty():
            menu.addAction("(none yet)").setEnabled(False)

    menu.aboutToShow.connect(fill)
    return menu


def show_about(parent: QMainWindow) -> None:
    QMessageBox.about(parent, "About Graftlab",
                      "Graftlab: see and steer LoRA fine-tuning.\n"
                      "Every run is a run.yaml: `graftlab train run.yaml` replays it.")
