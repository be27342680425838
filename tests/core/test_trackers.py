"""training.report_to: validation, the missing-package sentence, and TensorBoard event files
read back with tensorboard's EventAccumulator after a short real run."""

from __future__ import annotations

import importlib.util

import pytest
from graftlab.core.config import RunConfig, check_trackers
from graftlab.core.errors import UserError


def test_report_to_round_trips_and_is_checked(tmp_path):
    cfg = RunConfig()
    cfg.training.report_to = ["tensorboard"]
    cfg.save(tmp_path / "run.yaml")
    assert RunConfig.load(tmp_path / "run.yaml").training.report_to == ["tensorboard"]
    with pytest.raises(UserError, match="report_to"):
        RunConfig.from_dict({"training": {"report_to": ["neptune"]}})


def test_missing_tracker_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    cfg = RunConfig()
    cfg.training.report_to = ["wandb"]
    with pytest.raises(UserError, match=r'pip install "graftlab\[wandb\]"'):
        check_trackers(cfg)


@pytest.mark.slow
def test_tensorboard_events_one_loss_point_per_logged_step(tmp_path, tiny_models):
    from graftlab.core.train.session import TrainingSession
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = RunConfig()
    cfg.model.source = str(tiny_models["llama"])
    cfg.data.path, cfg.data.max_length = "demo:stories", 32
    cfg.adapter.targets = ["model.layers.*.self_attn.q_proj"]
    cfg.training.max_steps, cfg.training.batch_size = 6, 2
    cfg.training.report_to = ["tensorboard"]
    cfg.training.output_dir = str(tmp_path / "run")
    TrainingSession(cfg).run()
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
