"""Closing the window while a run is in flight, without freezing it.

The run is asked to stop (saving a checkpoint and the adapter) and the window stays open, with
a progress dialog, until the runner reports that it finished; the close then happens by
itself. Nothing here waits on the GUI thread: the only waits are Qt signals. "End now" in the
dialog kills the training process, except while it reports that it is saving: the kill then
waits until the write is done, so a checkpoint or adapter is never cut off halfway.
A run-folder scan still in flight (it hashes every checkpoint) is waited for the same way.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Slot
from PySide6.QtWidgets import QProgressDialog, QWidget

POLL_MS = 200


class RunCloser(QObject):
    """Owns the "closing…" progress dialog of one window."""

    def __init__(self, window: QWidget, runner: Any) -> None:
        super().__init__(window)
        self.window, self.runner = window, runner
        self.dialog: QProgressDialog | None = None
        self.end_requested = False
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._on_timer)

    def is_active(self) -> bool:
        return self.dialog is not None

    def begin(self, text: str = "Stopping the run: saving a checkpoint and the adapter, then "
              "closing…") -> None:
        """Show the progress dialog (busy bar) until :meth:`finish`."""
        if self.dialog is None:
            dialog = QProgressDialog(text, "End now", 0, 0, self.window)
            dialog.setWindowTitle("Closing Graftlab")
            dialog.setWindowModality(Qt.WindowModality.WindowModal)
            dialog.setMinimumDuration(0)
            dialog.setAutoClose(False)
            dialog.setAutoReset(False)
            dialog.canceled.connect(self._on_end_now)
            self.dialog = dialog
            dialog.show()
            self._timer.start()
        else:
            self.dialog.setLabelText(text)

    def wait_for(self, signal: Any, text: str) -> None:
        """Close the window once `signal` fires (a background job that cannot be cut off)."""
        self.begin(text)
        signal.connect(self._on_done, Qt.ConnectionType.SingleShotConnection)

    @Slot()
    def _on_done(self) -> None:
        self.finish()
        QTimer.singleShot(0, self.window.close)

    def finish(self) -> None:
        self._timer.stop()
        if self.dialog is not None:
            dialog, self.dialog = self.dialog, None
            dialog.canceled.disconnect(self._on_end_now)
            dialog.close()
            dialog.deleteLater()

    def label_text(self) -> str:
        return self.dialog.labelText() if self.dialog is not None else ""

    @Slot()
    def _on_timer(self) -> None:
        if self.dialog is None or not self.runner.is_running():
            return
        if self.runner.is_saving():
            self.dialog.setLabelText(
                "Saving; the training process is ended as soon as the write is complete…"
                if self.end_requested else
                "Saving a checkpoint or the adapter; the window closes when it is written…")

    @Slot()
    def _on_end_now(self) -> None:
        """End the training process now; never in the middle of a save (the runner's kill
        waits for the write to finish)."""
        if self.dialog is None:
            return
        self.dialog.show()  # cancel hides a progress dialog; keep it until the run is over
        if self.runner.is_running():
            self.end_requested = True
            self.dialog.setLabelText("Ending the training process; the last complete "
                                     "checkpoint is kept…")
            self.runner.kill()
