"""Tiny causal-LM and classifier adapters with non-zero B, and what plain transformers / PEFT
generate with them (the reference the Try engine, child and tab are compared with)."""

from __future__ import annotations

import warnings

PROMPT = "the cat sees"


def make_adapter(base_dir, out, seed, task="causal-lm", **lora):
    """A LoRA on the saved tiny model with random, non-zero B (so it changes the output)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForSequenceClassification if task != "causal-lm" else AutoModelForCausalLM
    torch.manual_seed(seed)
    base = auto.from_pretrained(str(base_dir))
    lora = {"r": 4, "lora_alpha": 64, "init_lora_weights": False} | lora
    if task != "causal-lm":
        lora.setdefault("task_type", "SEQ_CLS")
        lora.setdefault("target_modules", ["query", "value"])
    else:
        lora.setdefault("target_modules", ["q_proj", "v_proj", "o_proj"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(base, LoraConfig(**lora))
        if task != "causal-lm":  # a trained head: not the base's head
            with torch.no_grad():
                for name, p in pm.named_parameters():
                    if "modules_to_save" in name:
                        p.add_(torch.randn_like(p))
        pm.save_pretrained(str(out))
    return out


def plain_ids(model_dir, adapter_dir=None, prompt=PROMPT, n=12):
    """What plain transformers (and PeftModel.from_pretrained) generate greedily."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    inputs = tok(prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=n, do_sample=False,
                         pad_token_id=tok.pad_token_id or tok.eos_token_id)
    new = out[0, inputs["input_ids"].shape[1]:]
    return [int(t) for t in new], tok.decode(new, skip_special_tokens=True)
