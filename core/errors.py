"""Errors that carry one user-facing sentence: what is wrong, where, and how to fix it."""

from __future__ import annotations


class UserError(Exception):
    """Invalid input. The CLI prints `error: <message>` and exits 2; the GUI shows the message.

    Args:
        message: one sentence naming what is wrong, where, and how to fix it.
        field: optional dotted run.yaml key (``adapter.rank``) so the GUI can put the message
            next to the right field.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class RunStopped(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside a training session when a stop request arrives during set-up."""
