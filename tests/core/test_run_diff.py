"""run.yaml files compared key by key (the runs library's config diff), without Qt."""

from __future__ import annotations

from graftlab.core.config import Override, RunConfig
from graftlab.core.train.run_diff import MISSING, diff_configs, flatten, format_value, read_run_yaml


def test_flatten_nests_dicts_and_indexes_lists_of_dicts():
    flat = flatten({"adapter": {"rank": 8, "targets": ["a", "b"],
                                "overrides": [{"targets": ["x"], "rank": 16}]},
                    "training": {"report_to": []}})
    assert flat == {"adapter.rank": 8, "adapter.targets": ["a", "b"],
                    "adapter.overrides[0].targets": ["x"], "adapter.overrides[0].rank": 16,
                    "training.report_to": []}


def test_diff_marks_the_differing_keys_of_saved_runs(tmp_path):
    a, b = RunConfig(), RunConfig()
    b.training.learning_rate = 1e-3
    b.adapter.overrides = [Override(targets=["model.layers.1.*"], rank=16, alpha=32)]
    for name, cfg in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        cfg.save(tmp_path / name / "run.yaml")
    rows = {r.key: r for r in diff_configs([read_run_yaml(tmp_path / "a"),
                                            read_run_yaml(tmp_path / "b")])}
    differ = {k for k, r in rows.items() if r.differs}
    assert differ == {"training.learning_rate", "adapter.overrides",  # [] in a, indexed in b
                      "adapter.overrides[0].targets", "adapter.overrides[0].rank",
                      "adapter.overrides[0].alpha"}
    assert rows["training.learning_rate"].values == (2e-4, 1e-3)
    assert rows["adapter.overrides[0].rank"].values == (MISSING, 16)
    assert not rows["model.source"].differs
    assert list(rows)[0] == "model.source"  # the order the files hold the keys


def test_values_read_as_one_line(tmp_path):
    assert format_value(MISSING) == "—"
    assert format_value(None) == "null"
    assert format_value(True) == "true"
    assert format_value(2e-4) == "0.0002"
    assert format_value(["q_proj", "v_proj"]) == "[q_proj, v_proj]"
    targets = [f"model.layers.{i}.self_attn.{k}_proj" for i in range(4) for k in "qv"]
    assert format_value(targets, short=True) == "8: q_proj, v_proj"
    assert format_value(targets[:2], short=True) == format_value(targets[:2])
    assert read_run_yaml(tmp_path / "nowhere") == {}
    (tmp_path / "run.yaml").write_text("model: [unclosed")
    assert read_run_yaml(tmp_path) == {}
