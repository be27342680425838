"""Task metrics on an eval split: loss and perplexity for causal LMs; accuracy, macro-F1, counts
and the confusion matrix for classifiers. The same function scores the adapted model during
training, the base model (adapters disabled) before it, and ``graftlab eval``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any

from graftlab.core.data.encode import IGNORE


@dataclass
class Scores:
    """One evaluation. Causal LM: loss per trained token and perplexity. Classification: mean
    cross-entropy per example as ``loss``, plus the class metrics."""

    task: str
    n: int
    loss: float
    perplexity: float | None = None
    accuracy: float | None = None
    f1_macro: float | None = None
    labels: list[str] | None = None
    counts: list[int] | None = None
    """Classification: examples of each true class."""
    confusion: list[list[int]] | None = None
    """Classification: confusion[true][predicted]."""

    def to_json(self) -> dict[str, Any]:
        """The fields ``graftlab eval --json`` prints for this task."""
        if self.task == "causal-lm":
            return {"task": self.task, "n": self.n, "loss": self.loss,
                    "perplexity": self.perplexity}
        return {k: v for k, v in asdict(self).items() if k != "perplexity"}

    def event_fields(self) -> dict[str, Any]:
        """Keyword arguments for an ``Eval`` event (beside step and base)."""
        return {"eval_loss": self.loss, "task": self.task, "n": self.n,
                "perplexity": self.perplexity, "accuracy": self.accuracy,
                "f1_macro": self.f1_macro, "labels": self.labels, "counts": self.counts,
                "confusion": self.confusion}


def perplexity(loss: float) -> float:
    """exp(loss); inf when that overflows a float."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def classification_metrics(y_true: list[int], y_pred: list[int],
                           num_labels: int) -> dict[str, Any]:
    """Accuracy, macro-F1, true counts per class and the confusion matrix.

    Macro-F1 averages the per-class F1 = 2·TP / (2·TP + FP + FN) over the classes that occur
    among the true or the predicted labels (a class absent from both has no defined F1; this is
    scikit-learn's ``f1_score(average="macro")`` without a ``labels`` argument).
    """
    confusion = [[0] * num_labels for _ in range(num_labels)]
    for t, p in zip(y_true, y_pred, strict=True):
        confusion[t][p] += 1
    n = len(y_true)
    correct = sum(confusion[i][i] for i in range(num_labels))
    f1s = []
    for c in range(num_labels):
        tp = confusion[c][c]
        fn = sum(confusion[c]) - tp
        fp = sum(confusion[r][c] for r in range(num_labels)) - tp
        if tp + fn + fp:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": correct / n if n else 0.0,
            "f1_macro": sum(f1s) / len(f1s) if f1s else 0.0,
            "counts": [sum(row) for row in confusion], "confusion": confusion}


@contextmanager
def base_only(model: Any) -> Iterator[None]:
    """The base model: every adapter (and saved head copy) of a ``PeftModel`` disabled."""
    with model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext():
        yield


def label_names_of(model: Any, num_labels: int) -> list[str]:
    id2label = getattr(model.config, "id2label", None) or {}
    return [str(id2label.get(i, id2label.get(str(i), i))) for i in range(num_labels)]


def evaluate(model: Any, dataset: Any, collator: Any, task: str, batch_size: int = 8,
             base: bool = False) -> Scores:
    """Score `model` on a tokenized dataset (``prepare``'s eval split or a whole file).

    Runs in eval mode without gradients and restores the previous mode. Causal LM: the loss is
    the sum of the next-token cross-entropies over every label != -100 of the split divided by
    their count (one mean over all trained tokens, not a mean of batch means).

    Args:
        model: the model (a ``PeftModel`` or a plain transformers model).
        dataset: rows with input_ids, attention_mask and labels.
        collator: pads a list of rows into a batch (``make_collator``).
        task: ``causal-lm`` or ``sequence-classification``.
        batch_size: rows per forward pass.
        base: score with the adapters disabled.
    """
    from graftlab.core.train.samples import inference_mode
    from torch.nn.functional import cross_entropy

    device = next(model.parameters()).device
    total, count = 0.0, 0
    y_true: list[int] = []
    y_pred: list[int] = []
    rows = [dataset[i] for i in range(len(dataset))]
    with inference_mode(model), base_only(model) if base else nullcontext():
        for start in range(0, len(rows), batch_size):
            batch = collator(rows[start:start + batch_size])
            batch = {k: v.to(device) for k, v in batch.items()
                     if k in ("input_ids", "attention_mask", "labels")}
            labels = batch.pop("labels")
            logits = model(**batch).logits.float()
            if task == "causal-lm":
                shift = labels[:, 1:]  # token t predicts token t+1, as the model's own loss
                lg = logits[:, :-1].reshape(-1, logits.shape[-1])
                total += float(cross_entropy(lg, shift.reshape(-1), ignore_index=IGNORE,
                                               reduction="sum"))
                count += int((shift != IGNORE).sum())
            else:
                total += float(cross_entropy(logits, labels, reduction="sum"))
                count += int(labels.numel())
                y_true.extend(int(x) for x in labels)
                y_pred.extend(int(x) for x in logits.argmax(-1))
    loss = total / count if count else math.nan
    if task == "causal-lm":
        return Scores(task, len(rows), loss, perplexity=perplexity(loss))
    num_labels = int(model.config.num_labels)
    metrics = classification_metrics(y_true, y_pred, num_labels)
    return Scores(task, len(rows), loss, labels=label_names_of(model, num_labels), **metrics)


def base_eval_wanted(mode: str, n: int, limit: int = 2000) -> bool:
    """``training.base_eval``: auto scores the base when the split has at most `limit` rows."""
    return mode == "on" or (mode == "auto" and n <= limit)
