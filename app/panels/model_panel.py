"""Choose a model (folder, config.json, local Hugging Face cache, demo) and see what it is."""

from __future__ import annotations

from pathlib import Path

from graftlab.app.errors import ErrorLabel
from graftlab.app.numbers import compact, exact, size_bytes
from graftlab.core.config import QUANTIZATIONS, TASK_CHOICES, ModelConfig
from graftlab.core.model.demo import DEMO_MODELS
from graftlab.core.model.module_tree import ModuleTree
from graftlab.core.model.sources import CachedModel, ModelSource, list_cached_models
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QProgressBar,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

_WEIGHTS = {"safetensors": "yes (safetensors)", "pickle": "yes (.bin, pickle)",
            "none": "no (structure only: inspect, not train)"}


class CachedModelsDialog(QDialog):
    """The models in the local Hugging Face cache, with their size on disk."""

    def __init__(self, models: list[CachedModel], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models in the Hugging Face cache")
        self.table = QTableWidget(len(models), 3)
        self.table.setHorizontalHeaderLabels(["Model", "Size", "Config"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for row, m in enumerate(models):
            self.table.setItem(row, 0, QTableWidgetItem(m.repo_id))
            size = QTableWidgetItem(size_bytes(m.size_bytes))
            size.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(row, 1, size)
            self.table.setItem(row, 2, QTableWidgetItem("yes" if m.has_config else "missing"))
        self.table.doubleClicked.connect(self.accept)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        if not models:
            layout.addWidget(QLabel("The Hugging Face cache holds no models yet. Download one "
                                    "with `hf download <id>` or open a local folder."))
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(560, 360)
        self._models = models

    def chosen(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self._models[rows[0].row()].repo_id if rows else None


class ModelPanel(QWidget):
    """Source field + open buttons + facts about the loaded model."""

    open_requested = Signal(str)
    """The user chose a model source (spec); the window loads it in the background."""
    quantization_changed = Signal(str)
    """The user picked another `model.quantization` (the structure stays; the estimate
    follows)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.last_dir = ""
        self._extra = ModelConfig()  # fields without a widget, kept for an exact round trip
        self.source_edit = QLineEdit(placeholderText="Model folder, config.json, hub id or "
                                                     "demo:tiny-llama")
        self.source_edit.setToolTip("Press Enter to open what you typed")
        self.source_edit.returnPressed.connect(self._on_source_entered)
        self.open_button = QToolButton(text="Open")
        self.open_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.open_menu = QMenu(self.open_button)
        self.open_button.setMenu(self.open_menu)
        self.open_menu.addAction("Model folder…", self.browse_folder)
        self.open_menu.addAction("config.json (structure only)…", self.browse_config)
        self.open_menu.addAction("From the Hugging Face cache…", self.browse_cache)
        demos = self.open_menu.addMenu("Demo model")
        for name, spec in DEMO_MODELS.items():
            demos.addAction(f"{name}: {spec['description']}",
                            lambda n=name: self.open_requested.emit(f"demo:{n}"))
        self.recent_menu = self.open_menu.addMenu("Recent models")
        self.recent_menu.setEnabled(False)

        self.task_combo = QComboBox()
        self.task_combo.addItems(TASK_CHOICES)
        self.task_combo.setToolTip("auto: from the config's architecture")
        self.task_combo.activated.connect(self._on_options_changed)
        self.quant_combo = QComboBox()
        self.quant_combo.addItems(QUANTIZATIONS)
        self.quant_combo.setToolTip(
            "Load the frozen base quantized with bitsandbytes: 4bit is QLoRA (NF4, double "
            "quantization; gradient checkpointing on by default), 8bit is LLM.int8. The "
            "adapter trains in full precision and loads on the unquantized base. Saves GPU "
            "memory; on a CPU it runs, slower, without saving memory.")
        self.quant_combo.currentTextChanged.connect(self.quantization_changed)
        self.trust_check = QCheckBox("Trust remote code")
        self.trust_check.setToolTip("Run Python code shipped with the model. Only for models "
                                    "whose authors you trust.")
        self.trust_check.toggled.connect(self._on_options_changed)
        self.trust_warning = QLabel("Remote code is on: Python files shipped with this model "
                                    "will run on this machine with your permissions.")
        self.trust_warning.setWordWrap(True)
        self.trust_warning.setStyleSheet("color: #b35c00; font-weight: bold;")
        self.trust_warning.setVisible(False)
        self.trust_check.toggled.connect(self._on_trust_toggled)

        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumHeight(10)
        self.busy.setTextVisible(False)
        self.busy.hide()
        self.error_label = ErrorLabel()

        self.type_label = QLabel("–")
        self.params_label = QLabel("–")
        self.dtype_label = QLabel("–")
        self.weights_label = QLabel("–")
        self.layers_label = QLabel("–")
        for label in (self.type_label, self.params_label, self.dtype_label, self.weights_label,
                      self.layers_label):
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        top = QHBoxLayout()
        top.addWidget(self.source_edit, 1)
        top.addWidget(self.open_button)
        opts = QHBoxLayout()
        opts.addWidget(QLabel("Task"))
        opts.addWidget(self.task_combo)
        opts.addWidget(QLabel("Quantization"))
        opts.addWidget(self.quant_combo)
        opts.addWidget(self.trust_check)
        opts.addStretch(1)
        facts = QFormLayout()
        facts.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        facts.setHorizontalSpacing(12)
        facts.setVerticalSpacing(2)
        facts.addRow("Type", self.type_label)
        facts.addRow("Parameters", self.params_label)
        facts.addRow("Dtype", self.dtype_label)
        facts.addRow("Weights", self.weights_label)
        facts.addRow("Layers", self.layers_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addLayout(opts)
        layout.addWidget(self.trust_warning)
        layout.addWidget(self.busy)
        layout.addWidget(self.error_label)
        layout.addLayout(facts)

    # ---- values ---------------------------------------------------------------------------
    def values(self) -> ModelConfig:
        return ModelConfig(source=self.source_edit.text().strip(),
                           task=self.task_combo.currentText(),
                           trust_remote_code=self.trust_check.isChecked(),
                           allow_pickle_weights=self._extra.allow_pickle_weights,
                           num_labels=self._extra.num_labels,
                           quantization=self.quant_combo.currentText())

    def set_values(self, cfg: ModelConfig) -> None:
        self._extra = ModelConfig(**vars(cfg))
        self.source_edit.setText(cfg.source)
        self.trust_check.blockSignals(True)
        self.trust_check.setChecked(cfg.trust_remote_code)
        self.trust_check.blockSignals(False)
        self._on_trust_toggled(cfg.trust_remote_code)
        self.task_combo.setCurrentText(cfg.task)
        self.quant_combo.setCurrentText(cfg.quantization)

    @Slot(bool)
    def _on_trust_toggled(self, on: bool) -> None:
        self.trust_warning.setVisible(on)

    def set_recent(self, recent: list[str]) -> None:
        self.recent_menu.clear()
        for spec in recent:
            self.recent_menu.addAction(spec, lambda s=spec: self.open_requested.emit(s))
        self.recent_menu.setEnabled(bool(recent))

    # ---- display --------------------------------------------------------------------------
    def set_busy(self, busy: bool) -> None:
        self.busy.setVisible(busy)
        if busy:
            self.error_label.clear_message()
            for label in (self.type_label, self.params_label, self.dtype_label,
                          self.weights_label, self.layers_label):
                label.setText("loading…")

    def show_tree(self, tree: ModuleTree, source: ModelSource) -> None:
        self.set_busy(False)
        self.error_label.clear_message()
        self.type_label.setText(f"{tree.model_type} · {tree.task}")
        self.params_label.setText(f"{compact(tree.total_params)}  ({exact(tree.total_params)})")
        self.dtype_label.setText(tree.dtype)
        weights = _WEIGHTS.get(source.weights, source.weights)
        if source.is_demo:
            weights = "random weights — demo only"
        self.weights_label.setText(weights)
        self.layers_label.setText(f"{tree.num_layers} repeated blocks, "
                                  f"{len(tree.modules):,} modules")

    def show_error(self, message: str) -> None:
        self.set_busy(False)
        self.error_label.show_message(message)
        for label in (self.type_label, self.params_label, self.dtype_label, self.weights_label,
                      self.layers_label):
            label.setText("–")

    # ---- dialogs --------------------------------------------------------------------------
    @Slot()
    def browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a model folder", self.last_dir)
        if folder:
            self.last_dir = folder
            self.open_requested.emit(folder)

    @Slot()
    def browse_config(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a config.json", self.last_dir,
                                              "Model config (config.json *.json)")
        if path:
            self.last_dir = str(Path(path).parent)
            self.open_requested.emit(path)

    @Slot()
    def browse_cache(self) -> None:
        dialog = CachedModelsDialog(list_cached_models(), self)
        if dialog.exec() == QDialog.DialogCode.Accepted and dialog.chosen():
            self.open_requested.emit(dialog.chosen() or "")

    @Slot()
    def _on_source_entered(self) -> None:
        self.open_requested.emit(self.source_edit.text().strip())

    @Slot()
    def _on_options_changed(self, *_: object) -> None:
        if self.source_edit.text().strip():
            self.open_requested.emit(self.source_edit.text().strip())
