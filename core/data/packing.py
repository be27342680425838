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


def choose_collator(model: Any, tokenizer: Any, task: str, mode: str) -> tuple[Any, str | None]:
    """The collator for a run, and a sentence for the run log saying whether batches are packed.

    Args:
        model: the model that will be trained (LoRA attached or not), on its training device.
        tokenizer: its tokenizer (padding collators need its pad token).
        task: ``causal-lm`` or ``sequence-classification``.
        mode: ``training.packing``: ``auto`` packs when :func:`check_packing` shows it is exact,
            ``on`` requires it (a UserError otherwise), ``off`` always pads.

    Raises:
        UserError: ``on`` with a classifier, or with a model where packing is not exact.
    """
    from graftlab.core.data.dataset import make_collator

    padded = make_collator(tokenizer, task)
    if mode == "off":
        return padded, None
    if task != "causal-lm":
        if mode == "on":
            raise UserError("`training.packing: on` applies to causal-lm training only; a "
                            "classifier pads its batches. Set `training.packing: auto`.",
                            field="training.packing")
        return padded, None
    check = check_packing(model)
    if check.exact:
        return PackedCollator(), (f"packing: on, padding-free batches (checked exact on "
                                  f"{check.detail}: relative logit error {check.error:.1e}, leak "
                                  f"{check.leak:.1e})")
    if mode == "on":
        raise UserError(f"`training.packing: on`, but packed batches are not exact for this "
                        f"model ({check.detail}: relative logit error {check.error:.1e}, leak "
                        f"{check.leak:.1e}, tolerance {check.tolerance:.0e}); set "
                        "`training.packing: auto` or off.",
                        field="training.packing")
    return padded, (f"packing: off, batches are padded (packed batches were not exact on "
                    f"{check.detail}: relative logit error {check.error:.1e}, leak "
                    f"{check.leak:.1e})")
