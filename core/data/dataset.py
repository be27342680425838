"""Training data: load a file (or demo / hub dataset), tokenize it for the task, preview it.

``prepare`` gives the training session tokenized train/eval datasets with ``input_ids``,
``attention_mask`` and ``labels`` (-100 where no loss is taken); ``preview`` gives the GUI a few
examples token by token, marked trained or not, plus length statistics to choose
``data.max_length``. Loading lives in ``graftlab.core.data.sources``, format and column detection in
``graftlab.core.data.columns``, the per-format tokenization in ``graftlab.core.data.encode``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from graftlab.core.config import DataConfig
from graftlab.core.data.columns import (
    check_trainable_task,
    detect_format,
    resolve_columns,
    resolve_format,
)
from graftlab.core.data.encode import IGNORE, Encoder, label_key
from graftlab.core.data.sources import load_raw, resolve_data_path
from graftlab.core.errors import UserError

__all__ = [
    "LengthStats",
    "PreparedData",
    "PreviewExample",
    "detect_format",
    "load_raw",
    "make_collator",
    "prepare",
    "preview",
    "resolve_data_path",
]

PREVIEW_STATS_ROWS = 2000
HISTOGRAM_BINS = 20
_HELPERS = ["_full_length", "_trained", "_cut"]
_NOTHING_TO_TRAIN = {
    "text": "every text is empty",
    "prompt-completion": "every completion is empty",
    "chat": "no conversation has an assistant reply",
    "classification": "every text is empty",
}


@dataclass
class PreparedData:
    """Tokenized data ready for a Trainer (see :func:`prepare`)."""

    train: Any
    """``datasets.Dataset`` with input_ids, attention_mask, labels (list with -100, or class id)."""
    eval: Any | None
    """Held-out split from ``data.eval_fraction``, or None."""
    format: str
    """The resolved format: text, prompt-completion, chat or classification."""
    columns: dict[str, str]
    """Role -> column used, e.g. ``{"prompt": "prompt", "completion": "completion"}``."""
    num_raw: int
    """Rows read (after ``max_examples``)."""
    num_dropped: int
    """Rows left out: empty, no assistant reply, or no trained token left after truncation."""
    num_truncated: int
    """Rows longer than ``max_length`` (cut on the right), dropped ones included."""
    label_names: list[str] | None
    """Classification: class names, the class id is the index."""
    lengths: list[int]
    """Token length of each kept example (train and eval), in data order."""
    trained_tokens: int
    """Causal LM: tokens with a label in train. Classification: input tokens in train."""


@dataclass
class PreviewExample:
    """One example as the model sees it."""

    tokens: list[str]
    """Text of each token (a character split over several tokens shows on the first)."""
    trained: list[bool]
    """Whether each token is a training target (always False for classification)."""
    length: int
    """Tokens after truncation."""
    truncated: bool
    dropped: bool
    """Left out of training: empty, or nothing trained left after truncation."""
    label: str | None
    """Classification: the class name."""


@dataclass
class LengthStats:
    """Token lengths **before truncation**, so they show how far examples exceed max_length."""

    count: int
    min: int
    max: int
    mean: float
    p50: int
    p95: int
    histogram: list[tuple[int, int, int]]
    """(bin_start, bin_end, count) with bin_end exclusive."""
    num_truncated: int
    num_dropped: int


@dataclass
class _Plan:
    fmt: str
    columns: dict[str, str]
    encoder: Encoder
    label_names: list[str] | None


def _plan(
    cfg: DataConfig, raw: Any, tokenizer: Any, task: str, label_names: list[str] | None
) -> _Plan:
    where = cfg.path.strip()
    fmt = resolve_format(cfg, list(raw.column_names), task)
    columns = resolve_columns(cfg, fmt, raw, where)
    label_ids, class_names = None, None
    if fmt == "classification":
        label_names, class_names = _label_names(raw, columns["label"], where, label_names)
        label_ids = {name: i for i, name in enumerate(label_names)}
    encoder = Encoder(fmt, columns, tokenizer, cfg.max_length, where, label_ids, class_names)
    return _Plan(fmt, columns, encoder, label_names)


def _label_names(
    raw: Any, col: str, where: str, given: list[str] | None
) -> tuple[list[str], list[str] | None]:
    from datasets import ClassLabel

    feature = raw.features[col]
    class_names = list(feature.names) if isinstance(feature, ClassLabel) else None
    if given is not None:
        return [str(n) for n in given], class_names
    if class_names is not None:
        return class_names, class_names
    values = sorted(v for v in raw.unique(col) if v is not None)  # ints sort numerically
    names = [label_key(v) for v in values]
    if len(names) < 2:
        raise UserError(
            f"label column `{col}` of {where} has only "
            f"{'one value, ' + repr(names[0]) if names else 'null values'}; "
            "classification needs at least two classes.",
            field="data.label_column",
        )
    return names, None


def prepare(
    cfg: DataConfig, tokenizer: Any, task: str, seed: int = 0, label_names: list[str] | None = None
) -> PreparedData:
    """Load, tokenize, filter and split the data for training.

    Args:
        cfg: the ``data`` section of the run.
        tokenizer: the model's tokenizer.
        task: ``causal-lm`` or ``sequence-classification``.
        seed: seed of the train/eval split.
        label_names: classification: the model's class names (id = index), to map labels onto
            an existing head; by default the sorted unique labels of the data.

    Raises:
        UserError: bad file, columns or values, or no example left to train on.
    """
    raw = load_raw(cfg)
    plan = _plan(cfg, raw, tokenizer, task, label_names)
    encoded = raw.map(
        plan.encoder,
        batched=True,
        with_indices=True,
        remove_columns=raw.column_names,
        desc="Tokenizing",
    )
    full = encoded.data.column("_full_length").to_pylist()
    trained = encoded.data.column("_trained").to_pylist()
    cut = encoded.data.column("_cut").to_pylist()
    keep = [i for i, t in enumerate(trained) if t > 0]
    where, length = cfg.path.strip(), cfg.max_length
    if not keep:
        if any(cut):
            raise UserError(
                f"every example of {where} loses all its trained tokens when cut to "
                f"`data.max_length` = {length} tokens (the prompt alone is longer); raise "
                "`data.max_length` or shorten the prompts.",
                field="data.max_length",
            )
        raise UserError(
            f"no example of {where} has anything to train on ("
            f"{_NOTHING_TO_TRAIN[plan.fmt]}); check the data and `data.format`.",
            field="data.format",
        )
    kept = encoded.select(keep) if len(keep) < len(trained) else encoded
    train, held_out = kept, None
    if cfg.eval_fraction > 0:
        if len(keep) < 2:
            raise UserError(
                f"{where} has only {len(keep)} usable example, too few to hold out "
                "an eval split; set `data.eval_fraction` to 0 or add data.",
                field="data.eval_fraction",
            )
        parts = kept.train_test_split(test_size=cfg.eval_fraction, seed=seed)
        train, held_out = parts["train"], parts["test"].remove_columns(_HELPERS)
    if plan.fmt == "classification":
        trained_tokens = sum(min(f, length) for f in train["_full_length"])
    else:
        trained_tokens = sum(train["_trained"])
    return PreparedData(
        train=train.remove_columns(_HELPERS),
        eval=held_out,
        format=plan.fmt,
        columns=plan.columns,
        num_raw=len(raw),
        num_dropped=len(trained) - len(keep),
        num_truncated=sum(1 for f in full if f > length),
        label_names=plan.label_names,
        lengths=[min(full[i], length) for i in keep],
        trained_tokens=trained_tokens,
    )


def make_collator(tokenizer: Any, task: str, pad_to_multiple_of: int | None = None) -> Any:
    """The batch collator for `task`: pads inputs, and pads causal-LM labels with -100.

    A tokenizer without a pad token (GPT-2, Llama 3) gets ``pad_token = eos_token``. That is safe
    here: padding is masked by the attention mask and the labels carry their own -100 padding,
    so the model still learns to emit EOS (unlike with DataCollatorForLanguageModeling).
    """
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

    check_trainable_task(task)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(
                "the model's tokenizer has neither a pad token nor an EOS token, so "
                "batches cannot be padded; use a tokenizer that defines one.",
                field="model.source",
            )
        tokenizer.pad_token = tokenizer.eos_token
    if task == "sequence-classification":
        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
    return DataCollatorForSeq2Seq(
        tokenizer, padding=True, label_pad_token_id=IGNORE, pad_to_multiple_of=pad_to_multiple_of
    )


def preview(
    cfg: DataConfig, tokenizer: Any, task: str, n: int = 8
) -> tuple[list[PreviewExample], LengthStats, str]:
    """The first `n` examples token by token, length stats, and the resolved format.

    Only the first ``PREVIEW_STATS_ROWS`` (2000) rows are tokenized, without the datasets cache,
    so this stays quick on large files. Dropped examples are included and marked.

    Raises:
        UserError: as :func:`prepare`, except that all examples being dropped is shown, not raised.
    """
    raw = load_raw(cfg)
    plan = _plan(cfg, raw, tokenizer, task, None)
    m = min(len(raw), PREVIEW_STATS_ROWS)
    out = plan.encoder(raw[:m], list(range(m)))
    examples = []
    for i in range(min(n, m)):
        ids, labels = out["input_ids"][i], out["labels"][i]
        causal = isinstance(labels, list)
        examples.append(
            PreviewExample(
                tokens=token_texts(tokenizer, ids),
                trained=[x != IGNORE for x in labels] if causal else [False] * len(ids),
                length=len(ids),
                truncated=out["_full_length"][i] > cfg.max_length,
                dropped=out["_trained"][i] == 0,
                label=None if causal or plan.label_names is None else plan.label_names[labels],
            )
        )
    stats = length_stats(out["_full_length"], out["_trained"], cfg.max_length)
    return examples, stats, plan.fmt


def token_texts(tokenizer: Any, ids: list[int]) -> list[str]:
    """Decode token by token; bytes of one character split over tokens go on the first token."""
    texts: list[str] = []
    pending: list[int] = []
    for token in ids:
        pending.append(token)
        text = tokenizer.decode(
            pending, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        if text.endswith("\ufffd") and len(pending) < 4:
            continue  # an incomplete UTF-8 sequence: wait for the rest of the character
        texts.extend([text] + [""] * (len(pending) - 1))
        pending = []
    if pending:
        texts.extend(
            [tokenizer.decode(pending, skip_special_tokens=False)] + [""] * (len(pending) - 1)
        )
    return texts


def length_stats(full_lengths: list[int], trained: list[int], max_length: int) -> LengthStats:
    """Stats over the non-empty examples' untruncated lengths (empty ones only count as dropped)."""
    lengths = sorted(f for f in full_lengths if f > 0)
    dropped = sum(1 for t in trained if t == 0)
    truncated = sum(1 for f in full_lengths if f > max_length)
    if not lengths:
        return LengthStats(0, 0, 0, 0.0, 0, 0, [], truncated, dropped)
    lo, hi = lengths[0], lengths[-1]
    width = max(1, math.ceil((hi - lo + 1) / HISTOGRAM_BINS))
    counts = [0] * ((hi - lo) // width + 1)
    for f in lengths:
        counts[(f - lo) // width] += 1
    histogram = [(lo + k * width, lo + (k + 1) * width, c) for k, c in enumerate(counts)]

    def rank(q: float) -> int:  # nearest-rank percentile
        return lengths[max(0, math.ceil(q * len(lengths)) - 1)]

    return LengthStats(
        count=len(lengths),
        min=lo,
        max=hi,
        mean=sum(lengths) / len(lengths),
        p50=rank(0.5),
        p95=rank(0.95),
        histogram=histogram,
        num_truncated=truncated,
        num_dropped=dropped,
    )
