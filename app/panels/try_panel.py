"""The Try tab: did the fine-tune help? The base model and its adapters side by side.

The base is loaded once in the Try process (never in the window's process) and any number of
adapters are attached to it: the current run's, any run folder, any adapter folder. Each
column shows one side, the base (with every adapter disabled) or one adapter; switching a
column to another adapter does not reload the base. Causal LMs stream their answer token by
token (Stop or Esc ends it); classifiers show label probabilities as bars.

Ctrl+Enter generates, Esc stops.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from graftlab.app.errors import ErrorLabel, show_dialog
from graftlab.app.panels.try_widgets import DecodeForm, OutputColumn, PromptEdit, is_submit
from graftlab.app.run.try_client import TryClient
from graftlab.core.adapter.targets import BASE, read_target
from graftlab.core.config import ModelConfig
from graftlab.core.errors import UserError
from PySide6.QtCore import QEvent, Qt, Slot
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

NONE = "(none)"


class TryPanel(QWidget):
    """The Try tab. `current_model()` gives the window's model settings and
    `current_run_dir()` the current run's folder (for "Add this run's adapter")."""

    def __init__(self, current_model: Callable[[], ModelConfig] | None = None,
                 current_run_dir: Callable[[], str] | None = None,
                 client: TryClient | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._current_model = current_model or ModelConfig
        self._current_run_dir = current_run_dir or (lambda: "")
        self.client = client or TryClient(self)
        self.info: dict[str, Any] | None = None
        self._requested_base: str | None = None  # a load asked for, answered or not
        self.last_result: dict[str, Any] | None = None
        self.last_dir = ""
        self._build()
        self._connect()
        self._show_task(None)

    # ---- construction ---------------------------------------------------------------------
    def _build(self) -> None:
        self.base_edit = QLineEdit(placeholderText="model folder, cached id or demo:tiny-llama")
        self.use_window_button = QPushButton("Use the window's model")
        self.load_button = QPushButton("Load base")
        self.load_button.setToolTip("Load the base model once, in the Try process")
        self.add_run_button = QPushButton("Add this run's adapter")
        self.add_run_button.setToolTip("Attach the adapter of the run folder set in the "
                                       "Training tab (its base is loaded first if needed)")
        self.add_folder_button = QPushButton("Add adapter or run folder…")
        self.left_combo, self.right_combo = QComboBox(), QComboBox()
        for combo in (self.left_combo, self.right_combo):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.status_label = QLabel("Load a base model, then add adapters to compare.")
        self.status_label.setWordWrap(True)
        self.error_label = ErrorLabel()
        self.chat_check = QCheckBox("Chat (the model's chat template)")
        self.system_edit = QLineEdit(placeholderText="System turn (optional)")
        self.prompt_edit = PromptEdit()
        self.prompt_edit.setPlaceholderText("Prompt: the text to continue (Ctrl+Enter "
                                            "generates)")
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Generate on both columns (Ctrl+Enter)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current token (Esc)")
        self.stop_button.setEnabled(False)
        self.decode_form = DecodeForm()
        self.columns = [OutputColumn(), OutputColumn()]

        top = QHBoxLayout()
        top.addWidget(QLabel("Base"))
        top.addWidget(self.base_edit, 1)
        top.addWidget(self.use_window_button)
        top.addWidget(self.load_button)
        adapters = QHBoxLayout()
        adapters.addWidget(self.add_run_button)
        adapters.addWidget(self.add_folder_button)
        adapters.addStretch(1)
        adapters.addWidget(QLabel("Left"))
        adapters.addWidget(self.left_combo)
        adapters.addWidget(QLabel("Right"))
        adapters.addWidget(self.right_combo)
        chat = QHBoxLayout()
        chat.addWidget(self.chat_check)
        chat.addWidget(self.system_edit, 1)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.generate_button)
        prompt_box = QVBoxLayout()
        prompt_box.addLayout(chat)
        prompt_box.addWidget(self.prompt_edit, 1)
        prompt_box.addLayout(buttons)
        middle = QHBoxLayout()
        middle.addLayout(prompt_box, 1)
        middle.addWidget(self.decode_form)
        self.output_split = QSplitter(Qt.Orientation.Horizontal)
        for column in self.columns:
            self.output_split.addWidget(column)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(adapters)
        layout.addWidget(self.status_label)
        layout.addWidget(self.error_label)
        layout.addLayout(middle, 2)
        layout.addWidget(self.output_split, 3)

    def _connect(self) -> None:
        self.use_window_button.clicked.connect(self._on_use_window_clicked)
        self.load_button.clicked.connect(self._on_load_clicked)
        self.base_edit.returnPressed.connect(self._on_load_clicked)
        self.add_run_button.clicked.connect(self.add_run_adapter)
        self.add_folder_button.clicked.connect(self._on_add_folder_clicked)
        self.generate_button.clicked.connect(self.generate)
        self.stop_button.clicked.connect(self.stop)
        self.chat_check.toggled.connect(self.system_edit.setEnabled)
        self.left_combo.currentIndexChanged.connect(self._on_sides_changed)
        self.right_combo.currentIndexChanged.connect(self._on_sides_changed)
        self.client.loaded.connect(self._on_loaded)
        self.client.attached.connect(self._on_attached)
        self.client.piece.connect(self._on_piece)
        self.client.generated.connect(self._on_generated)
        self.client.classified.connect(self._on_classified)
        self.client.failed.connect(self._on_failed)
        self.client.busy_changed.connect(self._on_busy_changed)

    # ---- keys: Ctrl+Enter generates and Esc stops while the tab has the focus -------------
    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ShortcutOverride and isinstance(event, QKeyEvent) and (
                is_submit(event) or event.key() == Qt.Key.Key_Escape):
            event.accept()  # ours here, not the window's Start training (also Ctrl+Enter)
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        if is_submit(event):
            self.generate()
        elif event.key() == Qt.Key.Key_Escape:
            self.stop()
        else:
            super().keyPressEvent(event)

    # ---- actions ----------------------------------------------------------------------------
    def load_base(self, spec: str, task: str = "auto", num_labels: int | None = None,
                  label_names: list[str] | None = None) -> None:
        """Load `spec` as the base (dropping the attached adapters)."""
        self.error_label.clear_message()
        if not spec.strip():
            self.error_label.show_message("No base model given; type a model folder or "
                                          "demo:tiny-llama, or add a run folder.")
            return
        self.base_edit.setText(spec)
        self._requested_base, self.info = spec, None  # adapters go with the old base
        self.status_label.setText(f"Loading {spec} in the Try process…")
        trust = self._current_model().trust_remote_code
        self.client.load(spec, task, num_labels, label_names, trust)

    def add_folder(self, folder: str) -> None:
        """Attach a run's or an adapter folder's adapter; load its base first when nothing
        (or a model) is loaded. A model folder becomes the base."""
        self.error_label.clear_message()
        try:
            target = read_target(folder)
        except UserError as exc:
            self.error_label.show_message(exc.message)
            return
        if target.adapter_dir is None:
            self.load_base(target.base)
            return
        if self._requested_base is None:
            self.load_base(target.base, target.task, target.num_labels,
                           list(target.label_names or []) or None)
        self.status_label.setText(f"Attaching {target.adapter_dir}…")
        self.client.attach(str(target.adapter_dir))

    @Slot()
    def add_run_adapter(self) -> None:
        run_dir = self._current_run_dir()
        if not run_dir or not (Path(run_dir) / "adapter").is_dir():
            self.error_label.show_message(
                f"the run folder {run_dir or '(none)'} has no adapter yet; train the run "
                "first, or add an adapter folder.")
            return
        self.add_folder(run_dir)

    def sides(self) -> list[str]:
        """The sides the columns show, left first, without repeats."""
        out = [self.left_combo.currentText() or BASE]
        right = self.right_combo.currentText()
        if right and right != NONE and right not in out:
            out.append(right)
        return out

    @Slot()
    def generate(self) -> None:
        if self.client.is_busy():
            return
        self.error_label.clear_message()
        if self.info is None:
            self.error_label.show_message("No base model is loaded; press Load base first.")
            return
        prompt = self.prompt_edit.toPlainText()
        if not prompt.strip():
            self.error_label.show_message("The prompt is empty; type something for the "
                                          "model to continue.")
            return
        self._on_sides_changed()
        for column in self.columns:
            column.clear()
        if self.is_classifier():
            self.client.classify(prompt, self.sides())
        else:
            chat = self.chat_check.isChecked() and self.chat_check.isVisible()
            self.client.generate(prompt, self.sides(), self.decode_form.options(),
                                 self.system_edit.text() or None, chat)

    @Slot()
    def stop(self) -> None:
        self.client.stop()

    def is_classifier(self) -> bool:
        return bool(self.info) and self.info["task"] == "sequence-classification"

    def shutdown(self) -> None:
        """End the Try process (closing the window)."""
        self.client.shutdown()

    # ---- slots ------------------------------------------------------------------------------
    @Slot()
    def _on_use_window_clicked(self) -> None:
        self.base_edit.setText(self._current_model().source)

    @Slot()
    def _on_load_clicked(self) -> None:
        spec = self.base_edit.text().strip()
        model = self._current_model()
        task = model.task if spec == model.source else "auto"
        self.load_base(spec, task, model.num_labels if spec == model.source else None)

    @Slot()
    def _on_add_folder_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Adapter or run folder", self.last_dir)
        if folder:
            self.last_dir = str(Path(folder).parent)
            self.add_folder(folder)

    @Slot(object)
    def _on_loaded(self, info: dict[str, Any]) -> None:
        self.info = info
        self._fill_combos()
        self._show_task(info)
        self.status_label.setText(self._status_text(f"loaded in {info['load_s']:.2f} s"))

    @Slot(object)
    def _on_attached(self, info: dict[str, Any]) -> None:
        self.info = info
        self._fill_combos(right=info["name"])
        self.status_label.setText(self._status_text(
            f"attached {info['name']} in {info['attach_s']:.2f} s"))

    def _status_text(self, what: str) -> str:
        assert self.info is not None
        names = ", ".join(self.info["adapters"]) or "none yet"
        return (f"{self.info['base']} ({self.info['task']}), {what}. Adapters: {names}. The "
                "base column runs with every adapter disabled.")

    def _fill_combos(self, right: str | None = None) -> None:
        assert self.info is not None
        names = [BASE, *self.info["adapters"]]
        left = self.left_combo.currentText() if self.left_combo.currentText() in names else BASE
        keep_right = self.right_combo.currentText()
        right = right or (keep_right if keep_right in names else NONE)
        for combo, items, value in ((self.left_combo, names, left),
                                    (self.right_combo, [NONE, *names], right)):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(items)
            combo.setCurrentText(value)
            combo.blockSignals(False)
        self._on_sides_changed()

    def _show_task(self, info: dict[str, Any] | None) -> None:
        classifier = bool(info) and info["task"] == "sequence-classification"
        chat = bool(info) and bool(info["chat_template"]) and not classifier
        self.chat_check.setVisible(chat)
        self.system_edit.setVisible(chat)
        self.system_edit.setEnabled(self.chat_check.isChecked())
        self.decode_form.setVisible(not classifier)
        self.generate_button.setText("Classify" if classifier else "Generate")
        self.prompt_edit.setPlaceholderText(
            "Text to classify (Ctrl+Enter)" if classifier
            else "Prompt: the text to continue (Ctrl+Enter generates)")
        for column in self.columns:
            column.set_classifier(classifier)

    @Slot()
    def _on_sides_changed(self, *_args: Any) -> None:
        sides = self.sides()
        for i, column in enumerate(self.columns):
            side = sides[i] if i < len(sides) else None
            heading = "Base (adapters disabled)" if side == BASE else f"Adapter: {side}"
            column.set_side(side, heading)

    @Slot(str, str)
    def _on_piece(self, side: str, piece: str) -> None:
        for column in self.columns:
            if column.side == side:
                column.append(piece)

    @Slot(object)
    def _on_generated(self, result: dict[str, Any]) -> None:
        self.last_result = result
        for column in self.columns:
            side = column.side
            if side in result["texts"]:
                n, s = result["tokens"][side], result["seconds"][side]
                column.footer.setText(f"{n} tokens in {s:.2f} s ({n / max(s, 1e-9):.0f} "
                                      "tokens/s)")
        if result["stopped"]:
            self.status_label.setText("Stopped.")

    @Slot(object)
    def _on_classified(self, result: dict[str, Any]) -> None:
        self.last_result = result
        for column in self.columns:
            if column.side in result["probs"]:
                column.bars.show_probs([(n, p) for n, p in result["probs"][column.side]])

    @Slot(object)
    def _on_failed(self, exc: BaseException) -> None:
        if isinstance(exc, UserError):
            self.error_label.show_message(exc.message)
        else:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self.error_label.show_message(f"The Try process failed: {first}")
            show_dialog(self, exc, getattr(exc, "formatted_traceback", None))
        if self.info is None:
            self._requested_base = None  # the load failed: the next folder loads its base
            self.status_label.setText("Nothing loaded.")

    @Slot(bool)
    def _on_busy_changed(self, busy: bool) -> None:
        self.stop_button.setEnabled(busy)
        for w in (self.generate_button, self.load_button, self.add_run_button,
                  self.add_folder_button):
            w.setEnabled(not busy)
