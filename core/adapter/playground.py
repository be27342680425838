"""Try adapters on one frozen base: generate or classify with the base and each adapter.

The base model is loaded once. Adapters are attached with PEFT's ``load_adapter`` and chosen
with ``set_adapter``, so switching never reloads the base. The base side always runs inside
``with model.disable_adapter():``: a "base" answer is the base model's own answer, never the
adapter's (Unsloth Studio's "Compare in Chat" got this wrong, unslothai/unsloth#4503).

Runs in the Try child process (graftlab.core.process.try_child) and in `graftlab generate`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graftlab.core.adapter.targets import BASE, adapter_labels, adapter_name, adapter_target
from graftlab.core.errors import UserError
from graftlab.core.model.loading import load_base_model

OnText = Callable[[str], None]
ShouldStop = Callable[[], bool]


@dataclass
class DecodeOptions:
    """How to decode. Greedy unless `temperature` is set above 0."""

    max_new_tokens: int = 64
    """At most this many new tokens."""
    temperature: float | None = None
    """Sampling temperature; None or 0: greedy decoding (the same answer every time)."""
    top_p: float = 1.0
    """Nucleus sampling: sample from the smallest token set holding this much probability."""
    seed: int | None = None
    """Seed for sampling, so a sampled answer can be repeated; None: a fresh draw."""

    @property
    def sampling(self) -> bool:
        return bool(self.temperature)

    def check(self) -> None:
        if not 1 <= int(self.max_new_tokens) <= 32768:
            raise UserError(f"max new tokens is {self.max_new_tokens}; choose 1 to 32768.",
                            field="max_new_tokens")
        if self.temperature is not None and not 0 <= self.temperature <= 100:
            raise UserError(f"temperature is {self.temperature}; choose a value from 0 "
                            "(greedy) to 100.", field="temperature")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top-p is {self.top_p}; choose a value above 0 and at most 1.",
                            field="top_p")


@contextlib.contextmanager
def memory_errors(what: str) -> Iterator[None]:
    """Turn an out-of-memory failure into one sentence."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError:
        raise UserError(f"out of memory while {what}; lower max new tokens, use a shorter "
                        "prompt or a smaller model.", field="max_new_tokens") from None
    except RuntimeError as exc:
        text = str(exc)
        if "out of memory" in text or "can't allocate memory" in text:
            raise UserError(f"out of memory while {what}; lower max new tokens, use a "
                            "shorter prompt or a smaller model.",
                            field="max_new_tokens") from None
        raise


class _TextStream:
    """A transformers streamer that hands each piece of new text to `on_text` as it comes.

    `generate` first puts the prompt (skipped), then each new token. The whole continuation is
    decoded every time and only the new characters are sent, so byte-level tokens that end in
    the middle of a character are held back until the character is complete."""

    def __init__(self, tokenizer: Any, on_text: OnText) -> None:
        self._tok, self._on_text = tokenizer, on_text
        self._ids: list[int] = []
        self._text = ""
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._ids.extend(int(t) for t in value.reshape(-1).tolist())
        self._emit(final=False)

    def end(self) -> None:
        self._emit(final=True)

    def _emit(self, final: bool) -> None:
        text = self._tok.decode(self._ids, skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):
            return
        new = text[len(self._text):] if text.startswith(self._text) else text
        self._text = text
        if new:
            self._on_text(new)


def _stop_criteria(should_stop: ShouldStop | None) -> Any:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _StopFlag(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            stop = bool(should_stop and should_stop())
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool)

    return StoppingCriteriaList([_StopFlag()])


class Playground:
    """One base model in memory with any number of named adapters attached to it.

    Args:
        base: the base model spec (folder, cached/hub id, ``demo:<name>``).
        task: ``auto``, ``causal-lm`` or ``sequence-classification``.
        num_labels, label_names: classifier head size and names (from the adapter's run).
    """

    def __init__(self, base: str, task: str = "auto", *, trust_remote_code: bool = False,
                 num_labels: int | None = None, label_names: list[str] | None = None,
                 device: str = "cpu") -> None:
        from graftlab.core.model.module_tree import tree_from_model
        from graftlab.core.model.sources import resolve_source

        if not str(base).strip():
            raise UserError("no base model given; choose a model folder, a run folder or "
                            "demo:tiny-llama.", field="model.source")
        self.spec = str(base)
        self.source = resolve_source(self.spec, trust_remote_code)
        start = time.perf_counter()
        with memory_errors(f"loading {base}"):
            self.model, self.tokenizer, self.task = load_base_model(
                self.spec, task, trust_remote_code=trust_remote_code, num_labels=num_labels,
                label_names=label_names, device=device)
        self.model.eval()
        self.load_s = time.perf_counter() - start
        self.device = device
        self.adapters: dict[str, Path] = {}
        self.last_ids: list[int] = []  # the new token ids of the last generate()
        self.labels: dict[str, tuple[str, ...]] = {}
        self._shapes = {m.name: (m.in_features, m.out_features)
                        for m in tree_from_model(self.model, self.task).modules.values()}

    # ---- what is loaded -----------------------------------------------------------------
    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def base_labels(self) -> tuple[str, ...]:
        id2label = getattr(self.model.config, "id2label", None) or {}
        return tuple(str(id2label[i]) for i in sorted(id2label))

    def info(self) -> dict[str, Any]:
        return {"base": self.spec, "task": self.task, "chat_template": self.has_chat_template,
                "adapters": {n: str(p) for n, p in self.adapters.items()},
                "labels": list(self.base_labels()), "load_s": round(self.load_s, 3)}

    # ---- adapters -----------------------------------------------------------------------
    def attach(self, folder: str | Path, name: str | None = None) -> str:
        """Attach the adapter in `folder` (an adapter folder or a run folder) under `name`.

        Returns the name used (made unique). Refuses an adapter made for another base.
        """
        folder = Path(folder).expanduser()
        if (folder / "run.yaml").is_file() and (folder / "adapter").is_dir():
            folder = folder / "adapter"
        target = adapter_target(folder)
        resolved = folder.resolve()
        for existing, path in self.adapters.items():
            if path == resolved:
                return existing
        self._check_fits(folder, target.base, target.task)
        name = self._unique(name or adapter_name(folder))
        with memory_errors(f"attaching {folder}"), self._load_errors(folder):
            if not self.adapters:
                import warnings

                from peft import PeftModel

                with warnings.catch_warnings():  # peft's deprecation chatter
                    warnings.simplefilter("ignore")
                    self.model = PeftModel.from_pretrained(self.model, str(folder),
                                                           adapter_name=name)
            else:
                self.model.load_adapter(str(folder), adapter_name=name)
        self.model.eval()
        self.adapters[name] = resolved
        labels = adapter_labels(folder)
        if labels:
            self.labels[name] = labels
        return name

    def _unique(self, name: str) -> str:
        name = "adapter_base" if name == BASE else name
        out, n = name, 2
        while out in self.adapters:
            out, n = f"{name}_{n}", n + 1
        return out

    def _check_fits(self, folder: Path, recorded: str, task: str) -> None:
        from safetensors import safe_open

        if task != "auto" and task != self.task:
            raise UserError(f"the adapter in {folder} is for a {task} model, but {self.spec} "
                            f"is loaded as {self.task}; pick the base it was trained on.",
                            field="adapter_dir")
        self._check_recorded_base(folder, recorded)
        try:
            with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as fh:
                shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
        except Exception as exc:
            raise UserError(f"{folder / 'adapter_model.safetensors'} cannot be read "
                            f"({type(exc).__name__}); the file is damaged or incomplete.",
                            field="adapter_dir") from None
        for key, shape in shapes.items():
            for part, dim in ((".lora_A.weight", 1), (".lora_B.weight", 0)):
                if not key.endswith(part):
                    continue
                module = key[: -len(part)].removeprefix("base_model.model.")
                if module not in self._shapes:
                    raise UserError(f"the adapter in {folder} is for another base: it adapts "
                                    f"{module}, which {self.spec} does not have; pick the base "
                                    "it was trained on.", field="adapter_dir")
                want = self._shapes[module][0 if dim == 1 else 1]  # A: in, B: out
                if want is not None and want != shape[dim]:
                    raise UserError(f"the adapter in {folder} is for another base: {module} "
                                    f"has size {want} in {self.spec} but {shape[dim]} in the "
                                    "adapter; pick the base it was trained on.",
                                    field="adapter_dir")

    def _check_recorded_base(self, folder: Path, recorded: str) -> None:
        """A recorded base that resolves here to a model of another architecture or size."""
        from graftlab.core.model.sources import resolve_source

        try:
            other = resolve_source(recorded, allow_download=False)
        except UserError:
            return  # not resolvable here (moved, or a hub id offline): the shapes decide
        if other.name == self.source.name or other.path is None or self.source.path is None:
            return
        keys = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "n_embd",
                "n_layer", "intermediate_size", "num_attention_heads")

        def shape(p: Path) -> dict[str, Any]:
            cfg = p if p.is_file() else p / "config.json"
            try:
                import json

                data = json.loads(cfg.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return {}
            return {k: data.get(k) for k in keys}

        mine, theirs = shape(self.source.path), shape(other.path)
        if mine and theirs and mine != theirs:
            raise UserError(f"the adapter in {folder} was trained on {recorded}, which is a "
                            f"different model from {self.spec}; pick the base it was trained "
                            "on.", field="adapter_dir")

    @contextlib.contextmanager
    def _load_errors(self, folder: Path) -> Iterator[None]:
        try:
            yield
        except (RuntimeError, ValueError, KeyError) as exc:
            if isinstance(exc, UserError):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise UserError(f"the adapter in {folder} does not load onto {self.spec} "
                            f"({first}); pick the base it was trained on.",
                            field="adapter_dir") from None

    @contextlib.contextmanager
    def side(self, name: str) -> Iterator[Any]:
        """The model as side `name` sees it: the base (every adapter off) or one adapter."""
        if name == BASE:
            if self.adapters:
                with self.model.disable_adapter():
                    yield self.model
            else:
                yield self.model
            return
        if name not in self.adapters:
            known = ", ".join([BASE, *self.adapters])
            raise UserError(f"no adapter named {name!r} is attached; choose one of {known}.",
                            field="adapter")
        self.model.set_adapter(name)
        yield self.model

    # ---- causal LM ----------------------------------------------------------------------
    def prompt_ids(self, prompt: str, system: str | None = None, chat: bool = False) -> Any:
        """The token ids of a prompt, rendered with the chat template when `chat`."""
        if not prompt.strip():
            raise UserError("the prompt is empty; type something for the model to continue.",
                            field="prompt")
        if chat:
            if not self.has_chat_template:
                raise UserError(f"{self.spec} has no chat template, so it cannot chat; turn "
                                "chat off to continue the prompt as plain text.", field="chat")
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}]
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                      tokenize=False)
            return self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        return self.tokenizer(prompt, return_tensors="pt")

    def generate(self, prompt: str, side: str = BASE, *, system: str | None = None,
                 chat: bool = False, options: DecodeOptions | None = None,
                 on_text: OnText | None = None, should_stop: ShouldStop | None = None) -> str:
        """The continuation of `prompt` on side `side`: the new tokens only, decoded with
        special tokens skipped. `on_text` gets each new piece as it is generated;
        `should_stop` returning True ends generation after the current token."""
        import torch

        if self.task != "causal-lm":
            raise UserError(f"{self.spec} is a classifier; it labels text instead of "
                            "continuing it.", field="model.task")
        options = options or DecodeOptions()
        options.check()
        inputs = self.prompt_ids(prompt, system, chat).to(self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(options.max_new_tokens), "do_sample": options.sampling,
            "pad_token_id": self.tokenizer.pad_token_id,
            "stopping_criteria": _stop_criteria(should_stop)}
        if options.sampling:
            kwargs.update(temperature=float(options.temperature), top_p=float(options.top_p))
            if options.seed is not None:
                torch.manual_seed(int(options.seed))
        if on_text is not None:
            kwargs["streamer"] = _TextStream(self.tokenizer, on_text)
        with memory_errors("generating"), self.side(side) as model, torch.inference_mode():
            out = model.generate(**inputs, **kwargs)
        new = out[0, inputs["input_ids"].shape[1]:]
        self.last_ids = [int(t) for t in new.tolist()]
        return str(self.tokenizer.decode(new, skip_special_tokens=True))

    # ---- classifiers ----------------------------------------------------------------------
    def classify(self, text: str, side: str = BASE) -> list[tuple[str, float]]:
        """Label probabilities (softmax of the logits) of `text` on side `side`."""
        import torch

        if self.task != "sequence-classification":
            raise UserError(f"{self.spec} is a causal LM; it continues text instead of "
                            "labelling it.", field="model.task")
        if not text.strip():
            raise UserError("the text is empty; type a text to classify.", field="prompt")
        inputs = self.tokenizer(text, return_tensors="pt", truncation=True).to(self.device)
        with memory_errors("classifying"), self.side(side) as model, torch.inference_mode():
            logits = model(**inputs).logits[0].float()
        probs = torch.softmax(logits, dim=-1).tolist()
        names = self.labels.get(side) or self.base_labels()
        if len(names) != len(probs):
            names = tuple(f"LABEL_{i}" for i in range(len(probs)))
        return list(zip(names, probs, strict=True))
