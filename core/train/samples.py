"""What a model makes of a prompt: greedy text for causal LMs, the predicted label for classifiers.

Used for the samples a training run writes every ``training.sample_every`` steps, and reusable by
anything that needs one deterministic answer from a (PEFT) model. The model is switched to eval
mode with gradients off for the call and put back in the mode it was in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def inference_mode(model: Any) -> Iterator[None]:
    """Eval mode (no dropout) and no autograd for the block; the previous mode is restored."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def generate_greedy(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 48) -> str:
    """The greedy continuation of `prompt`: only the new tokens, special tokens skipped.

    Args:
        model: a causal LM (a ``PeftModel`` generates with its active adapter).
        tokenizer: the model's tokenizer.
        prompt: the text to continue (encoded as the tokenizer does by default, BOS included).
        max_new_tokens: the most tokens generated; generation also ends at EOS.

    Returns:
        The decoded continuation.
    """
    from transformers import GenerationConfig

    enc = tokenizer(prompt, return_tensors="pt")
    device = _device(model)
    ids = enc["input_ids"].to(device)
    mask = enc["attention_mask"].to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
        tokenizer.eos_token_id
    # A fresh config: the checkpoint's own generation_config may ask for sampling.
    gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                           pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                           use_cache=True)
    with inference_mode(model):
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def predict_label(model: Any, tokenizer: Any, text: str) -> tuple[str, float]:
    """A classifier's most likely label for `text` (its name from ``config.id2label``) and
    its probability."""
    import torch

    enc = tokenizer(text, return_tensors="pt", truncation=True)
    device = _device(model)
    with inference_mode(model):
        logits = model(**{k: v.to(device) for k, v in enc.items()}).logits[0]
    probs = torch.softmax(logits.float(), dim=-1)
    best = int(probs.argmax())
    id2label = getattr(model.config, "id2label", None) or {}
    return str(id2label.get(best, best)), float(probs[best])


def sample_text(model: Any, tokenizer: Any, task: str, prompt: str,
                max_new_tokens: int) -> str:
    """One sample for the training log: a continuation, or ``label (probability)``."""
    if task == "sequence-classification":
        label, prob = predict_label(model, tokenizer, prompt)
        return f"{label} ({prob:.2f})"
    return generate_greedy(model, tokenizer, prompt, max_new_tokens)
