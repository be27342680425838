"""Raw rows -> ``input_ids`` / ``attention_mask`` / ``labels``, one function per data format.

An :class:`Encoder` is the batched function given to ``Dataset.map`` (so datasets caches its
output, keyed on the tokenizer and settings). Besides the model inputs it writes helper columns
that ``prepare`` and ``preview`` read and then drop:

``_full_length``  tokens before truncation
``_trained``      tokens with a label (causal LM: label != -100; classification: 1 per example)
``_cut``          the example had trained tokens but truncation removed all of them

Causal-LM labels never train position 0: the model predicts token t+1 from tokens <= t, so the
first label is never a target. Masking it keeps ``_trained`` equal to the tokens in the loss.
"""

from __future__ import annotations

import re
from typing import Any

from graftlab.core.errors import UserError

IGNORE = -100
_GENERATION = re.compile(r"{%-?\s*generation\s*-?%}")
# (input_ids before truncation, labels, trained tokens before truncation, full length)
_Row = tuple[list[int], list[int] | int, int, int]
_ROLE_ALIASES = {"human": "user", "gpt": "assistant", "model": "assistant", "bot": "assistant"}


def special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer adds before and after a text (Llama: [bos], []; BERT: [cls], [sep])."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if plain and full[i : i + len(plain)] == plain:
            return list(full[:i]), list(full[i + len(plain) :])
    return [], []


def chat_template_of(tokenizer: Any) -> str:
    """The tokenizer's chat template, or a UserError saying there is none."""
    try:
        template = tokenizer.get_chat_template()
    except (ValueError, AttributeError):
        template = None
    if not template:
        raise UserError(
            "the model's tokenizer has no chat template, so chat data cannot be "
            "rendered; use a chat/instruct model, or convert the data to "
            "prompt-completion or text and set `data.format`.",
            field="data.format",
        )
    return str(template)


class Encoder:
    """Batched ``Dataset.map`` function for one format; see the module docstring.

    Args:
        fmt: ``text``, ``prompt-completion``, ``chat`` or ``classification``.
        columns: role -> column (from ``resolve_columns``).
        tokenizer: a transformers tokenizer.
        max_length: truncate (right side) to this many tokens.
        where: the data path as the user wrote it, for messages.
        label_ids: classification only: label string -> class id.
        label_names_of_feature: classification only: the names of a ``ClassLabel`` column, so
            its integer values map to names before ``label_ids`` is consulted.
    """

    def __init__(
        self,
        fmt: str,
        columns: dict[str, str],
        tokenizer: Any,
        max_length: int,
        where: str,
        label_ids: dict[str, int] | None = None,
        label_names_of_feature: list[str] | None = None,
    ) -> None:
        self.fmt, self.columns, self.tok = fmt, columns, tokenizer
        self.max_length, self.where = max_length, where
        self.label_ids = label_ids or {}
        self.class_label_names = label_names_of_feature
        self.prefix, self.suffix = special_affixes(tokenizer)
        eos = tokenizer.eos_token_id
        self.eos = [eos] if isinstance(eos, int) else []
        if fmt == "chat":
            template = chat_template_of(tokenizer)
            # the assistant mask needs token offsets, which only fast tokenizers provide
            self.use_generation_mask = bool(_GENERATION.search(template)) and bool(
                getattr(tokenizer, "is_fast", False)
            )
            # whitespace tokens (Gemma's "\n\n") are ordinary text, as transformers treats them
            added = sorted(
                (t for t in tokenizer.added_tokens_encoder if t.strip()), key=len, reverse=True
            )
            self.control = re.compile("|".join(map(re.escape, added))) if added else None

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        rows: list[_Row]
        if self.fmt == "chat":
            rows = [
                self._chat(m, i)
                for m, i in zip(batch[self.columns["messages"]], indices, strict=True)
            ]
        elif self.fmt == "classification":
            rows = self._classification(batch, indices)
        else:
            rows = self._causal(batch, indices)
        out: dict[str, list[Any]] = {
            "input_ids": [],
            "attention_mask": [],
            "labels": [],
            "_full_length": [],
            "_trained": [],
            "_cut": [],
        }
        for ids, labels, trained_before_cut, full in rows:
            ids = ids[: self.max_length]
            if isinstance(labels, list):
                labels = labels[: self.max_length]
                trained = sum(1 for x in labels if x != IGNORE)
            else:
                trained = trained_before_cut
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append(labels)
            out["_full_length"].append(full)
            out["_trained"].append(trained)
            out["_cut"].append(trained_before_cut > 0 and trained == 0)
        return out

    # ---- helpers -------------------------------------------------------------------------

    def _strings(
        self, batch: dict[str, list[Any]], role: str, indices: list[int], optional: bool = False
    ) -> list[str]:
        col = self.columns[role]
        values = batch[col]
        for value, i in zip(values, indices, strict=True):
            if value is None and not optional:
                key = "prompt_column" if role == "input" else f"{role}_column"
                raise UserError(
                    f"row {i + 1} of {self.where} has no value (null) in column "
                    f"`{col}`; fill it in or remove the row.",
                    field=f"data.{key}",
                )
        return ["" if v is None else v for v in values]

    def _encode(self, texts: list[str]) -> list[list[int]]:
        # split_special_tokens: "<|im_end|>" typed in user data is text, not a control token
        enc = self.tok(texts, add_special_tokens=False, split_special_tokens=True, verbose=False)
        return [list(ids) for ids in enc["input_ids"]]

    def _causal(self, batch: dict[str, list[Any]], indices: list[int]) -> list[_Row]:
        rows: list[_Row] = []
        if self.fmt == "text":
            texts = self._strings(batch, "text", indices)
            for text, ids in zip(texts, self._encode(texts), strict=True):
                if not text.strip():
                    rows.append(([], [], 0, 0))
                    continue
                full = self.prefix + ids + self.eos
                labels = [IGNORE] * len(self.prefix) + ids + self.eos
                rows.append(self._finish(full, labels))
            return rows
        prompts = self._strings(batch, "prompt", indices)
        if "input" in self.columns:  # alpaca: instruction, then the optional input
            extra = self._strings(batch, "input", indices, optional=True)
            prompts = [
                p + "\n\n" + x if x.strip() else p for p, x in zip(prompts, extra, strict=True)
            ]
        completions = self._strings(batch, "completion", indices)
        p_ids, c_ids = self._encode(prompts), self._encode(completions)
        for text, p, c in zip(completions, p_ids, c_ids, strict=True):
            if not text.strip():
                rows.append(([], [], 0, 0))
                continue
            full = self.prefix + p + c + self.eos
            labels = [IGNORE] * (len(self.prefix) + len(p)) + c + self.eos
            rows.append(self._finish(full, labels))
        return rows

    @staticmethod
    def _finish(ids: list[int], labels: list[int]) -> _Row:
        if labels:
            labels[0] = IGNORE  # never a target, see the module docstring
        return ids, labels, sum(1 for x in labels if x != IGNORE), len(ids)

    def _classification(self, batch: dict[str, list[Any]], indices: list[int]) -> list[_Row]:
        texts = self._strings(batch, "text", indices)
        col = self.columns["label"]
        rows: list[_Row] = []
        room = max(self.max_length - len(self.prefix) - len(self.suffix), 1)
        for text, ids, value, i in zip(
            texts, self._encode(texts), batch[col], indices, strict=True
        ):
            label = self.label_id(value, i)
            if not text.strip():
                rows.append(([], label, 0, 0))
                continue
            # truncate the text, not the closing [SEP]; _full_length still records the full size
            full = len(self.prefix) + len(ids) + len(self.suffix)
            rows.append((self.prefix + ids[:room] + self.suffix, label, 1, full))
        return rows

    def label_id(self, value: Any, row: int) -> int:
        col = self.columns["label"]
        if value is None:
            raise UserError(
                f"row {row + 1} of {self.where} has no label (null) in column "
                f"`{col}`; fill it in or remove the row.",
                field="data.label_column",
            )
        names = self.class_label_names
        if names is not None and not 0 <= value < len(names):  # ClassLabel uses -1 for "none"
            raise UserError(
                f"row {row + 1} of {self.where} has label id {value} in column `{col}`, which "
                f"names no class (0 to {len(names) - 1}); fix or remove the row.",
                field="data.label_column",
            )
        key = label_key(value, names)
        if key not in self.label_ids:
            raise UserError(
                f"row {row + 1} of {self.where} has label {key!r}, which is not one "
                f"of the model's labels ({', '.join(self.label_ids)}); fix the label "
                "or train a new classifier.",
                field="data.label_column",
            )
        return self.label_ids[key]

    # ---- chat ----------------------------------------------------------------------------

    def _messages(self, raw: Any, row: int) -> list[dict[str, str]]:
        col = self.columns["messages"]
        if raw is None:
            raise UserError(
                f"row {row + 1} of {self.where} has no messages (null) in column "
                f"`{col}`; fill it in or remove the row.",
                field="data.messages_column",
            )
        messages = []
        for n, m in enumerate(raw, start=1):
            if isinstance(m, dict) and "role" not in m and "from" in m:  # ShareGPT style
                m = {"role": _ROLE_ALIASES.get(m["from"], m["from"]), "content": m.get("value")}
            if not (
                isinstance(m, dict)
                and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)
            ):
                raise UserError(
                    f"message {n} in row {row + 1} of {self.where} (column `{col}`) "
                    "needs a string `role` and a string `content`; fix that "
                    "message.",
                    field="data.messages_column",
                )
            messages.append({"role": m["role"], "content": m["content"]})
        return messages

    def _chat(self, raw: Any, row: int) -> _Row:
        from jinja2.exceptions import TemplateError

        messages = self._messages(raw, row)
        if not messages:
            return [], [], 0, 0
        try:
            if not any(m["role"] == "assistant" for m in messages):  # shown in preview, dropped
                ids = self._render(messages, False)
                return ids, [IGNORE] * len(ids), 0, len(ids)
            # return_assistant_tokens_mask cannot be combined with sanitize_control_tokens, so
            # the exact {% generation %} mask is used only when no content holds a control token
            if self.use_generation_mask and not self._has_control_token(messages):
                enc = self.tok.apply_chat_template(
                    messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
                )
                ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
            else:
                ids, mask = self._prefix_mask(messages, row)
        except TemplateError as exc:
            raise UserError(
                f"the chat template rejected the conversation in row {row + 1} of "
                f"{self.where} ({exc}); fix the messages (most templates expect "
                "user and assistant turns to alternate).",
                field="data.messages_column",
            ) from None
        return self._finish(ids, [t if m else IGNORE for t, m in zip(ids, mask, strict=True)])

    def _has_control_token(self, messages: list[dict[str, str]]) -> bool:
        return self.control is not None and any(self.control.search(m["content"]) for m in messages)

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
        return list(
            self.tok.apply_chat_template(
                messages,
                tokenize=True,
                return_dict=False,
                sanitize_control_tokens=True,
                add_generation_prompt=generation_prompt,
            )
        )

    def _prefix_mask(self, messages: list[dict[str, str]], row: int) -> tuple[list[int], list[int]]:
        """Train each assistant turn found as the difference of two renderings.

        Turn j covers render(messages[:j+1]) minus render(messages[:j], generation prompt). That
        only works if each rendering is a prefix of the next; a turn that breaks this (templates
        that rewrite earlier turns) is left untrained, and if the last reply breaks it, fail.
        """
        full = self._render(messages, False)
        mask = [0] * len(full)
        turns = [j for j, m in enumerate(messages) if m["role"] == "assistant" and j > 0]
        for j in turns:
            before = self._render(messages[:j], True)
            upto = full if j == len(messages) - 1 else self._render(messages[: j + 1], False)
            if full[: len(upto)] == upto and upto[: len(before)] == before:
                mask[len(before) : len(upto)] = [1] * (len(upto) - len(before))
            elif j == turns[-1]:
                raise UserError(
                    f"the model's chat template renders row {row + 1} of {self.where} "
                    "differently once the last assistant reply is added (it is not "
                    "prefix-stable), so the reply tokens cannot be located; use a tokenizer whose "
                    "template marks replies with {% generation %}, or convert the data to "
                    "prompt-completion.",
                    field="data.format",
                )
        return full, mask


def label_key(value: Any, class_names: list[str] | None = None) -> str:
    """The string form of a raw label value (ClassLabel ids become their names)."""
    if class_names is not None and isinstance(value, int):
        return class_names[value]
    return str(value)
