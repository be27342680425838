"""Fixtures for the GUI-A tests (loaded with pytest_plugins): temp QSettings, a window
factory, the demo module tree and a Llama-3-70B config.json."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings


@pytest.fixture
def qsettings(tmp_path):
    """A throwaway ini file: tests never touch the user's settings."""
    s = QSettings(str(tmp_path / "graftlab-test.ini"), QSettings.Format.IniFormat)
    s.clear()
    return s


@pytest.fixture
def make_window(qtbot, qsettings):
    from graftlab.app.windows.main_window import MainWindow

    def make(open_demo: bool = False, settings: QSettings | None = None) -> MainWindow:
        w = MainWindow(settings if settings is not None else qsettings, open_demo=open_demo,
                       probe_device=False)
        qtbot.addWidget(w)
        w.resize(1440, 900)
        return w

    return make


@pytest.fixture(scope="session")
def llama70b_config(tmp_path_factory):
    from transformers import LlamaConfig

    folder = tmp_path_factory.mktemp("llama-3-70b")
    LlamaConfig(hidden_size=8192, num_hidden_layers=80, num_attention_heads=64,
                num_key_value_heads=8, intermediate_size=28672,
                vocab_size=128256).save_pretrained(folder)
    return folder / "config.json"


@pytest.fixture(scope="session")
def demo_tree():
    from graftlab.core.model.module_tree import build_tree

    return build_tree("demo:tiny-llama")
