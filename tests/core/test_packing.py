"""Padding-free packing: the loss (and the trained adapter) equal those of padded batches, for
each architecture where packing is enabled; refused where it is not exact."""

from __future__ import annotations

import random

import pytest
from graftlab.core.config import RunConfig
from graftlab.core.data.encode import IGNORE
from graftlab.core.errors import UserError

ARCHS = ["llama", "qwen2", "gpt2"]


def _model(arch: str, **config_kwargs):
    import torch
    from graftlab.core.model.demo import build_config
    from transformers import AutoModelForCausalLM

    config = build_config(arch, 97)
    for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout"):
        if hasattr(config, key):
            setattr(config, key, 0.0)  # dropout draws differ between layouts
    for key, value in config_kwargs.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


def _examples(n: int = 12, seed: int = 0) -> list[dict]:
    """Causal examples of skewed lengths, some with a masked prompt, labels[0] = -100."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        length = rng.choice([3, 5, 8, 13, 40])
        ids = [rng.randrange(3, 97) for _ in range(length)]
        labels = list(ids)
        prompt = rng.randrange(1, length) if i % 3 == 0 else 1
        labels[:prompt] = [IGNORE] * prompt
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "labels": labels})
    return rows


_TOKENIZER = []


def _Tok():  # noqa: N802  (reads like the class it stands for)
    """The demo tokenizer (pad id 0): the padding collator needs a real one."""
    if not _TOKENIZER:
        from graftlab.core.model.demo import build_tokenizer

        _TOKENIZER.append(build_tokenizer(128))
    return _TOKENIZER[0]


def _train(arch: str, collator, tmp_path, steps: int = 3):
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    model = _model(arch)
    targets = ["c_attn", "c_fc"] if arch == "gpt2" else ["q_proj", "v_proj", "down_proj"]
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                             fan_in_fan_out=arch == "gpt2",
                                             init_lora_weights="gaussian"))
    args = TrainingArguments(str(tmp_path), max_steps=steps, per_device_train_batch_size=3,
                             gradient_accumulation_steps=2, learning_rate=1e-2,
                             logging_steps=1, report_to="none", disable_tqdm=True,
                             save_strategy="no", use_cpu=True, seed=0,
                             remove_unused_columns=False, label_names=["labels"])
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(_examples()),
                      data_collator=collator)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    weights = {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}
    return losses, weights


@pytest.mark.parametrize("arch", ARCHS)
def test_check_passes_where_packing_is_enabled(arch):
    from graftlab.core.data.packing import check_packing

    check = check_packing(_model(arch))
    assert check.exact, check
    assert check.error < 1e-5 and check.leak == 0.0


@pytest.mark.parametrize("arch", ARCHS)
def test_packed_batch_loss_equals_padded_loss(arch):
    """One forward: packed and padded batches of the same examples give the same loss, with
    the loss normalised by Trainer's count of labels[..., 1:] != -100 in both layouts."""
    import torch
    from graftlab.core.data.dataset import make_collator
    from graftlab.core.data.packing import PackedCollator

    model = _model(arch).eval()
    feats = _examples()
    padded = make_collator(_Tok(), "causal-lm")(feats)
    packed = PackedCollator()(feats)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    assert packed["input_ids"].numel() == sum(len(f["input_ids"]) for f in feats)
    n_padded = int((padded["labels"][:, 1:] != IGNORE).sum())
    n_packed = int((packed["labels"][:, 1:] != IGNORE).sum())
    assert n_padded == n_packed  # Trainer's num_items_in_batch is the same
    with torch.no_grad():
        loss_padded = model(**padded, num_items_in_batch=n_padded).loss
        loss_packed = model(**packed, num_items_in_batch=n_packed).loss
    assert abs(float(loss_padded) - float(loss_packed)) < 1e-5 * float(loss_padded)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
@pytest.mark.parametrize("arch", ARCHS)
def test_training_on_packed_batches_equals_padded(arch, tmp_path):
    """Three optimizer steps with gradient accumulation 2: same losses, same adapter."""
    from graftlab.core.data.dataset import make_collator
    from graftlab.core.data.packing import PackedCollator

    losses_pad, w_pad = _train(arch, make_collator(_Tok(), "causal-lm"), tmp_path / "pad")
    losses_pack, w_pack = _train(arch, PackedCollator(), tmp_path / "pack")
    assert losses_pad == pytest.approx(losses_pack, rel=1e-5)
    assert w_pad.keys() == w_pack.keys()
    for key in w_pad:
        assert float((w_pad[key] - w_pack[key]).abs().max()) < 1e-5, key


def test_use_cache_would_leak_without_the_collator_flag():
    """Why PackedCollator sends use_cache=False: with a cache, the mask ignores packing."""
    import torch
    from graftlab.core.data.packing import PackedCollator

    model = _model("llama", use_cache=True).eval()
    feats = _examples()
    batch = PackedCollator()(feats)
    with torch.no_grad():
        right = model(**batch).loss
        batch["use_cache"] = True
        wrong = model(**batch).loss
    assert abs(float(right) - float(wrong)) > 1e-4


def _leaky_model():
    """OPT in transformers 5 takes positions from the attention mask, not position_ids, so
    packed examples see wrong positions and each other: packing must be refused."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("opt", hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, ffn_dim=64, vocab_size=97,
                                  word_embed_proj_dim=32)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


SKEWED = [12, 300, 40, 9, 150, 20, 64, 500]


def _decision(mode, task="causal-lm", lengths=None, batch=4, device="cpu", attn="sdpa"):
    """The packing rule with a small Llama's cost coefficients (hidden 64, 2 layers)."""
    from graftlab.core.data.packing import decide_packing

    linear = 2.0 * (2 * (4 * 64 * 64 + 3 * 64 * 172) + 64 * 97)
    return decide_packing(mode, task, SKEWED if lengths is None else lengths, batch, linear,
                          4.0 * 64 * 2, attn, device)


def test_auto_packs_skewed_lengths_and_pads_uniform_ones():
    """Packing by cost: skewed lengths save padding; uniform lengths have none to save and
    SDPA without a variable-length kernel would pay (Σl)² attention; flash-attention's varlen
    kernel on a GPU has no cross term."""
    skewed = _decision("auto")
    assert skewed.mode == "on" and "less work" in skewed.reason
    assert skewed.packed_cost < skewed.padded_cost
    uniform = _decision("auto", lengths=[128] * 64, batch=8)
    assert uniform.mode == "off" and "padded batches cost less" in uniform.reason
    assert "sdpa attention on cpu" in uniform.reason
    flash = _decision("auto", lengths=[128] * 64, batch=8, device="cuda",
                      attn="flash_attention_2")
    assert flash.packed_cost == pytest.approx(flash.padded_cost)  # no padding, no cross term
    assert flash.mode == "off"  # nothing saved either
    long_docs = _decision("auto", lengths=[2048, 1900, 2048, 1500] * 8, batch=2)
    assert long_docs.mode == "off"  # long, similar documents: the cross term dominates
    assert _decision("auto", batch=1).mode == "off"
    assert _decision("on", lengths=[128] * 8).mode == "on"  # asked for: packed (if exact)
    assert _decision("off").mode == "off"


def test_packing_refused_where_not_exact():
    from graftlab.core.data.packing import PackedCollator, check_packing, choose_collator

    model = _leaky_model()
    check = check_packing(model)
    assert not check.exact and check.leak > 1e-3
    collator, note = choose_collator(model, _Tok(), "causal-lm", _decision("auto"))
    assert not isinstance(collator, PackedCollator)
    assert note is not None and note.startswith("packing: off")
    with pytest.raises(UserError, match="not exact"):
        choose_collator(model, _Tok(), "causal-lm", _decision("on"))


def test_choose_collator_modes():
    from graftlab.core.data.packing import PackedCollator, choose_collator

    model = _model("llama")
    collator, note = choose_collator(model, _Tok(), "causal-lm", _decision("auto"))
    assert isinstance(collator, PackedCollator) and "checked exact" in note
    collator, note = choose_collator(model, _Tok(), "causal-lm", _decision("off"))
    assert not isinstance(collator, PackedCollator) and "training.packing: off" in note
    collator, _ = choose_collator(model, _Tok(), "sequence-classification",
                                  _decision("auto", "sequence-classification"))
    assert not isinstance(collator, PackedCollator)
    with pytest.raises(UserError, match="causal-lm"):
        _decision("on", "sequence-classification")
    assert model.training  # the check restores the training mode it found


def test_run_yaml_packing_and_compile_switches():
    cfg = RunConfig.from_dict({"training": {"packing": "off", "torch_compile": True}})
    assert cfg.training.packing == "off" and cfg.training.torch_compile
    assert RunConfig().training.packing == "auto" and not RunConfig().training.torch_compile
    with pytest.raises(UserError, match="training.packing"):
        RunConfig.from_dict({"training": {"packing": "yes"}})
    with pytest.raises(UserError, match="torch_compile"):
        RunConfig.from_dict({"training": {"torch_compile": "fast"}})
