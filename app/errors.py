"""How the GUI shows a failure: a UserError's one sentence next to its field, anything else
as a dialog with the traceback under "Show Details". The app always stays usable."""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from graftlab.core.errors import UserError
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QMessageBox, QWidget

log = logging.getLogger("graftlab.app")
F = TypeVar("F", bound=Callable[..., Any])


class ErrorLabel(QLabel):
    """A one-line (wrapping) error message shown under a form field; hidden when empty."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        # Red reads on both light and dark palettes; everything else uses the system palette.
        self.setStyleSheet("color: #e5534b;")
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.hide()

    def show_message(self, message: str) -> None:
        self.setText(message)
        self.setVisible(bool(message))

    def clear_message(self) -> None:
        self.show_message("")


def report(widget: QWidget | None, exc: BaseException, tb: str | None = None) -> None:
    """Route `exc` to the main window's reporter (field-aware), else show a dialog."""
    # a composed (non-widget) part of a window names its window as `host`
    host = widget.window() if isinstance(widget, QWidget) else getattr(widget, "host", None)
    reporter = getattr(host, "report_error", None)
    if callable(reporter):
        reporter(exc, tb)
        return
    show_dialog(widget, exc, tb)


def show_dialog(parent: QWidget | None, exc: BaseException, tb: str | None = None) -> QMessageBox:
    """Non-blocking message box: the sentence for a UserError, the traceback for a bug."""
    box = QMessageBox(parent)
    if isinstance(exc, UserError):
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("Graftlab")
        box.setText(exc.message)
    else:
        box.setIcon(QMessageBox.Icon.Critical)
        box.setWindowTitle("Graftlab: internal error")
        box.setText(f"Something went wrong inside Graftlab: {type(exc).__name__}: {exc}\n\n"
                    "The app is still usable. Please report this with the details below.")
        box.setDetailedText(tb or "".join(traceback.format_exception(exc)))
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    box.setObjectName("errorDialog")
    box.open()  # window-modal, does not block the event loop (tests and live plots keep going)
    return box


def reports_errors(method: F) -> F:
    """Wrap a slot body that calls core: a UserError or bug is shown, never raised into Qt."""

    @functools.wraps(method)
    def wrapper(self: QWidget, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except UserError as exc:
            report(self, exc)
        except Exception as exc:  # an internal bug: show it, keep the app alive
            log.exception("unexpected error in %s", method.__qualname__)
            report(self, exc, traceback.format_exc())
        return None

    return wrapper  # type: ignore[return-value]
