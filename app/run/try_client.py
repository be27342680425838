"""The Try tab's side of the Try process: requests run one after another on a worker thread,
and their answers come back as signals on the GUI thread.

The model lives in the child process (graftlab.core.process.try_child), never in the window's
process. Requests queue up in order (load, then attach, then generate); `stop()` reaches the
child at once, ending a generation after its current token.
"""

from __future__ import annotations

import queue
import threading
import traceback
from typing import Any

from graftlab.core.process.try_child import TryProcess
from PySide6.QtCore import QObject, Signal


class TryClient(QObject):
    """Drives one TryProcess. Every signal is emitted from the worker thread and connected to
    GUI-thread QObjects, so receivers run on the GUI thread."""

    loaded = Signal(object)  # info dict: base, task, chat_template, adapters, labels, load_s
    attached = Signal(object)  # info dict plus name and attach_s
    piece = Signal(str, str)  # side, streamed text
    generated = Signal(object)  # {texts, seconds, tokens, stopped}
    classified = Signal(object)  # {probs: {side: [[label, p], ...]}}
    failed = Signal(object)  # the exception (UserError: one sentence), `formatted_traceback`
    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None, process: TryProcess | None = None) -> None:
        super().__init__(parent)
        self.process = process or TryProcess()
        self._requests: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ---- requests (GUI thread) ----------------------------------------------------------
    def load(self, base: str, task: str = "auto", num_labels: int | None = None,
             label_names: list[str] | None = None, trust_remote_code: bool = False) -> None:
        self._submit("load", base=base, task=task, num_labels=num_labels,
                     label_names=label_names, trust_remote_code=trust_remote_code)

    def attach(self, folder: str, name: str | None = None) -> None:
        self._submit("attach", dir=folder, name=name)

    def generate(self, prompt: str, sides: list[str], options: dict[str, Any],
                 system: str | None = None, chat: bool = False) -> None:
        self._submit("generate", prompt=prompt, sides=sides, options=options, system=system,
                     chat=chat)

    def classify(self, text: str, sides: list[str]) -> None:
        self._submit("classify", text=text, sides=sides)

    def stop(self) -> None:
        """End the generation in flight after its current token; drop queued requests."""
        while True:
            try:
                item = self._requests.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._requests.put(None)
                break
            self._done_one()
        self.process.stop()

    def is_busy(self) -> bool:
        return self._pending > 0

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop, end the child process and join the worker (closing the window)."""
        self.stop()
        self._requests.put(None)
        self.process.stop()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
        self.process.close()

    def _submit(self, cmd: str, **fields: Any) -> None:
        with self._lock:
            self._pending += 1
            first = self._pending == 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, daemon=True,
                                                name="graftlab-try-client")
                self._thread.start()
        if first:
            self.busy_changed.emit(True)
        self._requests.put((cmd, fields))

    def _done_one(self) -> None:
        with self._lock:
            self._pending = max(0, self._pending - 1)
            idle = self._pending == 0
        if idle:
            self.busy_changed.emit(False)

    # ---- worker thread --------------------------------------------------------------------
    def _serve(self) -> None:
        signals = {"load": self.loaded, "attach": self.attached, "generate": self.generated,
                   "classify": self.classified}
        while (item := self._requests.get()) is not None:
            cmd, fields = item
            try:
                result = self.process.call(cmd, on_piece=self.piece.emit, **fields)
            except Exception as exc:  # shown as one sentence, or with its traceback
                exc.formatted_traceback = traceback.format_exc()  # type: ignore[attr-defined]
                self._drop_queued()  # what came after a failed load or attach cannot work
                self.failed.emit(exc)
            else:
                signals[cmd].emit(result)
            self._done_one()

    def _drop_queued(self) -> None:
        while True:
            try:
                item = self._requests.get_nowait()
            except queue.Empty:
                return
            if item is None:
                self._requests.put(None)
                return
            self._done_one()
