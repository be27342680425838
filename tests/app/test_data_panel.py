"""The data panel: detected format, column mapping, preview with trained tokens, histogram."""

from __future__ import annotations

import json

from graftlab.app.panels.data_panel import DataPanel, tokens_html
from graftlab.core.config import DataConfig
from graftlab.core.model.demo import demo_model_path


def _panel(qtbot) -> DataPanel:
    panel = DataPanel()
    qtbot.addWidget(panel)
    panel.resize(700, 800)
    panel.set_model(str(demo_model_path("tiny-llama")), "causal-lm")
    return panel


def _wait(qtbot, panel) -> None:
    qtbot.waitUntil(lambda: not panel.is_loading(), timeout=60_000)


def test_preview_of_demo_qa_highlights_only_the_completion(qtbot):
    panel = _panel(qtbot)
    panel.set_values(DataConfig(path="demo:qa", max_length=64))
    _wait(qtbot, panel)
    result = panel.result
    assert result.error is None, result.error
    assert result.fmt == "prompt-completion" and result.detected == "prompt-completion"
    assert panel.detected_label.text() == "detected: prompt-completion"
    assert panel.table.rowCount() == 8
    ex = result.examples[0]
    assert any(ex.trained) and not all(ex.trained)  # the prompt carries no loss
    html = panel.table.cellWidget(0, 1).text()
    assert html.count("background-color") == sum(1 for t, on in zip(ex.tokens, ex.trained,
                                                                      strict=True) if on and t)
    assert "256 examples" in panel.counts_label.text()
    # column mapping offers the file's columns; the prompt/completion rows are shown
    combo = panel.column_combos["prompt_column"]
    assert [combo.itemText(i) for i in range(combo.count())] == ["(auto)", "prompt", "completion"]
    assert panel.form.isRowVisible(combo) and not panel.form.isRowVisible(
        panel.column_combos["messages_column"])
    assert panel._hist_bar is not None


def test_column_mapping_and_format_override_reach_the_config(qtbot, write_jsonl):
    path = write_jsonl([{"question": f"q{i}?", "reply": f"a{i}"} for i in range(5)])
    panel = _panel(qtbot)
    panel.set_values(DataConfig(path=str(path)))
    _wait(qtbot, panel)
    assert panel.result.error is not None  # no known column names: the core says what to set
    assert "data.format" in panel.error_label.text() or "column" in panel.error_label.text()
    panel.format_combo.setCurrentText("prompt-completion")
    panel.column_combos["prompt_column"].setCurrentText("question")
    panel.column_combos["completion_column"].setCurrentText("reply")
    panel.refresh()
    _wait(qtbot, panel)
    assert panel.result.error is None, panel.result.error
    cfg = panel.values()
    assert (cfg.format, cfg.prompt_column, cfg.completion_column) == (
        "prompt-completion", "question", "reply")
    assert panel.table.rowCount() == 5


def test_missing_data_file_shows_the_core_sentence(qtbot, tmp_path):
    panel = _panel(qtbot)
    panel.set_values(DataConfig(path=str(tmp_path / "nope.jsonl")))
    _wait(qtbot, panel)
    assert "does not exist" in panel.error_label.text()
    assert panel.table.rowCount() == 0


def test_broken_jsonl_shows_the_core_sentence(qtbot, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "ok"}) + "\n{not json\n", encoding="utf-8")
    panel = _panel(qtbot)
    panel.set_values(DataConfig(path=str(bad)))
    _wait(qtbot, panel)
    assert panel.error_label.text()
    assert panel.table.rowCount() == 0


def test_tokens_html_escapes_and_marks_trained_tokens():
    out = tokens_html(["<b>", " x", "\n"], [False, True, True], "#123456", "#ffffff")
    assert "&lt;b&gt;" in out and out.count("#123456") == 2 and "↵" in out
