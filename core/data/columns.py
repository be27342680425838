"""Which data format a dataset is in, and which column plays which role.

Detection goes by column names (``messages`` -> chat, ``prompt``/``completion`` and the common
aliases -> prompt-completion, ``text`` -> text); explicit ``data.*_column`` keys always win. Each
chosen column's feature type is checked, because datasets 5 loads a column whose rows mix types
as a ``Json`` feature instead of failing.
"""

from __future__ import annotations

from typing import Any

from graftlab.core.config import TRAINABLE_TASKS, DataConfig
from graftlab.core.errors import UserError

TEXT_NAMES = ("text", "content", "document", "sentence", "body", "review")
LABEL_NAMES = ("label", "labels", "class", "category", "target")
MESSAGES_NAMES = ("messages", "conversations", "conversation")
PAIRS = (
    ("prompt", "completion"),
    ("instruction", "output"),
    ("instruction", "response"),
    ("input", "output"),
    ("question", "answer"),
    ("query", "response"),
)
KNOWN_COLUMNS = {*TEXT_NAMES, *LABEL_NAMES, *MESSAGES_NAMES, *(c for pair in PAIRS for c in pair)}


def is_list_of_records(feature: Any) -> bool:
    from datasets import Json, LargeList, List

    return isinstance(feature, List | LargeList) and isinstance(feature.feature, dict | Json)


def check_trainable_task(task: str) -> None:
    """Refuse a task the data side cannot encode (``auto`` is resolved before data is read)."""
    if task not in TRAINABLE_TASKS:
        raise UserError(
            f"model.task is {task!r}; use one of {', '.join(TRAINABLE_TASKS)}.",
            field="model.task",
        )


def detect_format(columns: list[str], task: str) -> str:
    """Guess ``data.format`` from the column names.

    ``sequence-classification`` always means ``classification``. Otherwise a messages column
    means ``chat``, a prompt/completion pair (also instruction/output, input/output,
    question/answer) means ``prompt-completion``, and a text column (or a single column) means
    ``text``.

    Raises:
        UserError: the task is unknown or no format fits the columns.
    """
    check_trainable_task(task)
    if task == "sequence-classification":
        return "classification"
    cols = set(columns)
    if cols & set(MESSAGES_NAMES):
        return "chat"
    if any(p in cols and c in cols for p, c in PAIRS):
        return "prompt-completion"
    if cols & set(TEXT_NAMES) or len(columns) == 1:
        return "text"
    raise UserError(
        f"cannot tell the data format from the columns {', '.join(columns) or '(none)'}; set "
        "`data.format` (text, prompt-completion or chat) and name the column(s) with "
        "`data.text_column`, `data.prompt_column` + `data.completion_column`, or "
        "`data.messages_column`.",
        field="data.format",
    )


def resolve_format(cfg: DataConfig, columns: list[str], task: str) -> str:
    """``cfg.format``, or the format implied by the column keys that are set, or detection."""
    fmt = cfg.format
    if fmt == "auto":
        if task == "sequence-classification":
            fmt = "classification"
        elif cfg.messages_column:
            fmt = "chat"
        elif cfg.prompt_column or cfg.completion_column:
            fmt = "prompt-completion"
        elif cfg.text_column:
            fmt = "text"
        else:
            fmt = detect_format(columns, task)
    if task == "sequence-classification" and fmt != "classification":
        raise UserError(
            f"`data.format` is {fmt} but model.task is sequence-classification; set "
            "`data.format` to classification (or auto).",
            field="data.format",
        )
    if task != "sequence-classification" and fmt == "classification":
        raise UserError(
            "`data.format` is classification, which needs model.task "
            "sequence-classification; change the task or pick another format.",
            field="data.format",
        )
    return fmt


def resolve_columns(cfg: DataConfig, fmt: str, ds: Any, where: str) -> dict[str, str]:
    """Map each role of `fmt` to a column of `ds`, checking that the column's type fits."""
    cols = list(ds.column_names)

    def pick(key: str, given: str | None, names: tuple[str, ...], what: str) -> str:
        if given:
            if given not in cols:
                raise UserError(
                    f"`data.{key}` is {given!r}, but {where} has no such column "
                    f"(columns: {', '.join(cols)}); fix the name.",
                    field=f"data.{key}",
                )
            return given
        for name in names:
            if name in cols:
                return name
        if len(cols) == 1 and key == "text_column":
            return cols[0]
        raise UserError(
            f"{where} has no {what} column (columns: {', '.join(cols)}); name it "
            f"with `data.{key}`.",
            field=f"data.{key}",
        )

    if fmt == "text":
        roles = {"text": pick("text_column", cfg.text_column, TEXT_NAMES, "text")}
    elif fmt == "classification":
        roles = {
            "text": pick("text_column", cfg.text_column, TEXT_NAMES, "text"),
            "label": pick("label_column", cfg.label_column, LABEL_NAMES, "label"),
        }
    elif fmt == "chat":
        roles = {
            "messages": pick("messages_column", cfg.messages_column, MESSAGES_NAMES, "messages")
        }
    else:
        roles = _prompt_completion_columns(cfg, cols, pick)
    for role, col in roles.items():
        check_column_type(ds.features[col], col, role, where)
    return roles


def _prompt_completion_columns(cfg: DataConfig, cols: list[str], pick: Any) -> dict[str, str]:
    pair = next(((p, c) for p, c in PAIRS if p in cols and c in cols), None)
    prompts = (pair[0],) if pair and not cfg.completion_column else tuple(p for p, _ in PAIRS)
    completions = (pair[1],) if pair and not cfg.prompt_column else tuple(c for _, c in PAIRS)
    roles = {
        "prompt": pick("prompt_column", cfg.prompt_column, prompts, "prompt"),
        "completion": pick("completion_column", cfg.completion_column, completions, "completion"),
    }
    # Alpaca: instruction + optional input -> output. Dropping `input` would lose half the prompt.
    if (
        not cfg.prompt_column
        and roles["prompt"] == "instruction"
        and "input" in cols
        and roles["completion"] != "input"
    ):
        roles["input"] = "input"
    if roles["prompt"] == roles["completion"]:
        raise UserError(
            f"the prompt and completion columns are both {roles['prompt']!r}; set "
            "`data.prompt_column` and `data.completion_column` to two different "
            "columns.",
            field="data.completion_column",
        )
    return roles


_ROLE_KEYS = {
    "text": "text_column",
    "prompt": "prompt_column",
    "input": "prompt_column",
    "completion": "completion_column",
    "messages": "messages_column",
    "label": "label_column",
}


def check_column_type(feature: Any, col: str, role: str, where: str) -> None:
    """Reject columns whose values cannot play `role` (datasets 5 loads mixed types as Json)."""
    from datasets import ClassLabel, Json, Value

    key = f"data.{_ROLE_KEYS[role]}"
    if isinstance(feature, Json):
        raise UserError(
            f"column `{col}` of {where} mixes value types across rows (for example "
            "numbers and strings); make every value the same type, e.g. quote the "
            "numbers.",
            field=key,
        )
    if role == "messages":
        if is_list_of_records(feature):
            return
        raise UserError(
            f"column `{col}` of {where} must hold lists of {{role, content}} "
            f"messages, but holds {_describe(feature)}; fix the data or set "
            "`data.format`.",
            field=key,
        )
    if role == "label":
        if isinstance(feature, ClassLabel) or (
            isinstance(feature, Value)
            and (
                feature.dtype in ("string", "large_string", "bool")
                or feature.dtype.startswith(("int", "uint"))
            )
        ):
            return
        raise UserError(
            f"label column `{col}` of {where} holds {_describe(feature)}; "
            "classification labels must be strings or integers.",
            field=key,
        )
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string", "null"):
        return
    raise UserError(
        f"column `{col}` of {where} holds {_describe(feature)}, not text; point "
        f"`{key}` at a text column.",
        field=key,
    )


def _describe(feature: Any) -> str:
    from datasets import LargeList, List, Value

    if isinstance(feature, Value):
        return f"{feature.dtype} values"
    if isinstance(feature, List | LargeList):
        return "lists"
    if isinstance(feature, dict):
        return "nested objects"
    return type(feature).__name__
