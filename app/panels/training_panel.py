"""Training settings (a form over graftlab.core.config.TrainingConfig), run controls and progress.

Tooltips are the TrainingConfig field docstrings, so the form and run.yaml explain each setting in
the same words. The run buttons follow the RunController's phase (`bind`); Pause and Resume go
straight to it, Start and Stop go to the window (Start needs the whole run, Stop asks first).

The device/precision label fills in once a probe in a short-lived child process has asked
torch what the machine has: the window's process never imports torch for it nor initialises
CUDA. The label uses the same rule as the training session (graftlab.core.train.device.decide).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from graftlab.core.config import (
    DEVICES,
    DISTRIBUTED,
    KERNELS,
    PACKING,
    PRECISIONS,
    SCHEDULERS,
    TrainingConfig,
)
from graftlab.core.errors import UserError
from graftlab.core.train.device import CPU_ONLY, Accelerator, decide
from graftlab.core.train.events import Event, Failed, Finished, Paused, Resumed, Started, Step
from graftlab.core.train.lifecycle import RunPhase
from PySide6.QtCore import QTimer, Signal, Slot
from PySide6.QtGui import QDoubleValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    from graftlab.app.run.run_controller import RunController

P = RunPhase
BASIC = ("max_steps", "epochs", "batch_size", "learning_rate", "scheduler", "device",
         "precision", "processes", "output_dir")
INT_MAX = 2_000_000_000
# gradient_checkpointing: unset (auto: on with a 4-bit base), true, false
CHECKPOINTING = {"auto": None, "on": True, "off": False}


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field (the convention core/config.py follows).

    Empty when the source is not available (a frozen build without .py files): the form then
    simply has no tooltips.
    """
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, node in zip(body, body[1:], strict=False):
        if (isinstance(prev, ast.AnnAssign) and isinstance(prev.target, ast.Name)
                and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            docs[prev.target.id] = inspect.cleandoc(str(node.value.value)).replace("``", "")
    return docs


def format_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def probe_accelerator() -> dict[str, Any]:
    """The machine's accelerator, asked in a short-lived child process (blocks: a worker
    thread calls it). Torch missing or broken: a CPU, and training will say why."""
    from graftlab.core.process.oneshot import call_in_child

    try:
        return call_in_child("probe", timeout_s=300)
    except Exception:  # noqa: BLE001 - the label falls back to CPU; a run reports the cause
        return CPU_ONLY.to_dict()


class TrainingPanel(QWidget):
    """The training section of run.yaml plus Start/Pause/Resume/Stop and a progress bar."""

    start_requested = Signal()
    stop_requested = Signal(bool)  # save the adapter
    accelerator_changed = Signal()  # the probe has answered (the memory estimate follows)
    _probed = Signal(object)  # the probe's answer, from its worker thread

    def __init__(self, parent: QWidget | None = None, probe: bool = True) -> None:
        super().__init__(parent)
        self._docs = field_docs(TrainingConfig)
        self._phase = P.IDLE
        self._total = 0
        self._accel: Accelerator | None = None
        self._probe_worker: Any = None
        self._probed.connect(self.set_accelerator)
        self.fields: dict[str, QWidget] = {}
        self._errors: dict[str, str] = {}

        basic, advanced = QFormLayout(), QFormLayout()
        for f in dataclasses.fields(TrainingConfig):
            editor = self._make_editor(f.name)
            editor.setToolTip(self._docs.get(f.name, ""))
            editor.setObjectName(f.name)
            self.fields[f.name] = editor
            label = QLabel(f.name.replace("_", " ").capitalize())
            label.setToolTip(self._docs.get(f.name, ""))
            row: QWidget = editor
            if f.name == "output_dir":
                row = QWidget()
                box = QHBoxLayout(row)
                box.setContentsMargins(0, 0, 0, 0)
                browse = QToolButton(text="…", toolTip="Choose the run folder")
                browse.clicked.connect(self._on_browse_clicked)
                box.addWidget(editor, 1)
                box.addWidget(browse)
            (basic if f.name in BASIC else advanced).addRow(label, row)
        self.advanced = QWidget()
        self.advanced.setLayout(advanced)
        self.advanced.setVisible(False)
        self.advanced_toggle = QToolButton(text="Advanced settings", checkable=True)
        self.advanced_toggle.setToolTip("Accumulation, warm-up, clipping, logging, checkpoints")
        self.advanced_toggle.toggled.connect(self.advanced.setVisible)

        self.device_label = QLabel("Device: detecting…")
        self.device_label.setToolTip("Where and in which precision the run will train")
        self.error_label = QLabel(wordWrap=True)
        self.error_label.setStyleSheet("color: #c0392b;")
        self.error_label.setVisible(False)

        self.start_button = QPushButton("Start", toolTip="Train with these settings (Ctrl+Return)")
        self.pause_button = QPushButton("Pause", toolTip="Pause after the current step; "
                                        "the model stays in memory")
        self.resume_button = QPushButton("Resume", toolTip="Continue the paused run")
        self.stop_button = QPushButton("Stop", toolTip="End after the current step; asks "
                                       "whether to save the adapter trained so far")
        self.start_button.clicked.connect(self.start_requested)
        self.stop_button.clicked.connect(self._on_stop_clicked)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.pause_button, self.resume_button, self.stop_button):
            buttons.addWidget(b)

        self.progress = QProgressBar(minimum=0, maximum=1, value=0, textVisible=True)
        self.progress.setFormat("%v / %m steps")
        self.eta_label = QLabel("")

        layout = QVBoxLayout(self)
        layout.addLayout(basic)
        layout.addWidget(self.advanced_toggle)
        layout.addWidget(self.advanced)
        layout.addWidget(self.device_label)
        layout.addWidget(self.error_label)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.eta_label)
        layout.addStretch(1)

        for name in ("device", "precision"):
            self.fields[name].currentTextChanged.connect(self._update_device_label)
        self.set_values(TrainingConfig())
        self.show_phase(P.IDLE)
        if probe:
            # After the window has painted: the probe's child imports torch (~2.5 s of CPU),
            # which competes with the GUI thread for the cores during start-up.
            QTimer.singleShot(1500, self, self._start_probe)

    # ---- form ---------------------------------------------------------------------------------
    def _make_editor(self, name: str) -> QWidget:
        default = getattr(TrainingConfig(), name)
        choices = {"scheduler": SCHEDULERS, "device": DEVICES, "precision": PRECISIONS,
                   "packing": PACKING, "chunked_loss": PACKING, "distributed": DISTRIBUTED,
                   "kernels": KERNELS, "gradient_checkpointing": tuple(CHECKPOINTING)}
        if name in choices:
            combo = QComboBox()
            combo.addItems(list(choices[name]))
            return combo
        if name == "sample_prompts":  # one prompt per line (report_to: "a, b" in a line edit)
            edit = QPlainTextEdit()
            edit.setPlaceholderText("one per line")
            edit.setFixedHeight(3 * edit.fontMetrics().lineSpacing() + 12)
            return edit
        if isinstance(default, bool):
            return QCheckBox()
        if isinstance(default, int):
            spin = QSpinBox(maximum=INT_MAX)
            if name == "max_steps":
                spin.setMinimum(-1)
                spin.setSpecialValueText("by epochs")  # -1: train for `epochs` instead
            elif name in ("batch_size", "gradient_accumulation", "logging_steps",
                          "checkpoint_limit", "processes"):
                spin.setMinimum(1)
            if name == "processes":  # above 1: the window starts torchrun (one rank per GPU)
                spin.setMaximum(256)
            if name in ("eval_steps", "checkpoint_every"):
                spin.setSpecialValueText("off" if name == "checkpoint_every" else "at end")
            return spin
        if name == "learning_rate":  # 2e-4 needs scientific notation, which spin boxes lack
            edit = QLineEdit()
            validator = QDoubleValidator(0.0, 1.0, 12, edit)
            validator.setNotation(QDoubleValidator.Notation.ScientificNotation)
            edit.setValidator(validator)
            return edit
        if isinstance(default, float):
            spin = QDoubleSpinBox(maximum=1e6, decimals=4, singleStep=0.1)
            if name == "epochs":
                spin.setMinimum(0.01)
                spin.setDecimals(2)
            return spin
        return QLineEdit()

    def values(self) -> TrainingConfig:
        """The form as a TrainingConfig (core validates ranges when the run starts)."""
        kwargs: dict[str, Any] = {}
        for name, w in self.fields.items():
            if name == "gradient_checkpointing":
                kwargs[name] = CHECKPOINTING[w.currentText()]
            elif isinstance(w, QComboBox):
                kwargs[name] = w.currentText()
            elif isinstance(w, QCheckBox):
                kwargs[name] = w.isChecked()
            elif isinstance(w, QSpinBox | QDoubleSpinBox):
                kwargs[name] = w.value()
            elif isinstance(w, QPlainTextEdit):
                kwargs[name] = [line for line in w.toPlainText().splitlines() if line.strip()]
            elif name == "learning_rate":
                try:
                    kwargs[name] = float(w.text())
                except ValueError:
                    kwargs[name] = math.nan  # core's validation names the field
            elif isinstance(getattr(TrainingConfig(), name), list):  # report_to: "a, b"
                kwargs[name] = [p.strip() for p in w.text().split(",") if p.strip()]
            else:
                kwargs[name] = w.text()
        return TrainingConfig(**kwargs)

    def set_values(self, cfg: TrainingConfig) -> None:
        for name, w in self.fields.items():
            value = getattr(cfg, name)
            if name == "gradient_checkpointing":
                value = next(k for k, v in CHECKPOINTING.items() if v is value)
            if isinstance(w, QComboBox):
                w.setCurrentText(str(value))
            elif isinstance(w, QCheckBox):
                w.setChecked(bool(value))
            elif isinstance(w, QSpinBox | QDoubleSpinBox):
                w.setValue(value)
            elif isinstance(w, QPlainTextEdit):
                w.setPlainText("\n".join(value))
            elif name == "learning_rate":
                w.setText(f"{value:g}")
            elif isinstance(value, list):
                w.setText(", ".join(value))
            else:
                w.setText(str(value))
        self.clear_error()

    def show_error(self, field: str | None, message: str) -> bool:
        """Show a core UserError next to its field; False when the field is not on this form."""
        name = (field or "").removeprefix("training.")
        if name not in self.fields:
            return False
        widget = self.fields[name]
        if name not in BASIC:
            self.advanced_toggle.setChecked(True)
        widget.setStyleSheet("border: 1px solid #c0392b;")
        widget.setFocus()
        self.error_label.setText(message)
        self.error_label.setVisible(True)
        self._errors[name] = message
        return True

    def clear_error(self) -> None:
        for name in self._errors:
            self.fields[name].setStyleSheet("")
        self._errors.clear()
        self.error_label.clear()
        self.error_label.setVisible(False)

    @Slot()
    def _on_browse_clicked(self) -> None:
        edit = self.fields["output_dir"]
        folder = QFileDialog.getExistingDirectory(self, "Run folder", edit.text())
        if folder:
            edit.setText(folder)

    def add_preflight(self, widget: QWidget) -> None:
        """Show `widget` (memory estimate, compatibility warnings) just above the run buttons."""
        layout = self.layout()
        layout.insertWidget(layout.indexOf(self.error_label) + 1, widget)

    # ---- run controls -------------------------------------------------------------------------
    def bind(self, controller: RunController) -> None:
        """Follow `controller`'s run: buttons from its phase, progress from its events."""
        self.pause_button.clicked.connect(controller.pause)
        self.resume_button.clicked.connect(controller.resume)
        controller.phase_changed.connect(self.show_phase)
        controller.events.connect(self.append_events)
        self.show_phase(controller.phase())

    def state(self) -> RunPhase:
        """The phase the buttons show (a RunPhase, equal to its name: "idle", "paused"...)."""
        return self._phase

    @Slot(object)
    def show_phase(self, phase: RunPhase | str) -> None:
        """idle: editable, Start; starting/running: Pause/Stop; pausing/paused: Resume/Stop;
        stopping: waiting (Stop offers to end the process); finished/failed: all off."""
        phase = RunPhase(phase)  # ValueError for a name that is not a phase
        self._phase = phase
        self.start_button.setEnabled(phase is P.IDLE)
        self.pause_button.setEnabled(phase in (P.STARTING, P.RUNNING))
        self.resume_button.setEnabled(phase in (P.PAUSING, P.PAUSED))
        # While stopping, the button offers to end a run that does not stop (it asks first).
        self.stop_button.setEnabled(phase in (P.STARTING, P.RUNNING, P.PAUSING, P.PAUSED,
                                              P.STOPPING))
        self.stop_button.setText("End now…" if phase is P.STOPPING else "Stop")
        for w in self.fields.values():
            w.setEnabled(phase is P.IDLE)
        if phase is P.IDLE:
            self.eta_label.setText("")

    @Slot()
    def _on_stop_clicked(self) -> None:
        self.stop_requested.emit(True)

    def set_progress(self, step: int, total: int, eta_s: float | None) -> None:
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(min(max(step, 0), max(total, 1)))
        self.eta_label.setText(f"Step {step} of {total} · ETA {format_eta(eta_s)}")

    @Slot(object)
    def append_events(self, batch: Iterable[Event]) -> None:
        """Progress, ETA and the actual device from a batch of run events."""
        last_step: Step | None = None
        for ev in batch:
            if isinstance(ev, Started):
                self._total = ev.total_steps
                self.set_progress(ev.start_step, ev.total_steps, None)
                self.device_label.setText(f"Training on {ev.device.upper()} · {ev.precision}")
            elif isinstance(ev, Step):
                last_step = ev
            elif isinstance(ev, Paused):
                self.eta_label.setText(f"Paused at step {ev.step}")
            elif isinstance(ev, Resumed):
                self.eta_label.setText(f"Resumed at step {ev.step}")
            elif isinstance(ev, Finished):
                total = self._total or ev.step
                self.set_progress(ev.step, total, 0.0)
                how = "Stopped" if ev.stopped_early else "Finished"
                self.eta_label.setText(f"{how} at step {ev.step} after "
                                       f"{format_eta(ev.elapsed_s)}")
            elif isinstance(ev, Failed):
                self.eta_label.setText("Failed: see the log")
        if last_step is not None:
            self.set_progress(last_step.step, self._total or last_step.step,
                              last_step.eta_s)

    # ---- device label -------------------------------------------------------------------------
    def _start_probe(self) -> None:
        from superqt.utils import create_worker

        # signal to signal: the answer is queued to the GUI thread, and dropped if the panel
        # has been deleted meanwhile
        self._probe_worker = create_worker(probe_accelerator, _start_thread=False,
                                           _ignore_errors=True)
        self._probe_worker.returned.connect(self._probed)
        self._probe_worker.start()

    @Slot(object)
    def set_accelerator(self, info: Accelerator | dict[str, Any]) -> None:
        self._accel = info if isinstance(info, Accelerator) else Accelerator.from_dict(info)
        self._update_device_label()
        self.accelerator_changed.emit()

    def accelerator(self) -> Accelerator | None:
        """What the probe found; None until it has answered."""
        return self._accel

    def resolved_device(self) -> tuple[str, str] | None:
        """(device, precision) the run will use, by the session's own rule; None until the
        probe has answered, and for `device: cuda` on a machine without CUDA."""
        if self._accel is None:
            return None
        try:
            choice = decide(self.fields["device"].currentText(),
                            self.fields["precision"].currentText(), self._accel)
        except UserError:
            return None
        return choice.device, choice.precision

    @Slot()
    def _update_device_label(self) -> None:
        if self._accel is None:
            return
        resolved = self.resolved_device()
        if resolved is None:
            self.device_label.setText("No CUDA GPU found: set device to auto or cpu")
            return
        device, prec = resolved
        name = self._accel.name if device == "cuda" else ""
        self.device_label.setText(f"Will train on {device.upper()}"
                                  f"{f' ({name})' if name else ''} · {prec}")
