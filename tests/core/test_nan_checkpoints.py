"""Non-finite weights never reach disk, whatever the logging interval; Stop skips the final
eval unless training.eval_on_stop asks for it."""

from __future__ import annotations

import pytest
from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from graftlab.core.train.callbacks import SessionCallback
from graftlab.core.train.checkpoints import complete_checkpoints
from graftlab.core.train.events import Eval, Failed, Step
from graftlab.core.train.session import TrainingSession


def make_cfg(model, out, **training):
    cfg = RunConfig()
    cfg.model.source = str(model)
    cfg.data.path = "demo:stories"
    cfg.data.max_length = 32
    cfg.adapter.targets = ["model.layers.*.self_attn.q_proj"]
    cfg.training.batch_size = 4
    cfg.training.update_norms_every = 0
    cfg.training.output_dir = str(out)
    for key, value in training.items():
        setattr(cfg.training, key, value)
    return cfg


@pytest.mark.slow
def test_nan_at_a_non_logging_step_never_reaches_a_checkpoint(tmp_path, tiny_models,
                                                               monkeypatch):
    import torch

    real = SessionCallback.on_step_end

    def poison_at_step_3(self, args, state, control, **kwargs):
        if state.global_step == 3:  # as a diverging step would leave the weights
            with torch.no_grad():
                next(p for n, p in self.session.model.named_parameters()
                     if "lora_B" in n).fill_(float("nan"))
        return real(self, args, state, control, **kwargs)

    monkeypatch.setattr(SessionCallback, "on_step_end", poison_at_step_3)
    cfg = make_cfg(tiny_models["llama"], tmp_path / "run", max_steps=8, logging_steps=10,
                   checkpoint_every=1, checkpoint_limit=10)
    events = []
    with pytest.raises(UserError, match="NaN or infinite") as info:
        TrainingSession(cfg, [events.append]).run()
    assert info.value.field == "training.learning_rate"
    assert not [e for e in events if isinstance(e, Step)], "no logging step was reached"
    assert isinstance(events[-1], Failed)
    steps = [c.step for c in complete_checkpoints(tmp_path / "run" / "checkpoints")]
    assert steps == [1, 2], steps  # the last good checkpoint; step 3 was never written
    assert not (tmp_path / "run" / "adapter").exists()


@pytest.mark.slow
@pytest.mark.parametrize("eval_on_stop", [False, True])
def test_stop_skips_the_final_eval_by_default(tmp_path, tiny_models, eval_on_stop):
    cfg = make_cfg(tiny_models["llama"], tmp_path / "run", max_steps=50,
                   eval_on_stop=eval_on_stop)
    cfg.data.eval_fraction = 0.2
    events = []
    session = TrainingSession(cfg, [events.append])

    def stop_at_first_step(event):
        if isinstance(event, Step):
            session.request_stop(save=True)

    session.sinks.append(stop_at_first_step)
    result = session.run()
    assert result.stopped_early and result.adapter_dir is not None
    # the base model's scores come before training (training.base_eval); the final eval is after
    assert bool([e for e in events if isinstance(e, Eval) and not e.base]) == eval_on_stop
