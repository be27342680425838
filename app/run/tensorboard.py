"""TensorBoard for runs that wrote event files (`training.report_to: [tensorboard]`): one
`tensorboard` child process on a free localhost port, the browser opened at it once it
serves, and the process ended when its owner closes.

The process is TensorBoard's own (`python -m tensorboard.main`, the interpreter Graftlab runs
in, so a TensorBoard installed there is found), started through QProcess: nothing blocks the
window, and its output is read only to see when it serves (it prints its URL) or why it did
not start. One launcher runs one TensorBoard at a time; another set of runs restarts it.
"""

from __future__ import annotations

import importlib.util
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from graftlab.core.errors import UserError
from PySide6.QtCore import QObject, QProcess, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices

EVENTS_DIR = "tensorboard"  # RUN/tensorboard, where training.report_to puts event files
READY_TIMEOUT_MS = 60_000
NOT_INSTALLED = ('TensorBoard is not installed; install it with pip install '
                 '"graftlab[tensorboard]" and reopen this window.')


def tensorboard_available() -> bool:
    """Whether `tensorboard` can be imported here (checked without importing it)."""
    return importlib.util.find_spec("tensorboard") is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def event_dirs(run_dirs: Sequence[str | Path]) -> dict[str, Path]:
    """{name: RUN/tensorboard} of the runs that have event files; a sentence if none has."""
    out: dict[str, Path] = {}
    for run in map(Path, run_dirs):
        events = run / EVENTS_DIR
        if events.is_dir():
            name = re.sub(r"[:,\s]+", "_", run.name) or "run"  # --logdir_spec separators
            while name in out:
                name += "_"
            out[name] = events
    if not out:
        which = f"run {Path(run_dirs[0]).name} has" if len(run_dirs) == 1 else \
            "none of the selected runs has"
        raise UserError(f"{which} no TensorBoard event files ({EVENTS_DIR}/ in the run "
                        "folder); train with training.report_to: [tensorboard] to write them.")
    return out


def tensorboard_arguments(logdirs: dict[str, Path], port: int) -> list[str]:
    """The arguments after the interpreter: one run is --logdir, several a --logdir_spec."""
    args = ["-m", "tensorboard.main", "--host", "127.0.0.1", "--port", str(port)]
    if len(logdirs) == 1:
        return [*args, "--logdir", str(next(iter(logdirs.values())))]
    return [*args, "--logdir_spec", ",".join(f"{k}:{v}" for k, v in logdirs.items())]


class TensorBoardLauncher(QObject):
    """Starts TensorBoard on runs, opens the browser when it serves, stops it on `shutdown`."""

    ready = Signal(str)  # the URL, once TensorBoard serves
    failed = Signal(str)  # a sentence: it exited, or did not serve in time

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.process: QProcess | None = None
        self.url = ""
        self.logdirs: dict[str, Path] = {}
        self._output = ""
        self._serving = False
        self.open_url = QDesktopServices.openUrl  # tests replace it
        self._timeout = QTimer(self)
        self._timeout.setSingleShot(True)
        self._timeout.timeout.connect(self._on_timeout)

    def is_running(self) -> bool:
        return self.process is not None and \
            self.process.state() != QProcess.ProcessState.NotRunning

    def open(self, run_dirs: Sequence[str | Path]) -> str:
        """TensorBoard on the event files of `run_dirs` (a UserError when none has any, or
        TensorBoard is missing); returns its URL. The same runs again: the browser again."""
        if not tensorboard_available():
            raise UserError(NOT_INSTALLED)
        logdirs = event_dirs(list(run_dirs))
        if self.is_running() and logdirs == self.logdirs:
            if self._serving:
                self.open_url(QUrl(self.url))
            return self.url
        self.shutdown()
        port = free_port()
        self.logdirs, self.url = logdirs, f"http://127.0.0.1:{port}/"
        self._output, self._serving = "", False
        proc = QProcess(self)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        proc.readyReadStandardOutput.connect(self._on_output)
        proc.finished.connect(self._on_finished)
        self.process = proc
        proc.start(sys.executable, tensorboard_arguments(logdirs, port))
        self._timeout.start(READY_TIMEOUT_MS)
        return self.url

    def shutdown(self, timeout_ms: int = 3000) -> None:
        """End the TensorBoard process (SIGTERM, then SIGKILL if it lingers)."""
        self._timeout.stop()
        proc, self.process = self.process, None
        if proc is None:
            return
        proc.finished.disconnect(self._on_finished)
        if proc.state() != QProcess.ProcessState.NotRunning:
            proc.terminate()
            if not proc.waitForFinished(timeout_ms):
                proc.kill()
                proc.waitForFinished(timeout_ms)
        proc.deleteLater()

    @Slot()
    def _on_output(self) -> None:
        proc = self.sender()
        if not isinstance(proc, QProcess):
            return
        self._output = (self._output + bytes(proc.readAllStandardOutput().data())
                        .decode("utf-8", "replace"))[-4000:]
        if not self._serving and self.url.rstrip("/") in self._output:  # "TensorBoard … at URL"
            self._serving = True
            self._timeout.stop()
            self.open_url(QUrl(self.url))
            self.ready.emit(self.url)

    @Slot(int, QProcess.ExitStatus)
    def _on_finished(self, code: int, _status: QProcess.ExitStatus) -> None:
        self._timeout.stop()
        last = [ln for ln in self._output.splitlines() if ln.strip()]
        self.failed.emit(f"TensorBoard exited (code {code})" +
                         (f": {last[-1].strip()}" if last else "") + ".")

    @Slot()
    def _on_timeout(self) -> None:
        self.shutdown()
        self.failed.emit(f"TensorBoard did not start serving within {READY_TIMEOUT_MS // 1000} "
                         "s; it was stopped.")
