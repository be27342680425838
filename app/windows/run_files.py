"""run.yaml files and run folders, as the main window opens and writes them: open, save, save
as, copy the `graftlab train` command line, restore the last session, resume a run folder.

`RunFiles` is mixed into MainWindow: its methods use the window's panels, settings, runner,
`run_config()` / `apply_run_config()` and `_show_status`, and its `run_path` (the run.yaml the
window shows, None until it is saved or opened; it names the window).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml
from graftlab.app.dialogs.resume_dialog import ResumeDialog
from graftlab.app.errors import reports_errors
from graftlab.core.config import DataConfig, ModelConfig, RunConfig, validate
from graftlab.core.errors import UserError
from graftlab.core.train.checkpoints import latest_checkpoint
from graftlab.core.train.events import Failed, Finished, read_metrics
from PySide6.QtCore import Slot
from PySide6.QtWidgets import QApplication, QFileDialog

DEFAULT_PRESET = "attention"


def default_run() -> RunConfig:
    """First start: a demo model and demo data, ready to train at once."""
    return RunConfig(model=ModelConfig(source="demo:tiny-llama"),
                     data=DataConfig(path="demo:stories"))


class RunFiles:
    """MainWindow's run.yaml and run-folder slots (a mixin: see the module docstring)."""

    @reports_errors
    def load_run_file(self, path: str | Path) -> None:
        cfg = RunConfig.load(path)
        self.run_path = Path(path)
        self.settings.set_last_run_path(str(path))
        self.apply_run_config(cfg)
        self._update_title()
        self._show_status(f"Opened run {path}")

    @Slot()
    def open_run_dialog(self) -> None:
        start = str(self.run_path.parent) if self.run_path else self.settings.last_dir("run")
        path, _ = QFileDialog.getOpenFileName(self, "Open a run", start,
                                              "Run files (*.yaml *.yml);;All files (*)")
        if path:
            self.settings.set_last_dir("run", str(Path(path).parent))
            self.load_run_file(path)

    @reports_errors
    def save_run(self, path: str | Path | None = None) -> Path | None:
        """Validate and write run.yaml; asks for a path the first time."""
        self.adapter_panel.validate()
        cfg = self.run_config()
        validate(cfg, "run settings")
        target = Path(path) if path else self.run_path
        if target is None:
            target = self._ask_save_path()
            if target is None:
                return None
        cfg.save(target)
        self.run_path = target
        self.settings.set_last_run_path(str(target))
        self._update_title()
        self._show_status(f"Saved {target}")
        return target

    @Slot()
    def save_run_as(self) -> None:
        target = self._ask_save_path()
        if target is not None:
            self.save_run(target)

    def _ask_save_path(self) -> Path | None:
        start = str(self.run_path) if self.run_path else str(
            Path(self.settings.last_dir("run") or Path.cwd()) / "run.yaml")
        path, _ = QFileDialog.getSaveFileName(self, "Save the run", start,
                                              "Run files (*.yaml *.yml)")
        if not path:
            return None
        self.settings.set_last_dir("run", str(Path(path).parent))
        return Path(path)

    @reports_errors
    def copy_command_line(self) -> str | None:
        """Save the run (so the file matches the window) and copy the command that replays it."""
        target = self.save_run()
        if target is None:
            return None
        command = f"graftlab train {shlex.quote(str(target.resolve()))}"
        QApplication.clipboard().setText(command)
        self._show_status(f"Copied: {command}")
        return command

    def _update_title(self) -> None:
        self.setWindowTitle(f"{self.run_path.name} — Graftlab" if self.run_path else "Graftlab")

    def _open_initial_run(self) -> None:
        text = self.settings.last_run_yaml()
        if text:
            try:
                cfg = RunConfig.from_dict(yaml.safe_load(text), where="last session")
                self.apply_run_config(cfg)
                last = self.settings.last_run_path()
                self.run_path = Path(last) if last and Path(last).is_file() else None
                self._update_title()
                return
            except (UserError, yaml.YAMLError):
                pass  # a stale or broken saved state: start fresh on the demo
        cfg = default_run()
        self.adapter_panel.set_values(cfg.adapter.rank, cfg.adapter.alpha, cfg.adapter.dropout,
                                      cfg.adapter.variant)
        self.data_panel.set_values(cfg.data)
        self.training_panel.set_values(cfg.training)
        self.model_panel.set_values(cfg.model)
        self._pending_adapter, self._pending_preset = None, DEFAULT_PRESET
        self.open_model(cfg.model.source)

    @Slot()
    def open_resume_dialog(self) -> ResumeDialog | None:
        """Resumable runs under the output folder's parent (and folders the user adds)."""
        if self.runner.is_running():
            self._show_status("Stop the current run before resuming another one.")
            return None
        out = Path(self.training_panel.values().output_dir).expanduser()
        roots = [out.parent] + ([Path(d)] if (d := self.settings.last_dir("runs")) else [])
        if self.resume_dialog is not None:
            self.resume_dialog.done(0)
            self.resume_dialog.deleteLater()
        self.resume_dialog = ResumeDialog(roots, self)
        self.resume_dialog.accepted.connect(self._on_resume_accepted)
        self.resume_dialog.open()
        return self.resume_dialog

    @Slot()
    def _on_resume_accepted(self) -> None:
        dialog = self.resume_dialog
        run_dir = dialog.chosen_run() if dialog is not None else None
        if dialog is not None and len(dialog.roots) > 1:
            self.settings.set_last_dir("runs", dialog.roots[-1])
        if run_dir is not None:
            self.resume_run(run_dir)

    @reports_errors
    def resume_run(self, run_dir: str | Path) -> bool:
        """Continue `run_dir` from its latest complete checkpoint, as `graftlab train --resume`:
        its run.yaml goes into the window, its history into the plots, and the run goes on."""
        if self.runner.is_running():
            raise UserError("a run is in progress; stop it before resuming another one.")
        run_dir = Path(run_dir)
        checkpoint = latest_checkpoint(run_dir)  # the core's sentence if it cannot resume
        cfg = RunConfig.load(run_dir / "run.yaml")
        cfg.training.output_dir = str(run_dir)
        self.apply_run_config(cfg)
        metrics = run_dir / "metrics.jsonl"
        history = [ev for ev in (read_metrics(metrics) if metrics.is_file() else [])
                   if not isinstance(ev, Finished | Failed)
                   and getattr(ev, "step", 0) <= checkpoint.step]  # the rest is trained again
        self.plots.load_history(history)
        self.log_view.add_line(f"Resuming {run_dir} from step {checkpoint.step} of "
                               f"{checkpoint.max_steps}")
        self.runner.start(cfg, resume=True)
        self._set_running(True)
        self.training_panel.set_state("running")
        self.tabs.setCurrentWidget(self.monitor_split)
        self._show_status(f"Resuming {run_dir.name} at step {checkpoint.step}")
        return True
