"""Real Trainer runs on tiny models: loss falls, events stream, exports round-trip exactly."""

from __future__ import annotations

import json
import warnings

import pytest
from graftlab.core.config import RunConfig
from graftlab.core.train.events import Eval, Finished, Started, Step, UpdateNorms, read_metrics
from graftlab.core.train.session import TrainingSession

pytestmark = pytest.mark.slow  # every test here trains for real


def make_cfg(model, out, data="demo:stories", targets=("model.layers.*",), steps=20, **train):
    cfg = RunConfig()
    cfg.model.source = str(model)
    cfg.data.path = data
    cfg.data.max_length = 64
    cfg.adapter.rank, cfg.adapter.alpha = 16, 32
    cfg.adapter.targets = list(targets)
    cfg.training.max_steps = steps
    cfg.training.batch_size = 8
    cfg.training.learning_rate = 5e-3
    cfg.training.output_dir = str(out)
    for k, v in train.items():
        setattr(cfg.training, k, v)
    return cfg


def run(cfg):
    events = []
    result = TrainingSession(cfg, [events.append]).run()
    return result, events


def test_loss_falls_and_metrics_are_complete(tmp_path, tiny_models):
    cfg = make_cfg(tiny_models["llama"], tmp_path / "run", steps=40)
    cfg.data.eval_fraction = 0.1
    result, events = run(cfg)
    steps = [e for e in events if isinstance(e, Step)]
    assert [s.step for s in steps] == list(range(1, 41))
    first, last = sum(s.loss for s in steps[:5]) / 5, sum(s.loss for s in steps[-5:]) / 5
    assert last < first - 0.5, (first, last)
    assert isinstance(events[-1], Finished) and not events[-1].stopped_early
    assert any(isinstance(e, Eval) for e in events)
    norms = [e for e in events if isinstance(e, UpdateNorms)]
    assert [n.step for n in norms][:4] == [10, 20, 30, 40]
    assert len(norms[-1].sizes) == 14 and all(v > 0 for v in norms[-1].sizes.values())
    started = next(e for e in events if isinstance(e, Started))
    assert started.total_steps == 40 and started.device == "cpu"
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    step_lines = [x for x in lines if x["event"] == "step"]
    assert len(step_lines) == 40 and all("step" in x and "loss" in x for x in step_lines)
    assert [type(e) for e in read_metrics(result.run_dir / "metrics.jsonl")] == [
        type(e) for e in events]
    saved = RunConfig.load(result.run_dir / "run.yaml")
    assert all("*" not in t for t in saved.adapter.targets)
    assert len(saved.adapter.targets) == 14 and saved.model.task == "causal-lm"


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_adapter_reloads_with_identical_logits(tmp_path, tiny_models, arch):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    targets = ["transformer.h.*.attn.c_attn", "transformer.h.*.mlp.c_fc"] if arch == "gpt2" \
        else ["model.layers.*.self_attn.q_proj", "model.layers.*.mlp.down_proj"]
    cfg = make_cfg(tiny_models[arch], tmp_path / "run", targets=targets, steps=6)
    cfg.adapter.variant = "dora" if arch == "qwen2" else "lora"
    session = TrainingSession(cfg)
    result = session.run()
    adapter_cfg = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(tiny_models[arch].resolve())
    ids = torch.randint(5, 300, (2, 12))
    trained = session.model.eval()
    with torch.no_grad():
        expected = trained(input_ids=ids).logits
    base = AutoModelForCausalLM.from_pretrained(adapter_cfg["base_model_name_or_path"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = PeftModel.from_pretrained(base, str(result.adapter_dir)).eval()
    with torch.no_grad():
        got = loaded(input_ids=ids).logits
    assert torch.equal(got, expected)
    lora_b = [p for n, p in loaded.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "the adapter did train"


def test_classifier_trains_on_string_labels_and_merges(tmp_path, tiny_models):
    import torch
    from graftlab.core.adapter.export import export_merged, load_peft_model
    from transformers import AutoModelForSequenceClassification

    cfg = make_cfg(tiny_models["bert"], tmp_path / "run", data="demo:sentiment",
                   targets=["bert.encoder.layer.*"], steps=60, batch_size=16,
                   learning_rate=3e-3, logging_steps=5)
    result, events = run(cfg)
    losses = [e.loss for e in events if isinstance(e, Step)]
    assert losses[-1] < 0.6 < losses[0], losses
    peft_model = load_peft_model(str(tiny_models["bert"]), result.adapter_dir).eval()
    assert peft_model.config.id2label == {0: "negative", 1: "positive"}
    files = export_merged(str(tiny_models["bert"]), result.adapter_dir, tmp_path / "merged")
    assert any(p.name == "model.safetensors" for p, _ in files)
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    ids = torch.randint(5, 300, (2, 10))
    with torch.no_grad():
        a, b = peft_model(input_ids=ids).logits, merged(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_stop_and_pause_from_another_thread(tmp_path, tiny_models):
    import threading

    cfg = make_cfg(tiny_models["llama"], tmp_path / "run", steps=100_000)
    events = []
    arrived = threading.Condition()

    def sink(event) -> None:
        with arrived:
            events.append(event)
            arrived.notify_all()

    def wait_until(predicate, timeout: float = 120.0) -> bool:
        with arrived:
            return arrived.wait_for(predicate, timeout)

    session = TrainingSession(cfg, [sink])
    thread = threading.Thread(target=session.run)
    thread.start()
    assert wait_until(lambda: any(isinstance(e, Step) and e.step >= 3 for e in events))
    session.request_pause()
    assert wait_until(lambda: any(e.kind == "paused" for e in events))
    n = len(events)
    assert not wait_until(lambda: len(events) > n, timeout=0.5), "no steps while paused"
    session.request_resume()
    assert wait_until(lambda: any(isinstance(e, Step) for e in events[n:])), "resumed"
    session.request_stop(save=True)
    thread.join(60)
    assert not thread.is_alive()
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.stopped_early and fin.step < 100_000
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
