"""Samples and task metrics in real training runs on tiny models."""

from __future__ import annotations

import math

import pytest
from graftlab.core.config import RunConfig
from graftlab.core.train.events import Eval, Message, Sample, Started, read_metrics
from graftlab.core.train.session import TrainingSession

pytestmark = pytest.mark.slow  # every test here trains for real


def make_cfg(model, out, data="demo:qa", steps=6, **train):
    cfg = RunConfig()
    cfg.model.source = str(model)
    cfg.data.path = data
    cfg.data.max_length = 64
    cfg.adapter.targets = ["*q_proj", "*v_proj"] if "bert" not in str(model) else ["*query"]
    cfg.training.max_steps = steps
    cfg.training.batch_size = 4
    cfg.training.learning_rate = 5e-3
    cfg.training.update_norms_every = 0
    cfg.training.output_dir = str(out)
    for k, v in train.items():
        setattr(cfg.training, k, v)
    return cfg


def run(cfg):
    events = []
    session = TrainingSession(cfg, [events.append])
    result = session.run()
    return result, events, session


def test_sample_events_appear_at_the_requested_steps(tmp_path, tiny_models):
    prompts = ["What is 2 plus 3? Answer:", "The cat"]
    cfg = make_cfg(tiny_models["llama"], tmp_path / "run", steps=6, sample_every=2,
                   sample_prompts=prompts, sample_max_new_tokens=5, sample_max_share=1.0)
    result, events, session = run(cfg)
    samples = [e for e in events if isinstance(e, Sample)]
    assert [(s.step, s.prompt) for s in samples] == [(k, p) for k in (2, 4, 6) for p in prompts]
    assert all(isinstance(s.text, str) and not s.text.startswith(s.prompt) for s in samples)
    on_disk = [e for e in read_metrics(result.run_dir / "metrics.jsonl") if isinstance(e, Sample)]
    assert on_disk == samples
    assert session.costs["samples"] > 0 and session.costs["train"] > session.costs["samples"]


def test_samples_over_their_share_are_skipped_with_one_message(tmp_path, tiny_models):
    cfg = make_cfg(tiny_models["llama"], tmp_path / "run", steps=8, sample_every=1,
                   sample_prompts=["The cat"], sample_max_new_tokens=20, sample_max_share=1e-6)
    _result, events, _session = run(cfg)
    samples = [e for e in events if isinstance(e, Sample)]
    assert [s.step for s in samples] == [1]  # the first one shows the cost, then the cap holds
    skipped = [e for e in events if isinstance(e, Message) and "samples skipped" in e.text]
    assert len(skipped) == 1 and "step 2" in skipped[0].text


def test_base_scores_come_first_then_the_adapted_ones(tmp_path, tiny_models):
    cfg = make_cfg(tiny_models["bert"], tmp_path / "run", data="demo:sentiment", steps=4,
                   eval_steps=2)
    cfg.data.eval_fraction = 0.1
    result, events, session = run(cfg)
    evals = [e for e in events if isinstance(e, Eval)]
    assert [(e.step, e.base) for e in evals] == [(0, True), (2, False), (4, False)]
    started = next(i for i, e in enumerate(events) if isinstance(e, Started))
    assert events.index(evals[0]) > started  # after Started: a view clearing on it keeps it
    for e in evals:
        assert e.task == "sequence-classification" and e.labels == ["negative", "positive"]
        assert e.n == 26 and sum(e.counts) == 26 and sum(map(sum, e.confusion)) == 26
        assert 0 <= e.accuracy <= 1 and 0 <= e.f1_macro <= 1 and math.isfinite(e.eval_loss)
    assert session.costs["base_eval"] > 0
    assert (result.adapter_dir / "id2label.json").is_file()


def test_causal_eval_events_carry_perplexity_and_base_can_be_off(tmp_path, tiny_models):
    cfg = make_cfg(tiny_models["llama"], tmp_path / "run", steps=2, base_eval="off")
    cfg.data.eval_fraction = 0.1
    _result, events, _session = run(cfg)
    evals = [e for e in events if isinstance(e, Eval)]
    assert [(e.step, e.base) for e in evals] == [(2, False)]
    assert evals[0].perplexity == pytest.approx(math.exp(evals[0].eval_loss))
