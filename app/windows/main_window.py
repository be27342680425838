"""The main window: model and layer tree on the left; adapter, data, training and the live
monitor on the right; status bar, drag and drop, settings, close.

Around it: graftlab.app.windows.actions builds the actions, shortcuts, menus and toolbar;
graftlab.app.windows.run_files opens, saves and resumes runs (the RunFiles mixin);
graftlab.app.windows.adapter_folders exports adapters and opens the inspector (the AdapterFolders
mixin); graftlab.app.windows.drops decides what a drop is.

Everything the window does is a RunConfig plus calls into core. Slots that call core go through
`reports_errors`, so a bad input shows the core's one sentence next to its field (or in a
dialog) and an internal bug shows its traceback; the window stays usable either way.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

from graftlab.app.dialogs.resume_dialog import ResumeDialog
from graftlab.app.dialogs.stop_dialog import CANCEL, SAVE, ask_end_now, ask_stop_choice
from graftlab.app.errors import ErrorLabel, reports_errors, show_dialog
from graftlab.app.numbers import compact, duration, exact, percent
from graftlab.app.panels.adapter_panel import AdapterPanel
from graftlab.app.panels.data_panel import DataPanel
from graftlab.app.panels.heatmap_panel import HeatmapPanel
from graftlab.app.panels.layer_tree import LayerTreeWidget
from graftlab.app.panels.log_view import LogView
from graftlab.app.panels.memory_panel import MemoryInputs, MemoryPanel
from graftlab.app.panels.model_panel import ModelPanel
from graftlab.app.panels.training_panel import TrainingPanel
from graftlab.app.plots.metric_plots import MetricPlots
from graftlab.app.run.background import BackgroundJobs
from graftlab.app.run.run_state import AdapterState, RunState, adapter_config, adapter_state
from graftlab.app.run.worker import TrainingRunner
from graftlab.app.settings import AppSettings
from graftlab.app.windows.actions import install_actions
from graftlab.app.windows.adapter_folders import AdapterFolders
from graftlab.app.windows.drops import accept_local_files, drop_kind, dropped_paths
from graftlab.app.windows.inspector_window import InspectorWindow
from graftlab.app.windows.run_files import DEFAULT_PRESET, RunFiles
from graftlab.core.adapter.plan import AdapterPlan, plan_adapter
from graftlab.core.config import AdapterConfig, RunConfig, validate
from graftlab.core.errors import UserError
from graftlab.core.model.module_tree import ModuleTree, build_tree
from graftlab.core.model.sources import ModelSource, resolve_source
from graftlab.core.train.events import Failed, Finished, Paused, Resumed, Started, Step
from PySide6.QtCore import QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QResizeEvent
from PySide6.QtWidgets import (
    QGroupBox,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
)


def _load_model(spec: str, task: str, trust: bool,
                num_labels: int | None) -> tuple[ModelSource, ModuleTree]:
    from graftlab.core.model.shape_tree import quick_tree

    source = resolve_source(spec, trust)
    # Llama-family configs: the tree from config.json alone, without importing torch (0.2 s
    # instead of ~8 s on a cold start); everything else builds the meta-device skeleton.
    quick = quick_tree(spec, task, trust) if num_labels is None else None
    return source, quick or build_tree(source, task, trust, num_labels)


# Greying out the panels at Start repaints most of the window (~40 ms offscreen). It happens
# this long after Start, so it is not in the same frame as the monitor tab's first paint.
PANEL_LOCK_DELAY_MS = 20


class MainWindow(RunFiles, AdapterFolders, QMainWindow):
    # made by graftlab.app.windows.actions.install_actions, each wired to one of the slots below
    open_model_action: QAction
    open_config_action: QAction
    open_cache_action: QAction
    open_run_action: QAction
    save_run_action: QAction
    save_run_as_action: QAction
    copy_cmd_action: QAction
    export_action: QAction
    export_current_action: QAction
    resume_run_action: QAction
    quit_action: QAction
    start_action: QAction
    pause_action: QAction
    stop_action: QAction
    filter_action: QAction
    inspect_action: QAction
    compare_action: QAction
    preset_actions: dict[str, QAction]  # by preset key: attention, mlp, all-linear, none
    recent_menu: QMenu

    def __init__(self, settings: QSettings | None = None, open_demo: bool = True,
                 probe_device: bool = True) -> None:
        super().__init__()
        self.setObjectName("MainWindow")
        self.setWindowTitle("Graftlab")
        self.setAcceptDrops(True)
        self.settings = AppSettings(settings)
        self.jobs = BackgroundJobs(self)
        self.runner = TrainingRunner(self)
        self.tree: ModuleTree | None = None
        self.source: ModelSource | None = None
        self.plan: AdapterPlan | None = None
        self.run_path: Path | None = None
        self.last_error: str | None = None
        self.last_adapter_dir: str | None = None
        self._loading_spec: str | None = None
        self._pending_adapter: AdapterConfig | None = None
        self._pending_preset: str | None = None
        self._close_after_run = False
        self._run_total = 0
        self._kinds: list[str] = []
        self.stop_chooser = ask_stop_choice  # (window) -> save/discard/cancel; tests replace it
        self.end_chooser = ask_end_now  # (window) -> kill a run that is still stopping?
        self.resume_dialog: ResumeDialog | None = None
        self.last_snapshot: list[tuple[Path, int]] = []  # files of the last "export current"
        self._live_run_dir: str | None = None
        self._paused_step = 0
        # The plots' first paint, done while idle (again once a resize has settled); created
        # before the widgets, whose construction already sends resize events.
        self._warm_timer = QTimer(self)
        self._warm_timer.setSingleShot(True)
        self._warm_timer.setInterval(1500)
        self._warm_timer.timeout.connect(self._warm_monitor)

        self._build_panels(probe_device)
        self._build_layout()
        install_actions(self)
        self._build_status_bar()
        self._connect()
        self._restore_window()
        self.model_panel.set_recent(self.settings.recent_models())
        if open_demo:
            QTimer.singleShot(0, self._open_initial_run)
        # A training process with torch imported, ready for Start (GRAFTLAB_PRESTART=0: none)
        QTimer.singleShot(4000, self.runner.keep_spare_process)
        self._warm_timer.start()

    @Slot()
    def _warm_monitor(self) -> None:
        """Lay out and paint the hidden monitor tab at the size it will have, so pressing
        Start does not freeze the window while six plots draw their axes for the first time."""
        current = self.tabs.currentWidget()
        if current is self.monitor_split or not self.isVisible():
            return
        self.monitor_split.setGeometry(current.geometry())
        steps = self.training_panel.fields["max_steps"].value()
        if steps > 0 and self.plots.point_count("loss") == 0:  # a new run will span 0..steps
            self.plots.expect_steps(0, steps)
        self.plots.warm_up()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._warm_timer.start()  # restarted on every resize: fires once it has settled

    # ---- construction ---------------------------------------------------------------------
    def _build_panels(self, probe_device: bool) -> None:
        self.model_panel = ModelPanel()
        self.model_panel.last_dir = self.settings.last_dir("model")
        self.layer_tree = LayerTreeWidget()
        self.tree_model = self.layer_tree.model
        self.adapter_panel = AdapterPanel()
        self.data_panel = DataPanel(self.jobs)
        self.data_panel.last_dir = self.settings.last_dir("data")
        self.training_panel = TrainingPanel(probe=probe_device)
        self.plots = MetricPlots()
        self.log_view = LogView()
        self.tree_error = ErrorLabel()
        self.heatmap_panel = HeatmapPanel()
        self.memory_panel = MemoryPanel()
        self.inspector: InspectorWindow | None = None

    def _build_layout(self) -> None:
        model_box = QGroupBox("Model")
        QVBoxLayout(model_box).addWidget(self.model_panel)
        tree_box = QGroupBox("Layers: tick the modules that get adapters")
        tree_layout = QVBoxLayout(tree_box)
        tree_layout.addWidget(self.tree_error)
        tree_layout.addWidget(self.layer_tree)
        self.left_split = QSplitter(Qt.Orientation.Vertical)
        self.left_split.setObjectName("leftSplit")
        self.left_split.addWidget(model_box)
        self.left_split.addWidget(tree_box)
        self.left_split.setStretchFactor(0, 0)
        self.left_split.setStretchFactor(1, 1)
        self.left_split.setChildrenCollapsible(False)

        monitor = QSplitter(Qt.Orientation.Vertical)
        monitor.setObjectName("monitorSplit")
        monitor.addWidget(self.plots)
        monitor.addWidget(self.log_view)
        monitor.setStretchFactor(0, 4)
        monitor.setStretchFactor(1, 1)
        self.monitor_split = monitor
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.adapter_panel, "Adapter")
        self.tabs.addTab(self.data_panel, "Data")
        self.tabs.addTab(self.training_panel, "Training")
        self.tabs.addTab(monitor, "Monitor")
        self.tabs.addTab(self.heatmap_panel, "Heatmap")
        self.training_panel.add_preflight(self.memory_panel)

        self.main_split = QSplitter(Qt.Orientation.Horizontal)
        self.main_split.setObjectName("mainSplit")
        self.main_split.addWidget(self.left_split)
        self.main_split.addWidget(self.tabs)
        self.main_split.setStretchFactor(0, 11)
        self.main_split.setStretchFactor(1, 9)
        self.main_split.setChildrenCollapsible(False)
        self.setCentralWidget(self.main_split)
        self.resize(1440, 900)
        self.main_split.setSizes([840, 600])
        self.left_split.setSizes([190, 710])

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.busy_label = QLabel("")
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)
        self.busy_bar.setMaximumWidth(90)
        self.busy_bar.setMaximumHeight(12)
        self.busy_bar.setTextVisible(False)
        self.busy_bar.hide()
        self.trainable_status = QLabel("")
        self.run_progress = QProgressBar()
        self.run_progress.setMaximumWidth(220)
        self.run_progress.setMaximumHeight(14)
        self.run_progress.setFormat("step %v / %m")
        self.run_progress.hide()
        self.eta_label = QLabel("")
        bar.addPermanentWidget(self.busy_label)
        bar.addPermanentWidget(self.busy_bar)
        bar.addPermanentWidget(self.trainable_status)
        bar.addPermanentWidget(self.run_progress)
        bar.addPermanentWidget(self.eta_label)

    def _connect(self) -> None:
        self.jobs.busy_changed.connect(self._on_busy_changed)
        self.model_panel.open_requested.connect(self._on_open_requested)
        self.tree_model.selection_changed.connect(self._on_selection_changed)
        self.tree_model.error.connect(self._on_tree_error)
        self.layer_tree.status.connect(self._show_status)
        self.adapter_panel.settings_changed.connect(self._on_adapter_settings)
        self.training_panel.start_requested.connect(self.start_training)
        # a new step count: warm the plots again with the run's step axis (see _warm_monitor)
        self.training_panel.fields["max_steps"].valueChanged.connect(self._warm_timer.start)
        self.training_panel.pause_requested.connect(self.pause_training)
        self.training_panel.resume_requested.connect(self.resume_training)
        self.training_panel.stop_requested.connect(self._on_stop_requested)
        self.runner.events.connect(self.plots.append_events)
        self.runner.events.connect(self.log_view.append_events)
        self.runner.events.connect(self.training_panel.append_events)
        self.runner.events.connect(self._on_run_events)
        self.runner.failed.connect(self._on_run_failed)
        self.runner.finished.connect(self._on_run_finished)
        self.runner.events.connect(self._on_pause_events)
        self.runner.snapshot_saved.connect(self._on_snapshot_saved)
        self.runner.snapshot_failed.connect(self._on_snapshot_failed)
        # heatmap, memory estimate and compatibility follow the plan (after the recount above)
        self.tree_model.selection_changed.connect(self._on_plan_for_views)
        self.adapter_panel.settings_changed.connect(self._on_plan_for_views)
        self.runner.events.connect(self.heatmap_panel.append_events)
        self.heatmap_panel.attach_layer_tree(self.layer_tree)
        self.heatmap_panel.inspect_requested.connect(self.open_inspector)
        self.data_panel.changed.connect(self.memory_panel.schedule)
        fields = self.training_panel.fields
        fields["batch_size"].valueChanged.connect(self.memory_panel.schedule)
        fields["gradient_checkpointing"].toggled.connect(self.memory_panel.schedule)
        for name in ("precision", "device"):
            fields[name].currentTextChanged.connect(self.memory_panel.schedule)
        self.memory_panel.set_inputs(self._memory_inputs)

    # ---- errors ---------------------------------------------------------------------------
    def report_error(self, exc: BaseException, tb: str | None = None) -> None:
        """Show `exc`: a UserError next to its field (or in a dialog), a bug with traceback."""
        if not isinstance(exc, UserError):
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._show_status(f"Internal error: {self.last_error}")
            show_dialog(self, exc, tb)
            return
        self.last_error = exc.message
        self._show_status(exc.message)
        key = exc.field or ""
        if key.startswith("model."):
            self.model_panel.show_error(exc.message)
        elif key.startswith("adapter.targets") or key.startswith("adapter.overrides"):
            self.tree_error.show_message(exc.message)
        elif key.startswith("adapter."):
            self.adapter_panel.show_field_error(exc.message)
            self.tabs.setCurrentWidget(self.adapter_panel)
        elif key.startswith("data."):
            self.data_panel.show_field_error(exc.message)
            self.tabs.setCurrentWidget(self.data_panel)
        elif key.startswith("training."):
            self.training_panel.show_error(key.partition(".")[2], exc.message)
            self.tabs.setCurrentWidget(self.training_panel)
        elif key in ("filter", "layers"):
            self.layer_tree.filter_error.show_message(exc.message)
        else:
            show_dialog(self, exc)

    def _show_status(self, text: str, timeout_ms: int = 8000) -> None:
        self.statusBar().showMessage(text, timeout_ms)

    # ---- model ----------------------------------------------------------------------------
    @Slot(str)
    @reports_errors
    def _on_open_requested(self, spec: str) -> None:
        self.open_model(spec)

    def open_model(self, spec: str, keep_options: bool = True) -> None:
        """Resolve and build the module tree of `spec` in the background."""
        spec = spec.strip()
        if not spec:
            raise UserError("no model given; choose a model folder, a config.json, a cached "
                            "model or demo:tiny-llama.", field="model.source")
        options = self.model_panel.values()
        options.source = spec
        self.model_panel.set_values(options)
        if self.tree is not None and self._pending_adapter is None:
            # keep the selection if the new model has the same modules (task switch, reload)
            self._pending_adapter = adapter_config(self._adapter_state())
            self._pending_preset = DEFAULT_PRESET
        self._loading_spec = spec
        self.model_panel.set_busy(True)
        self.tree_error.clear_message()
        self._show_status(f"Loading the structure of {spec}…", 0)
        self.jobs.submit("model", lambda: _load_model(spec, options.task,
                                                      options.trust_remote_code,
                                                      options.num_labels),
                         self._on_model_loaded, self._on_model_failed)

    def is_loading(self) -> bool:
        return self.jobs.is_busy("model") or self.data_panel.is_loading()

    @reports_errors
    def _on_model_loaded(self, result: tuple[ModelSource, ModuleTree]) -> None:
        self.source, self.tree = result
        tree = self.tree
        self._kinds = tree.kinds()
        self._loading_spec = None
        self.layer_tree.set_tree(tree)
        self.model_panel.show_tree(tree, self.source)
        tokenizer = str(self.source.path) if self.source.kind != "config" else None
        self.data_panel.set_model(tokenizer, tree.task)
        self.model_panel.set_recent(self.settings.add_recent_model(self.source.spec))
        self._show_status(f"Opened {self.source.spec}: {tree.model_type}, "
                          f"{compact(tree.total_params)} parameters, "
                          f"{len(tree.modules):,} modules")
        pending, preset = self._pending_adapter, self._pending_preset
        self._pending_adapter = self._pending_preset = None
        if pending is not None and (pending.targets or preset is None):
            try:
                self.tree_model.apply_adapter_state(adapter_state(pending, tree))
                return
            except UserError as exc:
                if preset is None:  # from a run.yaml: say why the selection did not apply
                    self._pending_adapter = None
                    self.tree_model.apply_adapter_state(AdapterState(
                        *self.adapter_panel.valid_values()))
                    self.report_error(exc)
                    return
        if preset is not None:
            self.layer_tree.apply_preset(preset)
        else:
            self._on_selection_changed()

    def _on_model_failed(self, exc: BaseException, tb: str) -> None:
        self._loading_spec = None
        self.model_panel.set_busy(False)
        if self.tree is not None and self._pending_adapter is None:
            self._pending_adapter = adapter_config(self._adapter_state())
        self.tree = self.source = None
        self.layer_tree.set_tree(None)
        self.data_panel.set_model(None, "causal-lm")
        if isinstance(exc, UserError):
            exc.field = exc.field or "model.source"
        self.report_error(exc, tb)

    # ---- adapter and counts ---------------------------------------------------------------
    def _adapter_state(self) -> AdapterState:
        rank, alpha, dropout, variant = self.adapter_panel.values()
        return AdapterState(rank, alpha, dropout, variant, self.tree_model.selected_names(),
                            self.tree_model.overrides())

    @Slot()
    def _on_adapter_settings(self) -> None:
        rank, alpha, _, variant = self.adapter_panel.valid_values()
        self.tree_model.set_adapter(rank, alpha, variant)
        self._on_selection_changed()

    @Slot()
    def _on_selection_changed(self) -> None:
        """Recount with the core planner (a few ms even for a 70B tree: profiled)."""
        self.tree_error.clear_message()
        tree = self.tree
        if tree is None:
            self.plan = None
            self.adapter_panel.show_plan(None, 0, [], 0, "Open a model to see its counts.")
            self.trainable_status.setText("")
            return
        rank, alpha, dropout, variant = self.adapter_panel.valid_values()
        state = AdapterState(rank, alpha, dropout, variant, self.tree_model.selected_names(),
                             self.tree_model.overrides())
        self.plan, error = None, None
        if state.selected:
            try:
                self.plan = plan_adapter(tree, adapter_config(state), "layer tree")
            except UserError as exc:
                error = exc.message
                self.tree_error.show_message(exc.message)
        self.adapter_panel.show_plan(self.plan, tree.total_params, self._kinds,
                                     tree.num_layers, error)
        if self.plan is not None:
            self.trainable_status.setText(f"Trainable {exact(self.plan.trainable_params)} "
                                          f"({percent(self.plan.percent)})")
        else:
            self.trainable_status.setText("Nothing ticked")

    @Slot(object)
    def _on_tree_error(self, exc: UserError) -> None:
        self.report_error(exc)

    # ---- the run as the window shows it (run.yaml files: graftlab.app.windows.run_files) ----
    def run_config(self) -> RunConfig:
        """The run exactly as the GUI shows it."""
        if self.tree is None and self._pending_adapter is not None:
            adapter = copy.deepcopy(self._pending_adapter)
            adapter.rank, adapter.alpha, adapter.dropout, adapter.variant = (
                self.adapter_panel.values())
        else:
            adapter = adapter_config(self._adapter_state())
        return RunConfig(model=self.model_panel.values(), adapter=adapter,
                         data=self.data_panel.values(), training=self.training_panel.values())

    def run_state(self) -> RunState:
        return RunState(self.model_panel.values(), self._adapter_state(),
                        self.data_panel.values(), self.training_panel.values())

    def apply_run_config(self, cfg: RunConfig) -> None:
        """Show `cfg`; the model (re)loads in the background when it differs."""
        a = cfg.adapter
        self.adapter_panel.set_values(a.rank, a.alpha, a.dropout, a.variant)
        self.data_panel.set_values(cfg.data)
        self.training_panel.set_values(cfg.training)
        same_model = (self.tree is not None and self.source is not None
                      and self.model_panel.values() == cfg.model)
        self.model_panel.set_values(cfg.model)
        if same_model and self.tree is not None:
            self.tree_model.apply_adapter_state(adapter_state(a, self.tree))
        else:
            self._pending_adapter, self._pending_preset = copy.deepcopy(a), None
            self.tree = None
            self.open_model(cfg.model.source)

    # ---- training -------------------------------------------------------------------------
    @reports_errors
    def start_training(self) -> None:
        if self.runner.is_running():
            return
        if self.tree is None or self.source is None:
            raise UserError("open a model first (File > Open model folder, or a demo).",
                            field="model.source")
        self.adapter_panel.validate()
        cfg = self.run_config()
        validate(cfg, "run settings")
        plan_adapter(self.tree, cfg.adapter, "layer tree")
        from graftlab.core.model.loading import check_weights

        check_weights(self.source, cfg.model.allow_pickle_weights)  # the CLI's exact sentence
        self.plots.clear()
        self.log_view.add_line(f"Starting: {self.source.spec}, {len(cfg.adapter.targets):,} "
                               "modules with adapters")
        self.runner.start(cfg)
        self._set_running(True)
        self.training_panel.set_state("running")
        self.tabs.setCurrentWidget(self.monitor_split)
        self._show_status("Training started")

    @Slot()
    def toggle_pause(self) -> None:
        if not self.runner.is_running():
            return
        if self.training_panel.state() == "paused":
            self.resume_training()
        else:
            self.pause_training()

    @Slot()
    def pause_training(self) -> None:
        if self.runner.is_running():
            self.runner.pause()
            self.training_panel.set_state("paused")

    @Slot()
    def resume_training(self) -> None:
        if self.runner.is_running():
            self.runner.resume()
            self.training_panel.set_state("running")

    @Slot()
    def stop_training(self, save: bool = True) -> None:
        if self.runner.is_running():
            self.runner.stop(save)
            self.training_panel.set_state("stopping")
            self._show_status("Stopping after the current step…", 0)

    @Slot(bool)
    def _on_stop_requested(self, save: bool) -> None:
        self.ask_and_stop()

    def _set_running(self, running: bool) -> None:
        if running:  # greying the panels repaints most of the window: one frame after Start's
            QTimer.singleShot(PANEL_LOCK_DELAY_MS, self._lock_panels_while_running)
        else:
            self._lock_panels_while_running()
        for a in (self.open_model_action, self.open_config_action, self.open_cache_action,
                  self.open_run_action, self.start_action, self.resume_run_action):
            a.setEnabled(not running)
        self.export_current_action.setEnabled(running and self.runner.can_snapshot())
        for a in (self.pause_action, self.stop_action):
            a.setEnabled(running)
        self.run_progress.setVisible(running)
        if not running:
            self.eta_label.setText("")

    @Slot()
    def _lock_panels_while_running(self) -> None:
        """The model, tree, adapter and data panels are read-only while a run is in progress
        (Start and the open actions are disabled at once, by `_set_running`)."""
        running = self.runner.is_running()
        for w in (self.layer_tree, self.adapter_panel, self.data_panel, self.model_panel):
            w.setEnabled(not running)

    @Slot(object)
    def _on_run_events(self, batch: list[Any]) -> None:
        last: Step | None = None
        for ev in batch:
            if isinstance(ev, Started):
                self._run_total = ev.total_steps
                self.run_progress.setRange(0, max(ev.total_steps, 1))
                self.run_progress.setValue(ev.start_step)
                self.eta_label.setText(f"{ev.device} · {ev.precision}")
            elif isinstance(ev, Step):
                last = ev
            elif isinstance(ev, Paused):
                self.training_panel.set_state("paused")
                self.eta_label.setText(f"paused at step {ev.step}")
                self.run_progress.setValue(min(ev.step, self.run_progress.maximum()))
                last = None  # the ETA stays "paused" until training goes on
            elif isinstance(ev, Resumed):
                self.training_panel.set_state("running")
            elif isinstance(ev, Finished):
                self.last_adapter_dir = ev.adapter_dir or self.last_adapter_dir
            elif isinstance(ev, Failed):
                self.last_error = ev.message
        if last is not None:
            self.run_progress.setValue(min(last.step, self.run_progress.maximum()))
            self.eta_label.setText(f"loss {last.loss:.4f} · ETA {duration(last.eta_s)}")

    @Slot(str)
    def _on_run_failed(self, message: str) -> None:
        exc = self.runner.last_error
        if isinstance(exc, UserError):
            self.report_error(exc)
        else:
            self.last_error = message.strip().splitlines()[-1] if message.strip() else message
            box = QMessageBox(QMessageBox.Icon.Critical, "Training failed",
                              "The run failed. The app is still usable; details below.",
                              QMessageBox.StandardButton.Ok, self)
            box.setDetailedText(message)
            box.open()

    @Slot(object)
    def _on_run_finished(self, result: Any) -> None:
        self._set_running(False)
        self.training_panel.set_state("idle")
        adapter_dir = getattr(result, "adapter_dir", None)
        if adapter_dir:
            self.last_adapter_dir = str(adapter_dir)
            self._show_status(f"Run finished; adapter saved to {adapter_dir}")
        if self._close_after_run:
            QTimer.singleShot(0, self.close)

    @Slot()
    def ask_and_stop(self) -> str:
        """Stop asks: save the adapter, discard it, or cancel (`stop_chooser`, Save default)."""
        if not self.runner.is_running():
            return CANCEL
        if self.training_panel.state() == "stopping":  # asked before; it has not stopped yet
            self.end_if_wanted()
            return CANCEL
        choice = self.stop_chooser(self)
        if choice != CANCEL and self.runner.is_running():
            self.stop_training(save=choice == SAVE)
        return choice

    def end_if_wanted(self) -> bool:
        """A run that is still stopping: ask (`end_chooser`), then end its process now."""
        if self.runner.is_running() and self.end_chooser(self):
            self.runner.kill()
            self._show_status("Ending the training process…", 0)
            return True
        return False

    # ---- heatmap and memory estimate ------------------------------------------------------
    @Slot()
    def _on_plan_for_views(self) -> None:
        self.heatmap_panel.show_plan(self.tree, self.plan)
        self.memory_panel.schedule()

    def _memory_inputs(self) -> MemoryInputs | None:
        if self.tree is None or self.plan is None:
            return None
        resolved = self.training_panel.resolved_device()  # None until the probe has answered
        config = self.source.path if self.source is not None else None
        return MemoryInputs(self.tree, self.plan, self.training_panel.values(),
                            self.data_panel.values().max_length,
                            resolved[0] if resolved else "cpu", config)

    # ---- misc slots -----------------------------------------------------------------------
    @Slot()
    def focus_filter(self) -> None:
        self.layer_tree.filter_edit.setFocus()
        self.layer_tree.filter_edit.selectAll()

    @Slot(bool)
    def _on_busy_changed(self, busy: bool) -> None:
        self.busy_bar.setVisible(busy)
        self.busy_label.setText("Working…" if busy else "")
        if not busy and self.statusBar().currentMessage().endswith("…"):
            self.statusBar().clearMessage()

    # ---- drag and drop --------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        accept_local_files(event)

    def dropEvent(self, event: QDropEvent) -> None:
        for path in dropped_paths(event):
            self.open_path(path)
        event.acceptProposedAction()

    @reports_errors
    def open_path(self, path: str) -> str:
        """Open a dropped path: a folder or config.json is a model, .yaml a run, else data."""
        p = Path(path)
        kind = drop_kind(p)
        if kind == "model":
            self.model_panel.last_dir = str(p.parent)
            self.open_model(str(p))
        elif kind == "run":
            self.load_run_file(p)
        else:
            self.data_panel.set_path(str(p))
            self.tabs.setCurrentWidget(self.data_panel)
        return kind

    # ---- window state and closing ---------------------------------------------------------
    def _restore_window(self) -> None:
        geometry = self.settings.geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = self.settings.window_state()
        if state is not None:
            self.restoreState(state)
        for split in (self.main_split, self.left_split, self.monitor_split):
            saved = self.settings.splitter_state(split.objectName())
            if saved is not None:
                split.restoreState(saved)

    def _ask_stop_on_close(self) -> bool:
        """True: stop (saving the adapter) and close; False: keep the window open."""
        answer = QMessageBox.question(
            self, "Training is running",
            "A training run is in progress. Stop it, save the adapter so far, and quit?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Save

    def _save_session(self) -> None:
        splitters = {s.objectName(): s.saveState()
                     for s in (self.main_split, self.left_split, self.monitor_split)}
        self.settings.save_window(self.saveGeometry(), self.saveState(), splitters)
        self.settings.set_last_dir("model", self.model_panel.last_dir)
        self.settings.set_last_dir("data", self.data_panel.last_dir)
        with contextlib.suppress(Exception):  # never block closing on a half-entered form
            self.settings.set_last_run_yaml(self.run_config().to_yaml())
        self.settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.runner.is_running():
            if not self._close_after_run:
                if not self._ask_stop_on_close():
                    event.ignore()
                    return
                self._close_after_run = True
                self.stop_training(save=True)
            elif self.end_if_wanted():  # closed again while it is still stopping
                event.ignore()  # closes on runner.finished, in a moment
                return
            if not self.runner.shutdown(3000):
                # the step in flight is still running: close again on runner.finished
                self._show_status("Stopping: saving the adapter, then closing…", 0)
                event.ignore()
                return
        self._save_session()
        self.runner.shutdown(30_000)  # an "export current adapter" still saving finishes
        if self.resume_dialog is not None:
            self.resume_dialog.done(0)  # waits for a run-folder scan in flight
        self.jobs.wait(30_000)  # a structure build in flight finishes; results are dropped
        super().closeEvent(event)
