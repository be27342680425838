"""Same run.yaml, same adapter: two runs give bit-identical adapters for every task and
variant, a newly initialised classification head included; and the metadata is useful."""

from __future__ import annotations

import json

import pytest
from graftlab.core.config import RunConfig
from graftlab.core.train.session import TrainingSession


def make_cfg(model, out, data="demo:stories", targets=("model.layers.*.self_attn.q_proj",),
             variant="lora", task="auto"):
    cfg = RunConfig()
    cfg.model.source = str(model)
    cfg.model.task = task
    cfg.data.path = data
    cfg.data.max_length = 32
    cfg.adapter.targets = list(targets)
    cfg.adapter.variant = variant
    cfg.adapter.dropout = 0.1  # dropout draws from the RNG on every step
    cfg.training.max_steps = 3
    cfg.training.batch_size = 4
    cfg.training.learning_rate = 5e-3
    cfg.training.update_norms_every = 0
    cfg.training.output_dir = str(out)
    return cfg


def adapter_tensors(adapter_dir):
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def assert_bit_identical(a, b):
    import torch

    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def headless_bert(tmp_path_factory):
    """A BERT base without a classification head: training builds a new, random one."""
    from graftlab.core.model.demo import build_config, build_tokenizer
    from transformers import AutoModel

    folder = tmp_path_factory.mktemp("bert-base")
    tok = build_tokenizer(512)
    config = build_config("bert", len(tok), None)
    model = AutoModel.from_config(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["lora", "rslora", "dora"])
def test_causal_lm_runs_are_bit_identical(tmp_path, tiny_models, variant):
    results = [TrainingSession(make_cfg(tiny_models["llama"], tmp_path / f"run{i}",
                                        variant=variant)).run() for i in range(2)]
    assert_bit_identical(*(adapter_tensors(r.adapter_dir) for r in results))
    saved = RunConfig.load(results[0].run_dir / "run.yaml")
    assert saved.training.seed == 0 and saved.adapter.variant == variant  # repeatable from it


@pytest.mark.slow
def test_new_classification_head_is_bit_identical(tmp_path, headless_bert):
    cfgs = [make_cfg(headless_bert, tmp_path / f"run{i}", data="demo:sentiment",
                     targets=["bert.encoder.layer.*.attention.self.query"],
                     task="sequence-classification") for i in range(2)]
    results = [TrainingSession(cfg).run() for cfg in cfgs]
    tensors = [adapter_tensors(r.adapter_dir) for r in results]
    assert any("classifier" in k for k in tensors[0]), "the new head is saved in full"
    assert_bit_identical(*tensors)
    adapter_cfg = json.loads((results[0].adapter_dir / "adapter_config.json").read_text())
    saved = adapter_cfg["modules_to_save"]
    assert len(saved) == len(set(saved)), saved


@pytest.mark.slow
def test_demo_run_records_the_real_base_folder(tmp_path):
    from graftlab.core.model.demo import demo_model_path

    result = TrainingSession(make_cfg("demo:tiny-llama", tmp_path / "run")).run()
    adapter_cfg = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(demo_model_path("tiny-llama").resolve())
    readme = (result.adapter_dir / "README.md").read_text()
    assert "huggingface.co" not in readme and "base_model:" not in readme
