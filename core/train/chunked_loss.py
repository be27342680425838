"""Chunked cross-entropy for causal LMs: the [tokens × vocabulary] logits never exist at once.

The plain path (transformers' ``ForCausalLMLoss``) computes the logits of every token, upcasts
them to fp32 and takes the cross-entropy; with a 151,936-token vocabulary and 4,096 tokens per
batch that is 2.5 GB per fp32 tensor, and three such tensors are alive at the start of
backward. Here the decoder's last hidden state goes through the LM head a chunk of tokens at a
time, under ``torch.utils.checkpoint``: the forward keeps only each chunk's summed loss, and the
backward recomputes one chunk's logits, takes their gradient and frees them before the next.

The loss is the plain path's exactly: labels shifted by one (``labels[..., 1:]`` predicts from
position ``t``), ``ignore_index`` -100 left out (packing writes -100 at every example's first
token, so nothing crosses an example boundary), the sum divided by the Trainer's
``num_items_in_batch`` when given (gradient accumulation), else by the number of trained
tokens. The LM head is called as a module, so a LoRA adapter on it is included.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100
CHUNK_BYTES = 256 * 2**20  # fp32 logits of one chunk
MIN_CHUNK = 128
AUTO_MIN_VOCAB = 32_000  # `training.chunked_loss: auto` turns it on from this vocabulary size


def chunk_tokens(vocab: int) -> int:
    """Tokens per chunk: about CHUNK_BYTES of fp32 logits."""
    return max(MIN_CHUNK, CHUNK_BYTES // (4 * max(vocab, 1)))


def use_chunked_loss(mode: str, task: str, vocab: int) -> bool:
    """The one rule for `training.chunked_loss` (training, the memory estimate and plan)."""
    if task != "causal-lm" or mode == "off":
        return False
    return mode == "on" or vocab >= AUTO_MIN_VOCAB


def unsupported_reason(causal_lm: Any) -> str | None:
    """Why a model's loss cannot be chunked (logit soft-capping or scaling after the head)."""
    config = getattr(causal_lm, "config", None)
    for key in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale"):
        if getattr(config, key, None) not in (None, 1, 1.0):
            return f"its config sets {key}, applied to the logits after the LM head"
    if causal_lm.get_output_embeddings() is None:
        return "it has no LM head"
    return None


def _chunk_loss(lm_head: Any, hidden: Any, labels: Any) -> Any:
    from torch.nn import functional as F  # noqa: N812

    logits = lm_head(hidden).float()
    return F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")


def chunked_lm_loss(hidden: Any, lm_head: Any, labels: Any, num_items_in_batch: Any = None,
                    chunk: int | None = None) -> Any:
    """The causal-LM loss from the decoder's last hidden state [batch, seq, hidden]."""
    import torch
    from torch.nn import functional as F  # noqa: N812
    from torch.utils.checkpoint import checkpoint

    shift = F.pad(labels, (0, 1), value=IGNORE)[..., 1:]  # as ForCausalLMLoss shifts
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    flat_y = shift.reshape(-1).to(flat_h.device)
    keep = flat_y != IGNORE  # untrained positions need no logits at all
    flat_h, flat_y = flat_h[keep], flat_y[keep]
    vocab = lm_head.out_features if hasattr(lm_head, "out_features") else \
        lm_head.weight.shape[0]
    step = chunk or chunk_tokens(vocab)
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, flat_h.shape[0], step):
        total = total + checkpoint(_chunk_loss, lm_head, flat_h[i:i + step],
                                   flat_y[i:i + step], use_reentrant=False)
    if num_items_in_batch is not None:
        denom = num_items_in_batch
        if torch.is_tensor(denom):
            denom = denom.to(total.device)
        return total / denom
    return total / keep.sum().clamp(min=1)


def decoder_and_head(model: Any) -> tuple[Any, Any, Any]:
    """(the CausalLM inside a PEFT model, its decoder stack, its LM head)."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(causal, causal.base_model_prefix)
    return causal, decoder, causal.get_output_embeddings()


def compute_chunked_loss(model: Any, inputs: dict[str, Any],
                         num_items_in_batch: Any = None) -> Any:
    """The Trainer's compute_loss for a causal LM, with the chunked cross-entropy."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    _causal, decoder, head = decoder_and_head(model)
    inputs.pop("use_cache", None)
    out = decoder(**inputs, use_cache=False)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return chunked_lm_loss(hidden, head, labels, num_items_in_batch)
