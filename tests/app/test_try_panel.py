"""The Try tab: load a base, add run and adapter folders, compare two columns with Ctrl+Enter,
stop with Esc, classifier bars; once in-process (fast) and once through the real Try child."""

from __future__ import annotations

import json
import shutil

import pytest
from graftlab.app.panels.try_panel import TryPanel
from graftlab.app.run.try_client import TryClient
from graftlab.core.config import ModelConfig, RunConfig
from graftlab.core.errors import UserError
from graftlab.core.process.try_child import _Server
from PySide6.QtCore import Qt
from try_models import PROMPT, make_adapter, plain_ids

pytest_plugins = ["gui_helpers"]  # fixtures: make_window
WAIT_MS = 120_000


class InProcessTry:
    """The Try child's request handler, run in this process (the fast tests)."""

    def __init__(self) -> None:
        self.server = _Server(self)
        self._on_piece = None
        self.calls: list[str] = []

    def write(self, line: str) -> None:  # the server's output stream
        message = json.loads(line)
        if "text" in message and self._on_piece is not None:
            self._on_piece(message["side"], message["text"])

    def flush(self) -> None:
        pass

    def call(self, cmd, on_piece=None, **fields):
        self.calls.append(cmd)
        self._on_piece = on_piece
        return self.server._handle(1, {"cmd": cmd, **fields})

    def stop(self) -> None:
        self.server._stopped.add(1)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def adapters(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("try-panel")
    base = tiny_models["llama"]
    one, two = make_adapter(base, root / "one", 1), make_adapter(base, root / "two", 2)
    run = root / "run"
    run.mkdir()
    cfg = RunConfig()
    cfg.model.source, cfg.model.task, cfg.training.output_dir = str(base), "causal-lm", str(run)
    cfg.save(run / "run.yaml")
    shutil.copytree(one, run / "adapter")
    return base, run, two


def make_panel(qtbot, base, run, process=None):
    panel = TryPanel(lambda: ModelConfig(source=str(base)), lambda: str(run),
                     client=TryClient(process=process))
    qtbot.addWidget(panel)
    panel.resize(1200, 800)
    panel.show()
    return panel


def ctrl_enter(qtbot, panel):
    qtbot.keyClick(panel.prompt_edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)


def compare_two_columns(qtbot, panel, base, two):
    """Add this run's adapter (its base loads first) and a folder; generate both columns."""
    panel.add_run_button.click()
    qtbot.waitUntil(lambda: panel.info is not None and "run" in panel.info["adapters"],
                    timeout=WAIT_MS)
    assert panel.sides() == ["base", "run"]
    panel.add_folder(str(two))
    qtbot.waitUntil(lambda: "two" in panel.info["adapters"], timeout=WAIT_MS)
    panel.left_combo.setCurrentText("run")
    assert panel.sides() == ["run", "two"]
    panel.decode_form.max_new_tokens.setValue(12)
    qtbot.keyClicks(panel.prompt_edit, PROMPT)
    ctrl_enter(qtbot, panel)
    qtbot.waitUntil(lambda: panel.last_result is not None and not panel.client.is_busy(),
                    timeout=WAIT_MS)
    run_text = plain_ids(base, panel.info["adapters"]["run"])[1]
    assert panel.prompt_edit.toPlainText() == PROMPT  # Ctrl+Enter added no line
    assert panel.columns[0].answer() == run_text == panel.last_result["texts"]["run"]
    assert panel.columns[1].answer() == plain_ids(base, two)[1]
    assert "tokens in" in panel.columns[1].footer.text()
    panel.last_result = None
    panel.left_combo.setCurrentText("base")  # switch a column: no reload
    panel.generate_button.click()
    qtbot.waitUntil(lambda: panel.last_result is not None and not panel.client.is_busy(),
                    timeout=WAIT_MS)
    assert panel.columns[0].heading.text() == "Base (adapters disabled)"
    assert panel.columns[0].answer() == plain_ids(base)[1]


def test_try_tab_in_process(qtbot, adapters):
    base, run, two = adapters
    process = InProcessTry()
    panel = make_panel(qtbot, base, run, process)
    compare_two_columns(qtbot, panel, base, two)
    assert process.calls.count("load") == 1 and process.server.base_loads == 1
    assert panel.chat_check.isVisible()  # the tiny llama has a chat template
    panel.prompt_edit.clear()
    panel.generate()
    assert "prompt is empty" in panel.error_label.text()
    panel.add_folder(str(run / "run.yaml"))  # a file, not a model, run or adapter folder
    qtbot.waitUntil(lambda: panel.error_label.isVisible(), timeout=WAIT_MS)
    assert "\n" not in panel.error_label.text() and panel.info is None
    panel.shutdown()


def test_try_tab_adapter_for_another_base(qtbot, adapters, tiny_models, tmp_path):
    base, run, _two = adapters
    gpt2 = make_adapter(tiny_models["gpt2"], tmp_path / "gpt2", 3, target_modules=["c_attn"])
    panel = make_panel(qtbot, base, run, InProcessTry())
    panel.base_edit.setText(str(base))
    panel.load_button.click()
    qtbot.waitUntil(lambda: panel.info is not None, timeout=WAIT_MS)
    panel.add_folder(str(gpt2))
    qtbot.waitUntil(lambda: panel.error_label.isVisible(), timeout=WAIT_MS)
    assert "another base" in panel.error_label.text() or "different" in \
        panel.error_label.text()
    assert "\n" not in panel.error_label.text()
    panel.shutdown()


def test_try_tab_classifier_bars(qtbot, tiny_models, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = tiny_models["bert"]
    adapter = make_adapter(base, tmp_path / "cls", 5, task="sequence-classification")
    panel = make_panel(qtbot, base, tmp_path, InProcessTry())
    panel.add_folder(str(adapter))
    qtbot.waitUntil(lambda: panel.info is not None and bool(panel.info["adapters"]),
                    timeout=WAIT_MS)
    assert panel.generate_button.text() == "Classify"
    assert not panel.decode_form.isVisible() and not panel.chat_check.isVisible()
    text = "a dog had a lovely day"
    panel.prompt_edit.setPlainText(text)
    ctrl_enter(qtbot, panel)
    qtbot.waitUntil(lambda: panel.last_result is not None, timeout=WAIT_MS)
    tok = AutoTokenizer.from_pretrained(str(base))
    plain = AutoModelForSequenceClassification.from_pretrained(str(base)).eval()
    with torch.no_grad():
        want = torch.softmax(plain(**tok(text, return_tensors="pt")).logits[0], -1).tolist()
    bars = panel.columns[0].bars.values()
    assert list(bars) == ["negative", "positive"]
    assert list(bars.values()) == pytest.approx(want, abs=1e-3)
    assert list(panel.columns[1].bars.values()) == ["negative", "positive"]
    panel.shutdown()


def test_ctrl_enter_in_the_try_tab_generates_instead_of_training(qtbot, make_window,
                                                                   monkeypatch):
    window = make_window()
    window.show()
    window.activateWindow()  # window shortcuts (Start training: Ctrl+Enter) act only then
    qtbot.waitUntil(window.isActiveWindow, timeout=5_000)
    window.tabs.setCurrentWidget(window.try_panel)
    started, generated = [], []
    monkeypatch.setattr(window.commands, "start_training", lambda: started.append(1))
    monkeypatch.setattr(window.try_panel.client, "generate", lambda *a: generated.append(a))
    window.try_panel.info = {"task": "causal-lm", "chat_template": False, "adapters": {},
                             "base": "x", "labels": [], "load_s": 0.0}
    window.try_panel.prompt_edit.setPlainText("hello")
    window.try_panel.prompt_edit.setFocus()
    ctrl_enter(qtbot, window.try_panel)
    qtbot.keyClick(window.try_panel.generate_button, Qt.Key.Key_Return,
                   Qt.KeyboardModifier.ControlModifier)
    assert len(generated) == 2 and not started
    assert window.try_panel.prompt_edit.toPlainText() == "hello"
    window.layer_tree.filter_edit.setFocus()  # outside the Try tab it still starts training
    qtbot.keyClick(window.layer_tree.filter_edit, Qt.Key.Key_Return,
                   Qt.KeyboardModifier.ControlModifier)
    assert started == [1]


@pytest.mark.slow
def test_try_tab_through_the_real_child(qtbot, adapters, tmp_path):
    base, run, two = adapters
    panel = make_panel(qtbot, base, run)
    try:
        compare_two_columns(qtbot, panel, base, two)
        assert panel.client.process.is_alive()
        assert panel.client.process.call("info")["base_loads"] == 1
        panel.decode_form.max_new_tokens.setValue(20_000)
        panel.last_result = None
        ctrl_enter(qtbot, panel)
        qtbot.waitUntil(lambda: len(panel.columns[0].answer()) > 5, timeout=WAIT_MS)
        assert panel.stop_button.isEnabled()
        qtbot.keyClick(panel.prompt_edit, Qt.Key.Key_Escape)
        qtbot.waitUntil(lambda: panel.last_result is not None, timeout=WAIT_MS)
        assert panel.last_result["stopped"]
        assert panel.last_result["tokens"]["base"] < 20_000
        panel.grab().save(str(tmp_path / "try-tab.png"))
        with pytest.raises(UserError, match="no adapter named"):
            panel.client.process.call("generate", prompt="x", sides=["nope"])
    finally:
        panel.shutdown()
    assert not panel.client.process.is_alive()
