"""Padding-free packing of causal-LM batches: the same loss as padding, without the padding work.

A plain script pads every batch to its longest example, so on length-skewed data most of the
compute goes into padding. Here each batch holds exactly the examples the padded batch would
hold (same sampler, same order, same optimisation), but they are concatenated into one row with
``position_ids`` restarting at 0 for each example (transformers' ``DataCollatorWithFlattening``).
transformers 5 turns restarting position ids into a block-diagonal causal mask
(``masking_utils.find_packed_sequence_indices``) for sdpa and eager attention; flash-attention
uses them as variable-length boundaries.

Three things make the packed loss equal the padded one (tests/core/test_packing.py):

- Labels: every causal example has ``labels[0] = -100`` (graftlab.core.data.encode), and the
  flattening collator writes -100 at each example's first position too, so the last token of one
  example never predicts the first token of the next. Trainer's ``num_items_in_batch`` counts
  ``labels[..., 1:] != -100``: the same number in both layouts, so the loss is normalised alike.
- The KV cache: transformers only looks for packed sequences when no cache is passed, and with
  ``config.use_cache = True`` (most configs) the model builds a ``DynamicCache`` even in training.
  Attention then silently crosses example boundaries (the loss was off by 2e-3..3e-2 on tiny
  Llama/Qwen2/GPT-2 models). Each packed batch therefore carries ``use_cache=False``.
- The model must honour ``position_ids`` and the packed mask. That is checked, not assumed:
  :func:`check_packing` runs the actual model (weights, dtype, attention implementation) on
  three short sequences, packed and one by one, before training starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graftlab.core.data.encode import IGNORE
from graftlab.core.errors import UserError

# Largest |packed - alone| logit difference, relative to the logits' scale, still counted as
# exact. fp32 kernels differ by ~1e-6 between layouts; bf16/fp16 by rounding (~1e-2); a leak
# across examples or ignored position ids gives differences of order 1e-1 and above.
TOLERANCE = {"float32": 1e-4, "float64": 1e-8, "bfloat16": 3e-2, "float16": 1e-2}
_PROBE_LENGTHS = (5, 9, 4)


@dataclass(frozen=True)
class PackingCheck:
    """The outcome of :func:`check_packing`."""

    exact: bool
    """Whether packed logits match the one-example-at-a-time logits, and nothing leaks."""
    error: float
    """Largest |packed - alone| logit difference, relative to the largest logit (inf: failed)."""
    leak: float
    """Largest change of the later examples' logits when only the first example's tokens
    change, relative as above: exactly 0 with a block-diagonal mask, whatever the dtype."""
    tolerance: float
    """The threshold for `error`, from the model's dtype (`leak` must stay below 1/100 of it)."""
    detail: str
    """What was checked, for the run log: model type, attention implementation, dtype."""


class PackedCollator:
    """Flattens a causal-LM batch into one row with restarting ``position_ids``.

    Sends ``use_cache=False`` with every batch: see the module docstring (a KV cache turns the
    packed-sequence mask off).
    """

    def __init__(self) -> None:
        from transformers import DataCollatorWithFlattening

        self._flatten = DataCollatorWithFlattening(return_position_ids=True,
                                                   separator_id=IGNORE)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._flatten([{"input_ids": f["input_ids"], "labels": f["labels"]}
                               for f in features])
        batch["use_cache"] = False
        return dict(batch)


def _relative_error(packed: Any, alone: Any) -> float:
    scale = float(alone.abs().max()) or 1.0
    return float((packed - alone).abs().max()) / scale


def check_packing(model: Any, lengths: tuple[int, ...] = _PROBE_LENGTHS) -> PackingCheck:
    """Run `model` on a few short random sequences, packed into one row and one by one.

    Two errors are measured: packed vs alone (position ids honoured, no leak), and the change
    of the later examples' packed logits when only the first example's tokens change. The
    second is a pure leak test: with a block-diagonal mask it is exactly zero even in bf16,
    where rounding would hide a small leak in the first (a tiny random Bloom leaks by 1e-2).
    The model is put in eval mode (no dropout) for the check and restored afterwards; LoRA
    adapters may already be attached (their B factors start at zero). Costs a handful of
    forward passes over ``sum(lengths)`` tokens.
    """
    import torch

    config = model.config
    model_type = getattr(config, "model_type", type(model).__name__)
    attn = getattr(config, "_attn_implementation", None) or "default"
    param = next(model.parameters())
    dtype = str(param.dtype).replace("torch.", "")
    tolerance = TOLERANCE.get(dtype, 3e-2)
    detail = f"{model_type}, {attn} attention, {dtype}"
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    if vocab < 2:
        return PackingCheck(False, float("inf"), float("inf"), tolerance,
                            detail + ": no vocab_size")
    gen = torch.Generator().manual_seed(1234)
    seqs = [torch.randint(0, vocab, (n,), generator=gen) for n in lengths]
    other_first = torch.randint(0, vocab, (lengths[0],), generator=gen)
    device = param.device
    positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0).to(device)

    def run(ids: Any, pos: Any | None = None) -> Any:
        out = model(input_ids=ids.unsqueeze(0).to(device), position_ids=pos, use_cache=False)
        return out.logits[0].float()

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            packed = run(torch.cat(seqs), positions)
            changed = run(torch.cat([other_first, *seqs[1:]]), positions)
            error, start = 0.0, 0
            for seq in seqs:
                alone = run(seq)
                error = max(error, _relative_error(packed[start:start + len(seq)], alone))
                start += len(seq)
            later = slice(lengths[0], None)
            leak = _relative_error(changed[later], packed[later])
    except Exception as exc:  # an architecture that rejects position_ids/use_cache: no packing
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return PackingCheck(False, float("inf"), float("inf"), tolerance, f"{detail}: {first}")
    finally:
        model.train(was_training)
    exact = error <= tolerance and leak <= tolerance / 100  # a correct mask gives leak 0.0
    return PackingCheck(exact, error, leak, tolerance, detail)


def choose_collator(model: Any, tokenizer: Any, task: str,
                    decision: PackingDecision) -> tuple[Any, str | None]:
    """The collator for a run, and a sentence for the run log saying whether batches are packed
    and why.

    Args:
        model: the model that will be trained (LoRA attached or not), on its training device.
        tokenizer: its tokenizer (padding collators need its pad token).
        task: ``causal-lm`` or ``sequence-classification``.
        decision: what :func:`decide_packing` chose from ``training.packing`` and the data.
            Packing is used only when :func:`check_packing` also shows it is exact.

    Raises:
        UserError: ``on`` with a model where packing is not exact.
    """
    from graftlab.core.data.dataset import make_collator

    padded = make_collator(tokenizer, task)
    if decision.mode == "off" or task != "causal-lm":
        return padded, decision.reason
    check = check_packing(model)
    if check.exact:
        return PackedCollator(), (f"{decision.reason}; checked exact on {check.detail}: "
                                  f"relative logit error {check.error:.1e}, leak "
                                  f"{check.leak:.1e}")
    if decision.requested == "on":
        raise UserError(f"`training.packing: on`, but packed batches are not exact for this "
                        f"model ({check.detail}: relative logit error {check.error:.1e}, leak "
                        f"{check.leak:.1e}, tolerance {check.tolerance:.0e}); set "
                        "`training.packing: auto` or off.",
                        field="training.packing")
    return padded, (f"packing: off, batches are padded (packed batches were not exact on "
                    f"{check.detail}: relative logit error {check.error:.1e}, leak "
                    f"{check.leak:.1e})")


# ---- packing by cost ---------------------------------------------------------------------------
PACK_MARGIN = 0.05  # pack only when it saves at least this share of the padded batches' work
_COST_SAMPLE = 20_000  # example lengths the decision looks at (a seeded sample of the data)


@dataclass(frozen=True)
class PackingDecision:
    """What `training.packing` resolves to for this data, model and device, and why."""

    mode: str  # "on" or "off"
    reason: str
    padded_cost: float = 0.0
    packed_cost: float = 0.0
    requested: str = "auto"  # training.packing as written


def varlen_attention(attn_implementation: str | None, device: str) -> bool:
    """Whether attention over a packed row costs Σ lᵢ² (a variable-length kernel) instead of
    (Σ lᵢ)²: flash-attention 2/3 on a GPU. SDPA and eager attention have no such kernel and
    compute the whole packed row's scores, masking the cross terms afterwards."""
    return device == "cuda" and "flash" in (attn_implementation or "")


def batch_costs(lengths: list[int], batch_size: int, linear_per_token: float,
                attention_per_pair: float, varlen: bool, seed: int = 0) -> tuple[float, float]:
    """Forward work (FLOPs) of all batches, padded and packed, for the Trainer's random batches.

    Padded: every example costs the batch's longest, in the linear layers and in attention
    (b·m tokens, b·m² query-key pairs). Packed: the real tokens only (Σl), but attention pays
    (Σl)² pairs without a variable-length kernel. Backward scales both alike."""
    import random

    lens = list(lengths)
    rng = random.Random(seed)
    if len(lens) > _COST_SAMPLE:
        lens = rng.sample(lens, _COST_SAMPLE)
    rng.shuffle(lens)
    padded = packed = 0.0
    for i in range(0, len(lens), batch_size):
        batch = lens[i:i + batch_size]
        longest, total = max(batch), sum(batch)
        padded += len(batch) * longest * linear_per_token \
            + len(batch) * longest ** 2 * attention_per_pair
        pairs = sum(x * x for x in batch) if varlen else total ** 2
        packed += total * linear_per_token + pairs * attention_per_pair
    return padded, packed


def decide_packing(mode: str, task: str, lengths: list[int] | None, batch_size: int,
                   linear_per_token: float, attention_per_pair: float,
                   attn_implementation: str | None, device: str,
                   seed: int = 0) -> PackingDecision:
    """The one rule for `training.packing`, used by training and by `graftlab plan`.

    ``off`` pads; ``on`` packs (its exactness is still checked on the loaded model); ``auto``
    packs a causal LM only when packed batches do less work than padded ones on this device
    and attention implementation (see :func:`batch_costs`): on uniform lengths padding costs
    nothing and packing would only add attention, on skewed lengths packing saves the padding.
    """
    if mode == "off":
        return PackingDecision("off", "packing: off (training.packing: off), batches are padded",
                               requested="off")
    if task != "causal-lm":
        if mode == "on":
            raise UserError("`training.packing: on` applies to causal-lm training only; a "
                            "classifier pads its batches. Set `training.packing: auto`.",
                            field="training.packing")
        return PackingDecision("off", "packing: off, a classifier pads its batches")
    if mode == "on":
        return PackingDecision("on", "packing: on (training.packing: on)", requested="on")
    if not lengths or batch_size <= 1:
        return PackingDecision("off", "packing: off, one example per batch has no padding "
                               "to save")
    varlen = varlen_attention(attn_implementation, device)
    padded, packed = batch_costs(lengths, batch_size, linear_per_token, attention_per_pair,
                                 varlen, seed)
    kernel = (f"{attn_implementation} attention on {device}, a variable-length kernel" if varlen
              else f"{attn_implementation or 'sdpa'} attention on {device}, which attends "
              "over the whole packed row")
    saved = 1 - packed / padded if padded else 0.0
    if saved >= PACK_MARGIN:
        return PackingDecision("on", f"packing: auto chose on, packed batches do {saved:.0%} "
                               f"less work than padded ones ({kernel})", padded, packed)
    effect = f"save only {saved:.0%}" if saved > 0 else f"add {-saved:.0%}"
    return PackingDecision("off", f"packing: auto chose off, padded batches cost less "
                           f"(packing would {effect} of the work; {kernel})", padded, packed)
