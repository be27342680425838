"""The chunked cross-entropy equals the plain path: loss and LoRA gradients (1e-5), for Llama,
Qwen2, GPT-2 and Mistral shapes, with ignored labels, padding, packing and num_items_in_batch."""

from __future__ import annotations

import pytest
import torch
from graftlab.core.train.chunked_loss import (
    chunked_lm_loss,
    compute_chunked_loss,
    decoder_and_head,
    use_chunked_loss,
)

VOCAB = 1000


def _model(arch):
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        GPT2Config,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
    )

    common = dict(vocab_size=VOCAB, num_hidden_layers=2)
    config = {
        "llama": lambda: LlamaConfig(hidden_size=64, num_attention_heads=4,
                                     num_key_value_heads=2, intermediate_size=128, **common),
        "qwen2": lambda: Qwen2Config(hidden_size=64, num_attention_heads=4,
                                     num_key_value_heads=2, intermediate_size=128,
                                     tie_word_embeddings=True, **common),
        "mistral": lambda: MistralConfig(hidden_size=64, num_attention_heads=4,
                                         num_key_value_heads=2, intermediate_size=128,
                                         **common),
        "gpt2": lambda: GPT2Config(n_embd=64, n_head=4, n_layer=2, vocab_size=VOCAB,
                                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    }[arch]()
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(config)
    base.config.use_cache = False
    targets = ["c_attn", "c_fc"] if arch == "gpt2" else ["q_proj", "v_proj", "down_proj"]
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                            init_lora_weights=False))  # non-zero B
    model.train()
    return model


def _batches():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # a padded row
    labels = ids.clone()
    labels[:, 0] = -100
    labels[0, :4] = -100  # a prompt that is not trained
    labels[mask == 0] = -100
    padded = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    lens = [5, 9, 4]  # one packed row, positions restart per example
    pids = torch.randint(3, VOCAB, (1, sum(lens)), generator=g)
    plabels = pids.clone()
    starts = [0, 5, 14]
    plabels[0, starts] = -100
    pos = torch.cat([torch.arange(n) for n in lens]).unsqueeze(0)
    packed = {"input_ids": pids, "position_ids": pos, "labels": plabels}
    return padded, packed


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "mistral"])
@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("items", [None, 17])
def test_loss_and_lora_gradients_equal_the_plain_path(arch, layout, items):
    model = _model(arch)
    padded, packed = _batches()
    inputs = padded if layout == "padded" else packed
    kwargs = {"num_items_in_batch": torch.tensor(items)} if items else {}
    plain = model(**inputs, **kwargs).loss
    plain.backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    chunked = compute_chunked_loss(model, inputs, torch.tensor(items) if items else None)
    chunked.backward()
    got = _grads(model)
    assert float(chunked) == pytest.approx(float(plain), abs=1e-5, rel=1e-5)
    assert set(got) == set(want) and any("lora_" in n for n in got)
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, atol=1e-5, rtol=1e-5, msg=name)


def test_many_small_chunks_give_the_same_loss():
    model = _model("llama")
    padded, _ = _batches()
    _causal, decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=padded["input_ids"],
                     attention_mask=padded["attention_mask"]).last_hidden_state
    one = chunked_lm_loss(hidden, head, padded["labels"], chunk=10_000)
    many = chunked_lm_loss(hidden, head, padded["labels"], chunk=3)
    assert float(many) == pytest.approx(float(one), abs=1e-6)


def test_the_rule():
    assert use_chunked_loss("auto", "causal-lm", 151_936)
    assert use_chunked_loss("auto", "causal-lm", 32_000)
    assert not use_chunked_loss("auto", "causal-lm", 16_000)
    assert use_chunked_loss("on", "causal-lm", 512)
    assert not use_chunked_loss("off", "causal-lm", 151_936)
    assert not use_chunked_loss("on", "sequence-classification", 151_936)


@pytest.mark.slow
def test_a_run_with_the_chunked_loss_trains_and_says_so(tmp_path):
    from graftlab.core.config import RunConfig
    from graftlab.core.train.events import Message
    from graftlab.core.train.session import TrainingSession

    messages: list[str] = []
    cfg = RunConfig.from_dict({
        "model": {"source": "demo:tiny-llama"}, "adapter": {"targets": ["*.q_proj"]},
        "data": {"path": "demo:stories", "max_length": 32},
        "training": {"max_steps": 3, "chunked_loss": "on", "output_dir": str(tmp_path / "r")}})
    result = TrainingSession(cfg, [lambda e: isinstance(e, Message) and
                                   messages.append(e.text)]).run()
    assert result.steps == 3 and result.adapter_dir is not None
    assert any(m.startswith("chunked loss: on") for m in messages)
