"""The main window: model and layer tree on the left; adapter, data, training and the live
monitor on the right; status bar, drag and drop, settings, close.

The window is composed of objects it owns, each given what it needs: a RunController (the one
thing that starts, pauses, resumes and stops a run, and reports its phase), RunFiles (run.yaml
files, resuming run folders), AdapterFolders (exports, the inspector), RunsLibrary (the runs
library window, TensorBoard), RunStatusBar, and the panels. It builds its own actions
(graftlab.app.windows.actions lays out the menus). Closing during a run shows progress and
never freezes (graftlab.app.windows.closing).

Everything the window does is a RunConfig plus calls into core. Slots that call core go through
`reports_errors`, so a bad input shows the core's one sentence next to its field (or in a
dialog) and an internal bug shows its traceback; the window stays usable either way.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from graftlab.app.errors import ErrorLabel, reports_errors, show_dialog
from graftlab.app.panels.adapter_panel import AdapterPanel
from graftlab.app.panels.data_panel import DataPanel
from graftlab.app.panels.heatmap_panel import HeatmapPanel
from graftlab.app.panels.layer_tree import LayerTreeWidget
from graftlab.app.panels.log_view import LogView
from graftlab.app.panels.memory_panel import MemoryInputs, MemoryPanel
from graftlab.app.panels.model_panel import ModelPanel
from graftlab.app.panels.training_panel import TrainingPanel
from graftlab.app.panels.try_panel import TryPanel
from graftlab.app.plots.eval_view import MonitorDetails
from graftlab.app.plots.metric_plots import MetricPlots
from graftlab.app.run.background import BackgroundJobs
from graftlab.app.run.run_controller import RunController
from graftlab.app.run.run_state import RunState
from graftlab.app.settings import AppSettings
from graftlab.app.windows.actions import (
    PRESETS,
    build_menus,
    build_toolbar,
    make_action,
    recent_models_menu,
    show_about,
)
from graftlab.app.windows.adapter_folders import AdapterFolders
from graftlab.app.windows.closing import RunCloser
from graftlab.app.windows.detached_runs import DetachedRuns
from graftlab.app.windows.drops import accept_local_files, drop_kind, dropped_paths
from graftlab.app.windows.library_actions import RunsLibrary
from graftlab.app.windows.run_commands import RunCommands
from graftlab.app.windows.run_files import RunFiles, default_run
from graftlab.app.windows.run_form import RunForm
from graftlab.app.windows.status_bar import RunStatusBar
from graftlab.core.adapter.plan import AdapterPlan
from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from graftlab.core.model.module_tree import ModuleTree
from graftlab.core.model.sources import ModelSource
from PySide6.QtCore import QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence, QResizeEvent
from PySide6.QtWidgets import (
    QGroupBox,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QStyle,
    QTabWidget,
    QVBoxLayout,
)
from superqt.utils import qdebounced


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, open_demo: bool = True,
                 probe_device: bool = True) -> None:
        super().__init__()
        self.setObjectName("MainWindow")
        self.setWindowTitle("Graftlab")
        self.setAcceptDrops(True)
        self.settings = AppSettings(settings)
        self.jobs = BackgroundJobs(self)
        self.controller = RunController(self)
        self.closer = RunCloser(self, self.controller)  # closing during a run: progress
        self.last_error: str | None = None
        self._close_after_run = False

        self._build_panels(probe_device)
        self._build_layout()
        self.status = RunStatusBar(self.statusBar(), self.controller)
        self.trainable_status, self.eta_label = self.status.trainable_label, self.status.eta_label
        self.form = RunForm(
            self, self.settings, self.jobs, model_panel=self.model_panel,
            layer_tree=self.layer_tree, adapter_panel=self.adapter_panel,
            data_panel=self.data_panel, training_panel=self.training_panel,
            tree_error=self.tree_error, trainable_status=self.trainable_status,
            show_status=self._show_status)
        self.run_files = RunFiles(
            self, self.settings, current_run=self.form.checked_run_config,
            show_run=self.apply_run_config, show_status=self._show_status,
            run_in_progress=self.controller.is_running,
            output_dir=lambda: self.training_panel.values().output_dir,
            start_resumed=lambda *args: self.commands.start_resumed(*args))
        self._build_actions()
        self.adapters = AdapterFolders(
            self, self.settings, self.controller, self.export_current_action,
            model=self.model_panel.values, show_status=self._show_status,
            log_line=self.log_view.add_line)
        self.commands = RunCommands(
            self, self.controller, self.form, plots=self.plots, log_view=self.log_view,
            pause_action=self.pause_action, stop_action=self.stop_action,
            views=[self.details],
            idle_actions=[self.open_model_action, self.open_config_action,
                          self.open_cache_action, self.open_run_action, self.start_action,
                          self.resume_run_action],
            locked_while_running=[self.layer_tree, self.adapter_panel, self.data_panel,
                                  self.model_panel],
            show_status=self._show_status,
            show_monitor=lambda: self.tabs.setCurrentWidget(self.monitor_split))
        self.detached = DetachedRuns(self, self.settings, roots=self._runs_roots,
                                     attach=self.commands.attach_run)
        self.commands.keep_running = self.detached.enabled
        self.library = RunsLibrary(
            self, self.settings, self.controller, roots=self._runs_roots,
            form_run_dir=lambda: self.training_panel.values().output_dir,
            open_config=self.run_files.open_run_config, resume=self.run_files.resume_run,
            show_status=self._show_status)
        self._build_menus()
        self._connect()
        self._restore_window()
        self.model_panel.set_recent(self.settings.recent_models())
        if open_demo:
            QTimer.singleShot(0, self, self._open_initial_run)
        # A training process with torch imported, ready for Start (GRAFTLAB_PRESTART=0: none)
        QTimer.singleShot(4000, self, self.controller.keep_spare_process)
        self._warm_monitor_when_quiet()

    @qdebounced(timeout=1500)
    def _warm_monitor_when_quiet(self, *_args: Any) -> None:
        """The plots' first paint, done while idle, again once a resize or a new step count
        has settled (every call restarts the wait)."""
        self._warm_monitor()

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
        if hasattr(self, "tabs"):  # construction sends resize events before the widgets exist
            self._warm_monitor_when_quiet()

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
        self.try_panel = TryPanel(self.model_panel.values,
                                  lambda: self.training_panel.values().output_dir)

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
        self.details = MonitorDetails(self.log_view)  # log, evaluation, samples
        monitor.addWidget(self.details)
        monitor.setStretchFactor(0, 3)
        monitor.setStretchFactor(1, 2)
        self.monitor_split = monitor
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.adapter_panel, "Adapter")
        self.tabs.addTab(self.data_panel, "Data")
        self.tabs.addTab(self.training_panel, "Training")
        self.tabs.addTab(monitor, "Monitor")
        self.tabs.addTab(self.heatmap_panel, "Heatmap")
        self.tabs.addTab(self.try_panel, "Try")
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

    def _build_actions(self) -> None:
        """Every QAction of the window, each wired to one of its slots or its parts'."""
        def act(*args: Any, **kwargs: Any) -> Any:
            return make_action(self, *args, **kwargs)

        sp, key, files = QStyle.StandardPixmap, QKeySequence.StandardKey, self.run_files
        self.open_model_action = act("Open &model folder…", self.model_panel.browse_folder,
                                     key.Open, "Open a Hugging Face model folder",
                                     sp.SP_DirOpenIcon)
        self.open_config_action = act("Open model &config.json…", self.model_panel.browse_config)
        self.open_cache_action = act("Open from the Hugging Face &cache…",
                                     self.model_panel.browse_cache)
        self.open_run_action = act("&Open run…", files.open_run_dialog, "Ctrl+Shift+O",
                                   "Open a run.yaml", sp.SP_FileIcon)
        self.save_run_action = act("&Save run", files.save_run, key.Save,
                                   "Save the run as run.yaml", sp.SP_DialogSaveButton)
        self.save_run_as_action = act("Save run &as…", files.save_run_as, "Ctrl+Shift+S")
        self.copy_cmd_action = act(
            "Copy &command line", files.copy_command_line, "Ctrl+Shift+C",
            "Copy the `graftlab train run.yaml` command that reproduces this run")
        self.export_action = act("&Export adapter…", lambda: self.adapters.export_adapter(),
                                 "Ctrl+E", "Export the trained adapter", sp.SP_DialogApplyButton)
        self.export_current_action = act(
            "Export c&urrent adapter…", lambda: self.adapters.export_current_adapter(),
            "Ctrl+Shift+E", "While paused: save the adapter as it is now")
        self.resume_run_action = act(
            "&Resume run…", files.open_resume_dialog, "Ctrl+R",
            "Continue a stopped or interrupted run from its last checkpoint")
        self.quit_action = act("&Quit", self.close, key.Quit)
        self.start_action = act("&Start training", self.start_training,
                                ["Ctrl+Return", "Ctrl+Enter"], "Start training (Ctrl+Return)",
                                sp.SP_MediaPlay)
        self.pause_action = act("&Pause / resume", self.controller.toggle_pause,
                                ["Ctrl+P", "Space"], "Pause or resume (Ctrl+P)", sp.SP_MediaPause)
        self.stop_action = act("S&top…", self.ask_and_stop, "Ctrl+.",
                               "Stop after this step: save or discard the adapter",
                               sp.SP_MediaStop)
        self.filter_action = act("&Filter modules", self.focus_filter, key.Find)
        self.inspect_action = act("&Inspect adapter…", lambda: self.adapters.inspect_adapter(),
                                  "Ctrl+I", "Open any PEFT LoRA adapter folder in the inspector")
        self.compare_action = act("&Compare adapters…",
                                  lambda: self.adapters.compare_adapter_folders(),
                                  tip="Compare the updates of two adapter folders")
        self.preset_actions = {
            k: act(f"Preset: {label}", lambda k=k: self.layer_tree.apply_preset(k), f"Ctrl+{n}")
            for n, (k, label) in zip((1, 2, 3, 0), PRESETS, strict=True)}

    def _build_menus(self) -> None:
        self.recent_menu = recent_models_menu(self, self.settings.recent_models,
                                              self.form.open_spec)
        about = make_action(self, "&About Graftlab", lambda: show_about(self))
        build_menus(self.menuBar(), [
            ("&File", [self.open_model_action, self.open_config_action, self.open_cache_action,
                       self.recent_menu, None, self.open_run_action, self.save_run_action,
                       self.save_run_as_action, self.copy_cmd_action, self.resume_run_action,
                       None, self.export_action, self.export_current_action, None,
                       self.quit_action]),
            ("&Select", [self.filter_action, *self.preset_actions.values()]),
            ("&Train", [self.start_action, self.pause_action, self.stop_action, None,
                        self.detached.action, self.library.tensorboard_action]),
            ("T&ools", [self.library.open_action, None, self.inspect_action,
                        self.compare_action]),
            ("&Help", [about]),
        ])
        build_toolbar(self, [[self.open_model_action, self.open_run_action,
                              self.save_run_action],
                             [self.start_action, self.pause_action, self.stop_action],
                             [self.export_action]])

    def _connect(self) -> None:
        self.jobs.busy_changed.connect(self.status.set_busy)
        self.layer_tree.status.connect(self._show_status)
        self.training_panel.bind(self.controller)
        self.training_panel.start_requested.connect(self.start_training)
        self.training_panel.stop_requested.connect(self.commands.ask_and_stop)
        # a new step count: warm the plots again with the run's step axis (see _warm_monitor)
        self.training_panel.fields["max_steps"].valueChanged.connect(
            self._warm_monitor_when_quiet)
        self.controller.events.connect(self.plots.append_events)
        self.controller.events.connect(self.log_view.append_events)
        self.controller.events.connect(self.details.append_events)
        self.controller.events.connect(self.heatmap_panel.append_events)
        self.controller.finished.connect(self._on_run_finished)
        # heatmap, memory estimate and compatibility follow the plan (after the recount above)
        self.tree_model.selection_changed.connect(self._on_plan_for_views)
        self.adapter_panel.settings_changed.connect(self._on_plan_for_views)
        self.heatmap_panel.attach_layer_tree(self.layer_tree)
        self.heatmap_panel.inspect_requested.connect(self.adapters.open_inspector)
        self.data_panel.changed.connect(self.memory_panel.schedule)
        self.training_panel.accelerator_changed.connect(self.memory_panel.schedule)
        fields = self.training_panel.fields
        fields["batch_size"].valueChanged.connect(self.memory_panel.schedule)
        self.model_panel.quantization_changed.connect(self.memory_panel.schedule)
        for name in ("precision", "device", "gradient_checkpointing"):
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
        shown = self.form.show_field_error(exc)
        if shown is None:
            show_dialog(self, exc)
        elif self.tabs.indexOf(shown) >= 0:
            self.tabs.setCurrentWidget(shown)

    def _show_status(self, text: str, timeout_ms: int = 8000) -> None:
        self.status.show(text, timeout_ms)

    # ---- the run as the window shows it (RunForm) ------------------------------------------
    @property
    def tree(self) -> ModuleTree | None:
        return self.form.tree

    @property
    def source(self) -> ModelSource | None:
        return self.form.source

    @property
    def plan(self) -> AdapterPlan | None:
        return self.form.plan

    def run_config(self) -> RunConfig:
        return self.form.run_config()

    def run_state(self) -> RunState:
        return self.form.run_state()

    def apply_run_config(self, cfg: RunConfig) -> None:
        self.form.apply_run_config(cfg)

    def open_model(self, spec: str) -> None:
        self.form.open_model(spec)

    def _on_open_requested(self, spec: str) -> None:
        self.form.open_spec(spec)

    def is_loading(self) -> bool:
        return self.form.is_loading()

    def _open_initial_run(self) -> None:
        """The run of the last session, else the demo model and data, ready to train."""
        if not self.run_files.restore_last_session():
            self.form.show_default(default_run())
        QTimer.singleShot(0, self, self.detached.offer_reattach)  # runs still training

    def _runs_roots(self) -> list[Path]:
        """Where runs are looked for: above the run folder in the form, the last runs folder."""
        out = Path(self.training_panel.values().output_dir).expanduser().absolute()
        last = self.settings.last_dir("runs")
        return [out.parent, *([Path(last)] if last else [])]

    # ---- training (RunCommands asks and checks; the RunController runs) --------------------
    def start_training(self) -> None:
        self.commands.start_training()

    def resume_training(self) -> None:
        self.controller.resume()

    def ask_and_stop(self) -> str:
        return self.commands.ask_and_stop()

    @Slot(object)
    def _on_run_finished(self, _result: Any) -> None:
        if self._close_after_run:
            QTimer.singleShot(0, self, self.close)

    # ---- heatmap and memory estimate ------------------------------------------------------
    @Slot()
    def _on_plan_for_views(self) -> None:
        self.heatmap_panel.show_plan(self.tree, self.plan)
        self.memory_panel.schedule()

    def _memory_inputs(self) -> MemoryInputs | None:
        if self.tree is None or self.plan is None:
            return None
        accel = self.training_panel.accelerator()  # None until the probe has answered
        training = self.training_panel.values()
        config = self.source.path if self.source is not None else None
        data = self.data_panel.values()
        return MemoryInputs(self.tree, self.plan, training, data.max_length,
                            training.device if accel is not None else "cpu", config, accel,
                            RunConfig(model=self.model_panel.values(), data=data,
                                      training=training))

    @Slot()
    def focus_filter(self) -> None:
        self.layer_tree.filter_edit.setFocus()
        self.layer_tree.filter_edit.selectAll()

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
            self.run_files.load_run_file(p)
        else:
            self.data_panel.set_path(str(p))
            self.tabs.setCurrentWidget(self.data_panel)
        return kind

    # ---- window state and closing ---------------------------------------------------------
    def _restore_window(self) -> None:
        self.settings.restore_layout(self, [self.main_split, self.left_split, self.monitor_split])

    def _ask_stop_on_close(self) -> bool:
        """True: stop (saving the adapter) and close; False: keep the window open."""
        answer = QMessageBox.question(
            self, "Training is running",
            "A training run is in progress. Stop it, save the adapter so far, and quit?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Save

    def _save_session(self) -> None:
        self.settings.save_layout(self, [self.main_split, self.left_split, self.monitor_split])
        self.settings.set_last_dir("model", self.model_panel.last_dir)
        self.settings.set_last_dir("data", self.data_panel.last_dir)
        with contextlib.suppress(Exception):  # never block closing on a half-entered form
            self.settings.set_last_run_yaml(self.run_config().to_yaml())
        self.settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.controller.keeps_running():  # it goes on; a later window attaches again
            self.controller.leave()
        elif self.controller.is_running():
            if not self._close_after_run:
                if not self._ask_stop_on_close():
                    event.ignore()
                    return
                self._close_after_run = True
                self.commands.stop_training(save=True)
            elif self.commands.end_if_wanted():  # closed again while it is still stopping
                event.ignore()  # closes on the controller's `finished`, in a moment
                return
            # Never wait here: the dialog shows progress; `finished` closes the window.
            self.closer.begin()
            self._show_status("Stopping: saving the adapter, then closing…", 0)
            event.ignore()
            return
        if self.controller.is_snapshotting():  # an "export current adapter" is being written
            self.closer.wait_for(self.controller.snapshot_done, "Finishing the adapter export, "
                                 "then closing…")
            event.ignore()
            return
        dialog = self.run_files.resume_dialog
        if dialog is not None and dialog.is_scanning():
            self.closer.wait_for(dialog.scan_done(), "Finishing a scan of run folders (it "
                                 "checks every checkpoint), then closing…")
            event.ignore()
            return
        self.closer.finish()
        self._save_session()
        self.controller.shutdown(30_000)  # the run and any export are over: returns at once
        self.try_panel.shutdown()  # ends the Try process (it holds the base model)
        self.library.shutdown()  # ends TensorBoard, closes the runs library
        if dialog is not None:
            dialog.done(0)
        self.jobs.wait(30_000)  # a structure build in flight finishes; results are dropped
        super().closeEvent(event)
