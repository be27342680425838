"""run.yaml: the one file that describes a run, for the GUI, the CLI and a cluster alike.

Each section is a dataclass with a documented default per field. Loading is strict: an unknown
key or a wrong type is a :class:`UserError` that names the key, so a typo never silently falls
back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from graftlab.core.atomic import atomic_write_text
from graftlab.core.errors import UserError

# The tasks a model is trained for; `model.task: auto` resolves to one of them.
TRAINABLE_TASKS = ("causal-lm", "sequence-classification")
TASK_CHOICES = ("auto", *TRAINABLE_TASKS)  # what `model.task` accepts
VARIANTS = ("lora", "rslora", "dora")
DATA_FORMATS = ("auto", "text", "prompt-completion", "chat", "classification")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
PACKING = ("auto", "on", "off")
BASE_EVAL = ("auto", "on", "off")
DISTRIBUTED = ("ddp", "fsdp")
KERNELS = ("auto", "on", "off")
# `model.quantization`: load the frozen base through bitsandbytes (QLoRA with 4bit).
QUANTIZATIONS = ("none", "8bit", "4bit")
# Experiment trackers the Trainer reports to: (training.report_to value, module to import).
TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "trackio": "trackio",
            "wandb": "wandb"}


@dataclass
class ModelConfig:
    """Which model to adapt."""

    source: str = "demo:tiny-llama"
    """A model folder, a config.json (inspect only), a cached or hub id, or ``demo:<name>``."""
    task: str = "auto"
    """``causal-lm``, ``sequence-classification``, or ``auto`` (from the config's architecture)."""
    trust_remote_code: bool = False
    """Run Python code shipped with the model. Off by default: enable only for models you trust."""
    allow_pickle_weights: bool = False
    """Also load ``.bin`` weights (``torch.load(weights_only=True)``) when no safetensors exist."""
    num_labels: int | None = None
    """Classification only: the number of classes; by default taken from the data's labels."""
    quantization: str = "none"
    """Load the frozen base weights quantized with bitsandbytes: ``none``, ``8bit`` (LLM.int8)
    or ``4bit`` (NF4 with double quantization: QLoRA). The adapter is trained in full precision
    and loads on the unquantized base."""


@dataclass
class Override:
    """A rank/alpha override for the modules its globs match; later overrides win."""

    targets: list[str] = field(default_factory=list)
    """Exact module names or shell-style globs (``model.layers.1.*``)."""
    rank: int | None = None
    """Rank for the matched modules (default: the adapter's rank)."""
    alpha: float | None = None
    """Alpha for the matched modules (default: the adapter's alpha)."""


@dataclass
class AdapterConfig:
    """Which modules get LoRA adapters, and how large."""

    rank: int = 8
    """LoRA rank r: the inner dimension of B·A."""
    alpha: float = 16.0
    """Scale numerator: the update is (alpha/r)·B·A, or (alpha/√r)·B·A for rsLoRA."""
    dropout: float = 0.0
    """Dropout on the adapter input, in [0, 1)."""
    variant: str = "lora"
    """``lora``, ``rslora`` (rank-stabilised scaling) or ``dora`` (weight-decomposed)."""
    targets: list[str] = field(default_factory=list)
    """Exact module names or shell-style globs. Stored resolved (exact names) in a run folder."""
    overrides: list[Override] = field(default_factory=list)
    """Per-module rank/alpha overrides."""


@dataclass
class DataConfig:
    """The training data."""

    path: str = ""
    """A jsonl/json/csv/parquet/txt file, ``demo:<name>``, or a hub dataset name (online only)."""
    format: str = "auto"
    """``auto``, ``text``, ``prompt-completion``, ``chat`` or ``classification``."""
    max_length: int = 512
    """Examples are truncated to this many tokens."""
    text_column: str | None = None
    """Column holding the text (text and classification formats); auto-detected when unset."""
    prompt_column: str | None = None
    """Prompt column (prompt-completion); auto-detected when unset."""
    completion_column: str | None = None
    """Completion column (prompt-completion); auto-detected when unset."""
    messages_column: str | None = None
    """Chat column of ``[{role, content}, ...]`` lists; auto-detected when unset."""
    label_column: str | None = None
    """Label column (classification); labels may be strings or integers."""
    eval_fraction: float = 0.0
    """Share of examples held out for eval loss, in [0, 0.5]."""
    max_examples: int | None = None
    """Use only the first N examples of the file; all when unset."""


@dataclass
class TrainingConfig:
    """How to train. Maps onto transformers' TrainingArguments."""

    max_steps: int = 100
    """Optimizer steps. Set to -1 to train for ``epochs`` instead."""
    epochs: float = 1.0
    """Passes over the data, used only when ``max_steps`` is -1."""
    batch_size: int = 4
    """Examples per device per step."""
    gradient_accumulation: int = 1
    """Micro-batches accumulated into one optimizer step."""
    learning_rate: float = 2.0e-4
    """Peak learning rate."""
    scheduler: str = "linear"
    """``linear``, ``cosine``, ``constant`` or ``constant_with_warmup``."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 turns clipping off)."""
    seed: int = 0
    """Seed for initialisation, shuffling and dropout."""
    gradient_checkpointing: bool | None = None
    """Recompute activations in the backward pass: less memory, about 30% slower. Unset
    (null): on with a 4-bit base, else off; a run folder's run.yaml records what was used."""
    logging_steps: int = 1
    """Log loss, learning rate and grad norm every N steps (each log is a CPU-GPU sync)."""
    eval_steps: int = 0
    """Evaluate every N steps (0: only at the end, when there is an eval split)."""
    eval_on_stop: bool = False
    """Run the final eval pass also when the run is stopped early (off: Stop is quick)."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every N steps (0: none)."""
    update_norms_every: int = 10
    """Compute each module's relative update size (the heatmap) every N steps (0: off)."""
    sample_prompts: list[str] = field(default_factory=list)
    """Prompts the adapter answers during training (greedy), written to metrics.jsonl."""
    sample_every: int = 0
    """Generate the sample prompts every N steps (0: off)."""
    sample_max_new_tokens: int = 48
    """Cap on the tokens generated per sample prompt."""
    sample_max_share: float = 0.05
    """Samples are skipped while their total time would exceed this share of training time
    (1: never skipped)."""
    base_eval: str = "auto"
    """Score the base model (adapters disabled) on the eval split once before training:
    ``auto`` (when the split has at most 2,000 examples), ``on`` or ``off``."""
    checkpoint_minutes: float = 10.0
    """Also write a checkpoint when this many minutes of training passed since the last (0: off)."""
    checkpoint_limit: int = 2
    """Keep at most this many checkpoints."""
    device: str = "auto"
    """``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda``."""
    precision: str = "auto"
    """``auto`` (bf16 on GPUs that support it, else fp32), ``fp32``, ``bf16``; fp16 is GPU-only."""
    processes: int = 1
    """Training processes on this machine (one per GPU). Above 1, ``graftlab train`` starts
    ``torchrun`` with this many processes (data-parallel); under an outside ``torchrun`` or
    ``accelerate launch``, their process count wins."""
    distributed: str = "ddp"
    """With several processes: ``ddp`` (each holds the whole model, gradients are averaged) or
    ``fsdp`` (parameters sharded by decoder layer, for models that do not fit one GPU)."""
    output_dir: str = "runs/graftlab"
    """Run folder: run.yaml, metrics.jsonl, adapter/ and checkpoints/ go here."""
    packing: str = "auto"
    """Causal LM: ``auto`` concatenates each batch's examples without padding when a check on
    the loaded model shows the loss is exactly that of padded batches; ``on`` requires it (an
    error if not exact), ``off`` always pads."""
    chunked_loss: str = "auto"
    """Causal LM: compute the loss from the last hidden state a chunk of tokens at a time, so
    the [tokens × vocabulary] logits never exist at once (same loss and gradients). ``auto``:
    on for vocabularies of 32k tokens and more; ``on``; ``off``."""
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers that also receive the logs: ``tensorboard`` (event files under
    RUN/tensorboard/), ``mlflow``, ``trackio``, ``wandb``. Each needs its optional extra
    (``pip install "graftlab[tensorboard]"``)."""
    torch_compile: bool = False
    """Compile the model with ``torch.compile``. Off by default: turn it on only where a
    measurement shows it wins (compile time is paid at the start of every run)."""
    kernels: str = "auto"
    """Fused Liger kernels (RMSNorm, RoPE, SwiGLU) on CUDA: ``auto`` uses them when
    liger-kernel is installed and supports the model, and skips them otherwise (CPU); ``on``
    requires them; ``off``. The loss stays Graftlab's (chunked or plain)."""


@dataclass
class RunConfig:
    """A whole run: model, adapter, data and training."""

    model: ModelConfig = field(default_factory=ModelConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> None:
        """Write atomically: a failure leaves an existing file untouched."""
        atomic_write_text(Path(path), self.to_yaml())

    @classmethod
    def from_dict(cls, data: Any, where: str = "run.yaml") -> RunConfig:
        cfg = _build(cls, data, "", where)
        validate(cfg, where)
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"run file {path} does not exist; check the path or create one "
                            "with the GUI's File > Save run.")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{path} is not a UTF-8 text file; pass a run.yaml.") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise UserError(f"{path}{at}: {problem}; fix the YAML syntax.") from None
        return cls.from_dict(data if data is not None else {}, where=str(path))


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = " (or null)" if type(None) in typing.get_args(tp) else ""
        return " or ".join(_type_name(a) for a in args) + optional
    if origin is list:
        return "a list"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp)
    )


def _convert(tp: Any, value: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key, where)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str) and item_tp is str:
            value = [value]  # `targets: q_proj` means a one-element list
        if not isinstance(value, list):
            raise UserError(f"{where}: `{key}` must be a list, got {value!r}; write it as [a, b].",
                            field=key)
        return [_convert(item_tp, v, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", where)
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if tp is float and isinstance(value, str):  # YAML reads `2e-4` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not ok:
        raise UserError(f"{where}: `{key}` must be {_type_name(tp)}, got {value!r}.", field=key)
    return float(value) if tp is float else value


def _build(cls: type, data: Any, prefix: str, where: str) -> Any:
    section = prefix.rstrip(".") or "top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: `{section}` must be a mapping of keys to values.",
                        field=prefix.rstrip(".") or None)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise UserError(
                f"{where}: unknown key `{prefix}{key}`; valid keys in {section} are "
                f"{', '.join(names)}.", field=f"{prefix}{key}")
    kwargs = {k: _convert(hints[k], v, prefix + k, where) for k, v in data.items()}
    return cls(**kwargs)


def _require(cond: bool, message: str, key: str) -> None:
    if not cond:
        raise UserError(message.removeprefix(": "), field=key)


def validate(cfg: RunConfig, where: str = "run.yaml") -> None:
    """Check value ranges; raise :class:`UserError` naming the first bad key."""
    m, a, d, t = cfg.model, cfg.adapter, cfg.data, cfg.training
    _require(bool(m.source.strip()), f"{where}: `model.source` is empty; set it to a model "
             "folder, a config.json, a cached id or demo:tiny-llama.", "model.source")
    _require(m.task in TASK_CHOICES, f"{where}: `model.task` is {m.task!r}; use one of "
             f"{', '.join(TASK_CHOICES)}.", "model.task")
    _require(m.quantization in QUANTIZATIONS, f"{where}: `model.quantization` is "
             f"{m.quantization!r}; use one of {', '.join(QUANTIZATIONS)}.", "model.quantization")
    _require(m.num_labels is None or m.num_labels >= 2, f"{where}: `model.num_labels` must be "
             "at least 2.", "model.num_labels")
    check_lora_values(a.rank, a.alpha, a.dropout, where, "adapter.")
    _require(a.variant in VARIANTS, f"{where}: `adapter.variant` is {a.variant!r}; use one of "
             f"{', '.join(VARIANTS)}.", "adapter.variant")
    for i, o in enumerate(a.overrides):
        key = f"adapter.overrides[{i}]."
        _require(bool(o.targets), f"{where}: `{key}targets` is empty; list the modules (or "
                 "globs) this override applies to.", key + "targets")
        check_lora_values(o.rank if o.rank is not None else a.rank,
                          o.alpha if o.alpha is not None else a.alpha, a.dropout, where, key)
    _require(d.format in DATA_FORMATS, f"{where}: `data.format` is {d.format!r}; use one of "
             f"{', '.join(DATA_FORMATS)}.", "data.format")
    _require(d.max_length >= 8, f"{where}: `data.max_length` is {d.max_length}; use at least 8 "
             "tokens.", "data.max_length")
    _require(0.0 <= d.eval_fraction <= 0.5, f"{where}: `data.eval_fraction` is "
             f"{d.eval_fraction}; use a share between 0 and 0.5.", "data.eval_fraction")
    _require(d.max_examples is None or d.max_examples >= 1, f"{where}: `data.max_examples` "
             "must be at least 1 (or unset for all).", "data.max_examples")
    _require(t.max_steps >= 1 or t.max_steps == -1, f"{where}: `training.max_steps` is "
             f"{t.max_steps}; use a positive number of steps, or -1 to train by epochs.",
             "training.max_steps")
    _require(t.max_steps != -1 or (math.isfinite(t.epochs) and t.epochs > 0),
             f"{where}: `training.epochs` must be positive when max_steps is -1.",
             "training.epochs")
    _require(t.batch_size >= 1, f"{where}: `training.batch_size` is {t.batch_size}; use at "
             "least 1.", "training.batch_size")
    _require(t.gradient_accumulation >= 1, f"{where}: `training.gradient_accumulation` must "
             "be at least 1.", "training.gradient_accumulation")
    _require(math.isfinite(t.learning_rate) and 0 < t.learning_rate < 1,
             f"{where}: `training.learning_rate` is {t.learning_rate}; use a positive value "
             "below 1, such as 2e-4.", "training.learning_rate")
    _require(t.scheduler in SCHEDULERS, f"{where}: `training.scheduler` is {t.scheduler!r}; "
             f"use one of {', '.join(SCHEDULERS)}.", "training.scheduler")
    for key in ("warmup_steps", "eval_steps", "checkpoint_every", "update_norms_every",
                "sample_every"):
        value = getattr(t, key)
        _require(value >= 0, f"{where}: `training.{key}` is {value}; use 0 or more.",
                 f"training.{key}")
    _require(t.sample_max_new_tokens >= 1, f"{where}: `training.sample_max_new_tokens` is "
             f"{t.sample_max_new_tokens}; use at least 1 token.", "training.sample_max_new_tokens")
    _require(math.isfinite(t.sample_max_share) and 0 < t.sample_max_share <= 1, f"{where}: "
             f"`training.sample_max_share` is {t.sample_max_share}; use a share in (0, 1], such "
             "as 0.05.", "training.sample_max_share")
    _require(all(p.strip() for p in t.sample_prompts), f"{where}: `training.sample_prompts` "
             "holds an empty prompt; remove it or write some text.", "training.sample_prompts")
    _require(t.base_eval in BASE_EVAL, f"{where}: `training.base_eval` is {t.base_eval!r}; use "
             f"one of {', '.join(BASE_EVAL)}.", "training.base_eval")
    _require(t.logging_steps >= 1, f"{where}: `training.logging_steps` must be at least 1.",
             "training.logging_steps")
    _require(t.checkpoint_limit >= 1, f"{where}: `training.checkpoint_limit` must be at "
             "least 1.", "training.checkpoint_limit")
    _require(math.isfinite(t.checkpoint_minutes) and t.checkpoint_minutes >= 0, f"{where}: "
             "`training.checkpoint_minutes` must be 0 or more.", "training.checkpoint_minutes")
    _require(math.isfinite(t.weight_decay) and t.weight_decay >= 0, f"{where}: "
             "`training.weight_decay` must be 0 or more.", "training.weight_decay")
    _require(math.isfinite(t.max_grad_norm) and t.max_grad_norm >= 0, f"{where}: "
             "`training.max_grad_norm` must be 0 or more.", "training.max_grad_norm")
    _require(t.device in DEVICES, f"{where}: `training.device` is {t.device!r}; use one of "
             f"{', '.join(DEVICES)}.", "training.device")
    _require(t.precision in PRECISIONS, f"{where}: `training.precision` is {t.precision!r}; "
             f"use one of {', '.join(PRECISIONS)}.", "training.precision")
    _require(t.packing in PACKING, f"{where}: `training.packing` is {t.packing!r}; use one of "
             f"{', '.join(PACKING)}.", "training.packing")
    _require(t.chunked_loss in PACKING, f"{where}: `training.chunked_loss` is "
             f"{t.chunked_loss!r}; use one of {', '.join(PACKING)}.", "training.chunked_loss")
    for i, name in enumerate(t.report_to):
        _require(name in TRACKERS, f"{where}: `training.report_to[{i}]` is {name!r}; use "
                 f"any of {', '.join(TRACKERS)} (or an empty list).", "training.report_to")
    _require(t.processes >= 1, f"{where}: `training.processes` is {t.processes}; use 1 or "
             "more (one per GPU).", "training.processes")
    _require(t.distributed in DISTRIBUTED, f"{where}: `training.distributed` is "
             f"{t.distributed!r}; use one of {', '.join(DISTRIBUTED)}.", "training.distributed")
    _require(t.kernels in KERNELS, f"{where}: `training.kernels` is {t.kernels!r}; use one of "
             f"{', '.join(KERNELS)}.", "training.kernels")
    _require(isinstance(t.torch_compile, bool), f"{where}: `training.torch_compile` must be "
             "true or false.", "training.torch_compile")
    _require(bool(t.output_dir.strip()), f"{where}: `training.output_dir` is empty; set a "
             "folder for the run.", "training.output_dir")


def uses_checkpointing(cfg: RunConfig) -> bool:
    """`training.gradient_checkpointing` as the run applies it: unset means on with a 4-bit
    base (where activations are most of what is left), else off."""
    setting = cfg.training.gradient_checkpointing
    return cfg.model.quantization == "4bit" if setting is None else bool(setting)


MAX_RANK = 4096


def check_lora_values(rank: int, alpha: float, dropout: float, where: str, prefix: str) -> None:
    """Shared range checks for the adapter section and each override."""
    _require(rank >= 1, f"{where}: `{prefix}rank` is {rank}; use a rank of at least 1 "
             "(8 or 16 are common).", prefix + "rank")
    _require(rank <= MAX_RANK, f"{where}: `{prefix}rank` is {rank}; ranks above {MAX_RANK} are "
             "not low-rank adaptation, use 8 to 256.", prefix + "rank")
    _require(math.isfinite(alpha) and alpha > 0, f"{where}: `{prefix}alpha` is {alpha}; use a "
             "positive alpha (often twice the rank).", prefix + "alpha")
    _require(math.isfinite(dropout) and 0.0 <= dropout < 1.0, f"{where}: `adapter.dropout` is "
             f"{dropout}; use a value in [0, 1), such as 0.05.", "adapter.dropout")


def check_trackers(cfg: RunConfig) -> None:
    """Refuse a tracker in ``training.report_to`` whose package is not installed, naming the
    extra to install (called before any weight is loaded)."""
    import importlib.util

    for name in cfg.training.report_to:
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise UserError(f"training.report_to names {name}, which is not installed; run "
                            f'pip install "graftlab[{name}]" (or remove it from report_to).',
                            field="training.report_to")
