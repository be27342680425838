"""Stop a run: save the adapter trained so far, discard it, or keep training.

Either way the run stops after the current step and writes a checkpoint, so a stopped run can be
resumed later (File > Resume run…). Discard only skips writing `adapter/`.
"""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget

SAVE, DISCARD, CANCEL = "save", "discard", "cancel"

STOP_TEXT = "Stop training after the current step?"
STOP_DETAILS = ("Save writes the adapter trained so far to the run folder's adapter/. Discard "
                "stops without writing it. Either way a checkpoint is written at the stop, so "
                "the run stays resumable with File > Resume run….")


def stop_box(parent: QWidget | None) -> QMessageBox:
    """The question, with Save (the default), Discard and Cancel."""
    box = QMessageBox(QMessageBox.Icon.Question, "Stop training", STOP_TEXT,
                      QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                      | QMessageBox.StandardButton.Cancel, parent)
    box.setObjectName("stopDialog")
    box.setInformativeText(STOP_DETAILS)
    box.setDefaultButton(QMessageBox.StandardButton.Save)
    box.setEscapeButton(QMessageBox.StandardButton.Cancel)
    return box


def choice_of(button: QMessageBox.StandardButton) -> str:
    if button == QMessageBox.StandardButton.Save:
        return SAVE
    if button == QMessageBox.StandardButton.Discard:
        return DISCARD
    return CANCEL


def ask_stop_choice(parent: QWidget | None) -> str:
    """Ask modally; returns "save", "discard" or "cancel".

    The window's RunCommands holds this as its `stop_chooser` attribute, so tests replace it with a
    function that answers at once instead of running a modal loop.
    """
    box = stop_box(parent)
    box.exec()
    return choice_of(box.standardButton(box.clickedButton()) if box.clickedButton() else
                     QMessageBox.StandardButton.Cancel)


END_TEXT = "The run has not stopped yet. End the training process now?"
END_DETAILS = ("A stop waits for the current step and then saves a checkpoint and the adapter. "
               "Ending the process now keeps the run folder's last complete checkpoint, which "
               "Resume run continues from; the step in flight and the adapter are not saved.")


def ask_end_now(parent: QWidget | None) -> bool:
    """Ask modally whether to kill a run that is still stopping (Wait is the default).

    The window's RunCommands holds this as its `end_chooser` attribute; tests replace it.
    """
    box = QMessageBox(QMessageBox.Icon.Warning, "End training", END_TEXT,
                      QMessageBox.StandardButton.Abort | QMessageBox.StandardButton.Cancel,
                      parent)
    box.setObjectName("endDialog")
    box.setInformativeText(END_DETAILS)
    box.button(QMessageBox.StandardButton.Abort).setText("End now")
    box.button(QMessageBox.StandardButton.Cancel).setText("Wait")
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.setEscapeButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    return box.clickedButton() is box.button(QMessageBox.StandardButton.Abort)
