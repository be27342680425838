"""Model panel: trusting remote code shows a visible warning."""

from __future__ import annotations

from graftlab.app.panels.model_panel import ModelPanel
from graftlab.core.config import ModelConfig


def test_remote_code_opt_in_shows_a_warning(qtbot):
    panel = ModelPanel()
    qtbot.addWidget(panel)
    assert not panel.trust_warning.isVisibleTo(panel)
    panel.trust_check.setChecked(True)
    assert panel.trust_warning.isVisibleTo(panel)
    assert panel.values().trust_remote_code
    panel.set_values(ModelConfig(source="demo:tiny-llama"))
    assert not panel.trust_warning.isVisibleTo(panel)
