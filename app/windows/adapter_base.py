"""What the adapter inspector reads in the background: the adapter, its compatibility
findings, and the base model it names, which is untrusted input.

The base named in ``base_model_name_or_path`` is looked up on this machine only (folder, cache,
demo). A hub id that is not here is reported as such; its config.json (never weights) is
fetched only after the user agreed (:func:`ask_fetch_base`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from graftlab.core.errors import UserError
from PySide6.QtWidgets import QMessageBox, QWidget


def _base_config(base_model: str | None, allow_download: bool = False) -> dict[str, Any] | None:
    """The base model's config.json when it is on this machine (local folder, cache, demo).

    An adapter folder is untrusted input: the base it names is never fetched from the hub
    unless the user agreed (`allow_download`), and then only its config.json.
    """
    if not base_model:
        return None
    try:
        from graftlab.core.model.sources import resolve_source

        path = Path(resolve_source(base_model, allow_download=allow_download).path)
        cfg = path if path.is_file() else path / "config.json"
        return json.loads(cfg.read_text(encoding="utf-8")) if cfg.is_file() else None
    except Exception:  # not available offline, or not a model: the rules run without it
        return None


def read_and_check(folder: str) -> tuple[Any, list[Any]]:
    """Background job: the adapter and its compatibility findings (local files only)."""
    from graftlab.core.adapter.compat import check_adapter
    from graftlab.core.adapter.info import read_adapter

    info = read_adapter(folder)
    return info, check_adapter(info, _base_config(info.base_model)), base_is_remote(
        info.base_model)


def ask_fetch_base(parent: QWidget, base: str) -> bool:
    """Ask before anything is fetched for the base an (untrusted) adapter names."""
    answer = QMessageBox.question(
        parent, "Fetch the base model's config?",
        f"This adapter names {base} as its base model, which is not on this machine. Fetch "
        "only its config.json (a few KB, no weights) from the Hugging Face hub to check "
        "compatibility?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def base_is_remote(base_model: str | None) -> bool:
    """True when the adapter names a hub id that is not on this machine."""
    if not base_model:
        return False
    from graftlab.core.model.sources import resolve_source

    try:
        resolve_source(base_model, allow_download=False)
        return False
    except UserError as exc:
        return "is not on this machine" in exc.message


def recheck_with_base(info: Any) -> tuple[Any, list[Any]]:
    """Background job, after the user agreed: fetch the base's config.json and re-check."""
    from graftlab.core.adapter.compat import check_adapter

    config = _base_config(info.base_model, allow_download=True)
    if config is None:
        raise UserError(f"could not fetch the config of {info.base_model}; check the id and "
                        "your connection.")
    return info, check_adapter(info, config)
