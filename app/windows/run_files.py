"""run.yaml files and run folders, as the main window opens and writes them: open, save, save
as, copy the `graftlab train` command line, restore the last session, resume a run folder.

`RunFiles` is composed into the main window and receives what it needs explicitly: the window
(parent of its file dialogs, and named after `run_path`), the settings, and callables that
read the run the window shows, show a run, show a status line, tell whether a run is in
progress, and start a resumed run. `run_path` is the run.yaml the window shows (None until it
is saved or opened).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import yaml
from graftlab.app.dialogs.resume_dialog import ResumeDialog
from graftlab.app.errors import reports_errors
from graftlab.app.settings import AppSettings
from graftlab.core.config import DataConfig, ModelConfig, RunConfig, validate
from graftlab.core.errors import UserError
from graftlab.core.train.checkpoints import CheckpointInfo, latest_checkpoint
from graftlab.core.train.events import Event, Failed, Finished, read_metrics
from PySide6.QtCore import QObject, Slot
from PySide6.QtWidgets import QApplication, QFileDialog, QWidget

DEFAULT_PRESET = "attention"


def default_run() -> RunConfig:
    """First start: a demo model and demo data, ready to train at once."""
    return RunConfig(model=ModelConfig(source="demo:tiny-llama"),
                     data=DataConfig(path="demo:stories"))


class RunFiles(QObject):
    """The window's run.yaml and run-folder commands (see the module docstring)."""

    def __init__(self, window: QWidget, settings: AppSettings, *,
                 current_run: Callable[[], RunConfig], show_run: Callable[[RunConfig], None],
                 show_status: Callable[..., None], run_in_progress: Callable[[], bool],
                 output_dir: Callable[[], str],
                 start_resumed: Callable[[RunConfig, list[Event], CheckpointInfo], None]) -> None:
        """`current_run()` is the run as the window shows it, checked like Start checks it;
        `start_resumed(cfg, history, checkpoint)` shows `history` and starts the run."""
        super().__init__(window)
        self.host, self.settings = window, settings
        self.current_run, self.show_run = current_run, show_run
        self.show_status, self.run_in_progress = show_status, run_in_progress
        self.output_dir, self.start_resumed = output_dir, start_resumed
        self.run_path: Path | None = None
        self.resume_dialog: ResumeDialog | None = None

    @reports_errors
    def load_run_file(self, path: str | Path) -> None:
        cfg = RunConfig.load(path)
        self.run_path = Path(path)
        self.settings.set_last_run_path(str(path))
        self.show_run(cfg)
        self._update_title()
        self.show_status(f"Opened run {path}")

    @reports_errors
    def open_run_config(self, run_dir: str | Path) -> Path | None:
        """A run folder's run.yaml into the window, to train again or change (the runs
        library): the run folder becomes a free sibling (``NAME-2``, ...), so Start trains
        into a new folder, and Save asks for a path instead of rewriting the run's record."""
        if self.run_in_progress():
            raise UserError("a run is in progress; stop it before opening another run's "
                            "configuration.")
        run_dir = Path(run_dir)
        cfg = RunConfig.load(run_dir / "run.yaml")
        target, n = run_dir, 1
        while target.exists():
            n += 1
            target = run_dir.with_name(f"{run_dir.name}-{n}")
        cfg.training.output_dir = str(target)
        self.run_path = None
        self.show_run(cfg)
        self._update_title()
        self.show_status(f"Opened the configuration of {run_dir.name}; it trains into "
                         f"{target.name}")
        return target

    @Slot()
    def open_run_dialog(self) -> None:
        start = str(self.run_path.parent) if self.run_path else self.settings.last_dir("run")
        path, _ = QFileDialog.getOpenFileName(self.host, "Open a run", start,
                                              "Run files (*.yaml *.yml);;All files (*)")
        if path:
            self.settings.set_last_dir("run", str(Path(path).parent))
            self.load_run_file(path)

    @reports_errors
    def save_run(self, path: str | Path | None = None) -> Path | None:
        """Validate and write run.yaml; asks for a path the first time."""
        cfg = self.current_run()
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
        self.show_status(f"Saved {target}")
        return target

    @Slot()
    def save_run_as(self) -> None:
        target = self._ask_save_path()
        if target is not None:
            self.save_run(target)

    def _ask_save_path(self) -> Path | None:
        start = str(self.run_path) if self.run_path else str(
            Path(self.settings.last_dir("run") or Path.cwd()) / "run.yaml")
        path, _ = QFileDialog.getSaveFileName(self.host, "Save the run", start,
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
        self.show_status(f"Copied: {command}")
        return command

    def _update_title(self) -> None:
        title = f"{self.run_path.name} — Graftlab" if self.run_path else "Graftlab"
        self.host.setWindowTitle(title)

    def restore_last_session(self) -> bool:
        """Show the run the window had when it was last closed; False when there is none (or
        it no longer reads: the window then starts on the demo)."""
        text = self.settings.last_run_yaml()
        if not text:
            return False
        try:
            cfg = RunConfig.from_dict(yaml.safe_load(text), where="last session")
        except (UserError, yaml.YAMLError):
            return False  # a stale or broken saved state: start fresh on the demo
        self.show_run(cfg)
        last = self.settings.last_run_path()
        self.run_path = Path(last) if last and Path(last).is_file() else None
        self._update_title()
        return True

    @Slot()
    def open_resume_dialog(self) -> ResumeDialog | None:
        """Resumable runs under the output folder's parent (and folders the user adds)."""
        if self.run_in_progress():
            self.show_status("Stop the current run before resuming another one.")
            return None
        out = Path(self.output_dir()).expanduser()
        roots = [out.parent] + ([Path(d)] if (d := self.settings.last_dir("runs")) else [])
        if self.resume_dialog is not None:
            self.resume_dialog.done(0)
            self.resume_dialog.deleteLater()
        self.resume_dialog = ResumeDialog(roots, self.host)
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
        if self.run_in_progress():
            raise UserError("a run is in progress; stop it before resuming another one.")
        run_dir = Path(run_dir)
        checkpoint = latest_checkpoint(run_dir)  # the core's sentence if it cannot resume
        cfg = RunConfig.load(run_dir / "run.yaml")
        cfg.training.output_dir = str(run_dir)
        metrics = run_dir / "metrics.jsonl"
        history = [ev for ev in (read_metrics(metrics) if metrics.is_file() else [])
                   if not isinstance(ev, Finished | Failed)
                   and getattr(ev, "step", 0) <= checkpoint.step]  # the rest is trained again
        self.start_resumed(cfg, history, checkpoint)
        return True
