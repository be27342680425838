"""The Monitor tab's evaluation and samples views, fed with the events a run writes."""

from __future__ import annotations

import pytest
from graftlab.app.plots.eval_view import EvalView, MonitorDetails, SamplesView
from graftlab.core.train.events import Eval, Sample, Step
from PySide6.QtWidgets import QLabel

pytest_plugins = ["gui_helpers"]  # fixtures: make_window


def _step(n):
    return Step(n, 1.0, 1e-4, 1.0, 0.1, 100.0, 10, 0.1, None, 10.0)


def _cls_eval(step, base, acc, confusion):
    return Eval(step, 0.6, base=base, task="sequence-classification", n=sum(map(sum, confusion)),
                accuracy=acc, f1_macro=acc - 0.05, labels=["negative", "positive"],
                counts=[sum(r) for r in confusion], confusion=confusion)


def test_classifier_metrics_against_the_base_and_the_confusion_matrix(qtbot):
    view = EvalView()
    qtbot.addWidget(view)
    view.resize(900, 320)
    view.show()
    assert view.empty.isVisible() and not view.plot.isVisible()
    view.append_events([_cls_eval(0, True, 0.5, [[5, 5], [5, 5]]), _step(1),
                        _cls_eval(10, False, 0.7, [[7, 3], [3, 7]]),
                        _cls_eval(20, False, 0.9, [[9, 1], [1, 9]])])
    assert view.plot.isVisible() and not view.empty.isVisible()
    xs, ys = view.curves["accuracy"].getData()
    assert list(xs) == [10, 20] and list(ys) == pytest.approx([0.7, 0.9])
    assert view.base_lines["accuracy"].value() == pytest.approx(0.5)  # dashed base line
    assert view.base_lines["f1_macro"].value() == pytest.approx(0.45)
    assert view.matrix_box.isVisible()
    assert view.confusion_shown().step == 20
    assert [t.toPlainText() for t in view.cell_texts] == ["9", "1", "1", "9"]
    ticks = view.matrix_plot.getAxis("left")._tickLevels[0]
    assert [name for _pos, name in ticks] == ["negative", "positive"]  # names, not ids
    view.which.setCurrentIndex(1)  # the base model's matrix
    assert view.confusion_shown().base and [t.toPlainText() for t in view.cell_texts] == \
        ["5", "5", "5", "5"]
    assert "adapters disabled" in view.matrix_title.text()
    view.clear()
    assert not view.curves and not view.matrix_box.isVisible()


def test_causal_lm_shows_perplexity_and_no_matrix(qtbot):
    view = EvalView()
    qtbot.addWidget(view)
    view.append_events([Eval(0, 3.0, base=True, task="causal-lm", perplexity=20.1),
                        Eval(5, 2.0, task="causal-lm", perplexity=7.39)])
    assert set(view.curves) == {"perplexity"}
    assert view.base_lines["perplexity"].value() == pytest.approx(20.1)
    assert view.confusion_shown() is None and not view.matrix_box.isVisible()


def test_samples_are_listed_by_step(qtbot):
    samples = SamplesView()
    qtbot.addWidget(samples)
    samples.append_events([Sample(10, "Once upon", " a time"), _step(11),
                           Sample(20, "Once upon", " a time there was a cat")])
    assert samples.rows() == [(10, "Once upon", " a time"),
                              (20, "Once upon", " a time there was a cat")]
    samples.load_history([Sample(5, "p", "t")])
    assert samples.rows() == [(5, "p", "t")]


def test_the_monitor_shows_log_evaluation_and_samples(qtbot, make_window, tmp_path):
    w = make_window()
    w.show()
    assert isinstance(w.details, MonitorDetails)
    assert [w.details.tabText(i) for i in range(w.details.count())] == \
        ["Log", "Evaluation", "Samples"]
    w.controller.events.emit([_cls_eval(0, True, 0.5, [[5, 5], [5, 5]]),
                              _cls_eval(4, False, 0.8, [[8, 2], [2, 8]]),
                              Sample(4, "great movie", "positive")])
    assert w.details.eval_view.latest.step == 4
    assert w.details.samples_view.rows() == [(4, "great movie", "positive")]
    assert w.plots.point_count("eval_loss") == 1  # the base's eval loss is not an eval point
    w.details.setCurrentIndex(1)
    w.tabs.setCurrentWidget(w.monitor_split)
    qtbot.wait(50)
    w.grab().save(str(tmp_path / "monitor-eval.png"))
    assert isinstance(w.details.eval_view.empty, QLabel)
