"""Deleting runs from the runs library: to the system trash (send2trash), after a question,
never a run that a process trains in, and only folders that are Graftlab run folders.

A run's status can change between the question and the move (a resume in another terminal),
so the live lock is checked again just before each folder goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from graftlab.app.windows.runs_table import ACTIVE
from graftlab.core.errors import UserError
from graftlab.core.train.live import is_live
from graftlab.core.train.run_index import RunSummary, is_run_dir
from PySide6.QtWidgets import QMessageBox, QWidget
from send2trash import send2trash


def refuse_training(rows: Sequence[RunSummary]) -> None:
    """One sentence when any of `rows` is training (its status, or its lock held now)."""
    busy = [r for r in rows if r.status in ACTIVE or is_live(r.run_dir)]
    if busy:
        raise UserError(f"run {Path(busy[0].run_dir).name} is still training; stop it first "
                        "(Train > Stop, or graftlab stop RUN), then delete it.")


def ask_move_to_trash(parent: QWidget, run_dirs: Sequence[str]) -> bool:
    names = "\n".join(Path(d).name for d in run_dirs[:10])
    more = f"\n… and {len(run_dirs) - 10} more" if len(run_dirs) > 10 else ""
    answer = QMessageBox.question(
        parent, "Move runs to the trash",
        f"Move {len(run_dirs)} run folder{'s' if len(run_dirs) != 1 else ''} to the "
        f"trash?\n\n{names}{more}\n\nTheir adapters, checkpoints and metrics go with them "
        "(the trash can give them back).",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
        QMessageBox.StandardButton.Cancel)
    return answer == QMessageBox.StandardButton.Yes


def move_to_trash(run_dirs: Sequence[str], gone: list[str]) -> None:
    """Move each run folder to the trash, appending it to `gone` once moved; stops with a
    sentence at the first that trains again or cannot be moved (the rest stay)."""
    for d in run_dirs:
        if is_live(d):
            raise UserError(f"run {Path(d).name} started training again; it and the runs after "
                            "it were not moved to the trash.")
        if not is_run_dir(d):  # only ever a Graftlab run folder
            continue
        try:
            send2trash(d)
        except OSError as exc:
            raise UserError(f"could not move {d} to the trash ({exc}); the runs after it were "
                            "not moved.") from None
        gone.append(d)
