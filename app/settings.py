"""What the app remembers between sessions (QSettings): window geometry and state, recent
models, the last run, the folders last used in file dialogs and the runs library's roots.

Tests pass their own QSettings (an ini file in a temp folder), so they never touch the user's.
"""

from __future__ import annotations

from pathlib import Path

from graftlab.core.runs_command import DEFAULT_RUNS_ROOT
from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtWidgets import QMainWindow, QSplitter

ORGANIZATION = "Graftlab"
APPLICATION = "Graftlab"
MAX_RECENT = 10


def default_qsettings() -> QSettings:
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION,
                     APPLICATION)


class AppSettings:
    """Typed accessors over one QSettings object."""

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.qsettings = qsettings if qsettings is not None else default_qsettings()

    # ---- window ---------------------------------------------------------------------------
    def geometry(self) -> QByteArray | None:
        value = self.qsettings.value("window/geometry")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def window_state(self) -> QByteArray | None:
        value = self.qsettings.value("window/state")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def splitter_state(self, name: str) -> QByteArray | None:
        value = self.qsettings.value(f"window/splitter/{name}")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def save_window(self, geometry: QByteArray, state: QByteArray,
                    splitters: dict[str, QByteArray]) -> None:
        self.qsettings.setValue("window/geometry", geometry)
        self.qsettings.setValue("window/state", state)
        for name, value in splitters.items():
            self.qsettings.setValue(f"window/splitter/{name}", value)

    def restore_layout(self, window: QMainWindow, splitters: list[QSplitter]) -> None:
        """Give `window` and its named `splitters` the geometry saved by `save_layout`."""
        geometry, state = self.geometry(), self.window_state()
        if geometry is not None:
            window.restoreGeometry(geometry)
        if state is not None:
            window.restoreState(state)
        for split in splitters:
            saved = self.splitter_state(split.objectName())
            if saved is not None:
                split.restoreState(saved)

    def save_layout(self, window: QMainWindow, splitters: list[QSplitter]) -> None:
        self.save_window(window.saveGeometry(), window.saveState(),
                         {s.objectName(): s.saveState() for s in splitters})

    # ---- recent models --------------------------------------------------------------------
    def recent_models(self) -> list[str]:
        value = self.qsettings.value("recent/models")
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or []) if str(v)]

    def add_recent_model(self, spec: str) -> list[str]:
        recent = [spec] + [r for r in self.recent_models() if r != spec]
        recent = recent[:MAX_RECENT]
        self.qsettings.setValue("recent/models", recent)
        return recent

    def clear_recent_models(self) -> None:
        self.qsettings.remove("recent/models")

    # ---- last run -------------------------------------------------------------------------
    def last_run_yaml(self) -> str | None:
        value = self.qsettings.value("run/last_yaml")
        return str(value) if value else None

    def set_last_run_yaml(self, text: str) -> None:
        self.qsettings.setValue("run/last_yaml", text)

    def last_run_path(self) -> str | None:
        value = self.qsettings.value("run/last_path")
        return str(value) if value else None

    def set_last_run_path(self, path: str) -> None:
        self.qsettings.setValue("run/last_path", path)

    def keep_running(self) -> bool:
        """Runs go on when the window closes (Run > Keep running when the window closes)."""
        return str(self.qsettings.value("run/keep_running", "false")).lower() == "true"

    def set_keep_running(self, on: bool) -> None:
        self.qsettings.setValue("run/keep_running", "true" if on else "false")

    # ---- dialog folders -------------------------------------------------------------------
    def last_dir(self, kind: str) -> str:
        return str(self.qsettings.value(f"dirs/{kind}", "") or "")

    def set_last_dir(self, kind: str, folder: str) -> None:
        self.qsettings.setValue(f"dirs/{kind}", folder)

    # ---- runs library ---------------------------------------------------------------------
    def runs_roots(self) -> list[str]:
        """The folders the runs library lists; by default the one `training.output_dir` puts
        runs into (``./runs``, absolute), until the user changes the list."""
        value = self.qsettings.value("library/roots")
        if value is None:
            return [str(Path(DEFAULT_RUNS_ROOT).absolute())]
        if isinstance(value, str):
            value = [value] if value else []
        return [str(v) for v in value if str(v)]

    def set_runs_roots(self, roots: list[str]) -> None:
        # An empty list is stored as "" (QSettings' ini format drops empty lists).
        self.qsettings.setValue("library/roots", list(roots) if roots else "")

    def sync(self) -> None:
        self.qsettings.sync()
