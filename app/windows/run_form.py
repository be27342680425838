"""The run as the main window shows it: the model (its structure built in the background), the
layer tree's ticks and overrides, and the adapter, data and training panels.

`RunForm` is composed into the window and receives the panels, the settings, the background
jobs and callables for a status line explicitly; errors go to the window's `report_error`
(its `host`). `run_config()` reads the form as a RunConfig and `apply_run_config()` shows one,
so the GUI state and run.yaml convert exactly (graftlab.app.run.run_state).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from graftlab.app.errors import ErrorLabel, reports_errors
from graftlab.app.numbers import compact, exact, percent
from graftlab.app.panels.adapter_panel import AdapterPanel
from graftlab.app.panels.data_panel import DataPanel
from graftlab.app.panels.layer_tree import LayerTreeWidget
from graftlab.app.panels.model_panel import ModelPanel
from graftlab.app.panels.training_panel import TrainingPanel
from graftlab.app.run.background import BackgroundJobs
from graftlab.app.run.run_state import AdapterState, RunState, adapter_config, adapter_state
from graftlab.app.settings import AppSettings
from graftlab.app.windows.run_files import DEFAULT_PRESET
from graftlab.core.adapter.plan import AdapterPlan, plan_adapter
from graftlab.core.config import AdapterConfig, RunConfig
from graftlab.core.errors import UserError
from graftlab.core.model.module_tree import ModuleTree, build_tree
from graftlab.core.model.sources import ModelSource, resolve_source
from PySide6.QtCore import QObject, Slot
from PySide6.QtWidgets import QLabel, QWidget


def _load_model(spec: str, task: str, trust: bool,
                num_labels: int | None) -> tuple[ModelSource, ModuleTree]:
    from graftlab.core.model.shape_tree import quick_tree

    source = resolve_source(spec, trust)
    # Llama-family configs: the tree from config.json alone, without importing torch (0.2 s
    # instead of ~8 s on a cold start); everything else builds the meta-device skeleton.
    quick = quick_tree(spec, task, trust) if num_labels is None else None
    return source, quick or build_tree(source, task, trust, num_labels)


class RunForm(QObject):
    """The model, its tree and the settings panels, read and written as one RunConfig."""

    def __init__(self, window: QWidget, settings: AppSettings, jobs: BackgroundJobs, *,
                 model_panel: ModelPanel, layer_tree: LayerTreeWidget,
                 adapter_panel: AdapterPanel, data_panel: DataPanel,
                 training_panel: TrainingPanel, tree_error: ErrorLabel,
                 trainable_status: QLabel, show_status: Callable[..., None]) -> None:
        super().__init__(window)
        self.host, self.settings, self.jobs = window, settings, jobs
        self.model_panel, self.layer_tree = model_panel, layer_tree
        self.tree_model = layer_tree.model
        self.adapter_panel, self.data_panel = adapter_panel, data_panel
        self.training_panel, self.tree_error = training_panel, tree_error
        self.trainable_status, self.show_status = trainable_status, show_status
        self.tree: ModuleTree | None = None
        self.source: ModelSource | None = None
        self.plan: AdapterPlan | None = None
        self._loading_spec: str | None = None
        self._pending_adapter: AdapterConfig | None = None
        self._pending_preset: str | None = None
        self._kinds: list[str] = []
        model_panel.open_requested.connect(self.open_spec)
        self.tree_model.selection_changed.connect(self._on_selection_changed)
        self.tree_model.error.connect(self._on_tree_error)
        adapter_panel.settings_changed.connect(self._on_adapter_settings)

    def show_field_error(self, exc: UserError) -> QWidget | None:
        """Show a core UserError next to the field it names; returns the widget that shows it
        (the window brings its tab forward), None when no field of the form is named."""
        key, message = exc.field or "", exc.message
        if key.startswith("model."):
            self.model_panel.show_error(message)
            return self.model_panel
        if key.startswith(("adapter.targets", "adapter.overrides")):
            self.tree_error.show_message(message)
            return self.tree_error
        if key.startswith("adapter."):
            self.adapter_panel.show_field_error(message)
            return self.adapter_panel
        if key.startswith("data."):
            self.data_panel.show_field_error(message)
            return self.data_panel
        if key.startswith("training."):
            self.training_panel.show_error(key.partition(".")[2], message)
            return self.training_panel
        if key in ("filter", "layers"):
            self.layer_tree.filter_error.show_message(message)
            return self.layer_tree
        return None

    def show_default(self, cfg: RunConfig) -> None:
        """First start: `cfg`'s settings, its model with the default preset ticked."""
        self.adapter_panel.set_values(cfg.adapter.rank, cfg.adapter.alpha, cfg.adapter.dropout,
                                      cfg.adapter.variant)
        self.data_panel.set_values(cfg.data)
        self.training_panel.set_values(cfg.training)
        self.model_panel.set_values(cfg.model)
        self._pending_adapter, self._pending_preset = None, DEFAULT_PRESET
        self.open_model(cfg.model.source)

    # ---- model ----------------------------------------------------------------------------
    @Slot(str)
    @reports_errors
    def open_spec(self, spec: str) -> None:
        """Open `spec` (the model panel's Open, the recent-models menu); errors are shown."""
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
        self.show_status(f"Loading the structure of {spec}…", 0)
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
        self.show_status(f"Opened {self.source.spec}: {tree.model_type}, "
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
                    self.host.report_error(exc)
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
        self.host.report_error(exc, tb)

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
        self.host.report_error(exc)

    # ---- the run as the form shows it -----------------------------------------------------
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

    def checked_run_config(self) -> RunConfig:
        """`run_config()` after the adapter form's own check (what Save and Start write)."""
        self.adapter_panel.validate()
        return self.run_config()

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
