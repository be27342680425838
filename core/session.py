"""A training session: run.yaml in, trained adapter and metrics.jsonl out.

Order of work is chosen so that bad input fails fast and cheaply: the config, the module tree and
the adapter plan are checked on the meta device, then the output folder, then the data, and only
then are weights loaded. Every step emits plain events to the sinks (GUI, CLI, metrics.jsonl).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.checkpoints import CheckpointInfo
from core.config import RunConfig
from core.errors import RunStopped, UserError
from core.events import Event, Failed, Finished, JsonlSink, Message, Started
from core.module_tree import ModuleTree, build_tree
from core.run_control import RunControl
from core.selection import AdapterPlan, plan_adapter
from core.sources import ModelSource, resolve_source


@dataclass
class RunResult:
    run_dir: Path
    adapter_dir: Path | None
    steps: int
    stopped_early: bool
    train_loss: float | None


def load_tokenizer(source: ModelSource) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(source.path))
    except (OSError, ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{source.spec} has no usable tokenizer ({first}); the model folder "
                        "needs tokenizer.json or the tokenizer files saved with it.",
                        field="model.source") from None
    if tok.pad_token is None:  # Llama-style tokenizers ship without one
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def check_weights(source: ModelSource, allow_pickle: bool = False) -> None:
    """Refuse a source without loadable weights, before anything else is done with it."""
    spec = source.spec
    if source.kind == "config":
        raise UserError(f"{spec} is a bare config.json: it can be inspected but not trained; "
                        "point model.source at the model folder that holds the weights.",
                        field="model.source")
    if source.weights == "none":
        raise UserError(f"{source.path} holds no weights (*.safetensors); choose a folder "
                        "with the model's weights.", field="model.source")
    if source.weights == "pickle" and not allow_pickle:
        raise UserError(f"{source.path} only has pickle weights (.bin), which can run code "
                        "when loaded; convert them to safetensors, or set "
                        "`model.allow_pickle_weights: true` if you trust the file.",
                        field="model.allow_pickle_weights")


def load_base_model(spec: str, task: str = "auto", *, trust_remote_code: bool = False,
                    allow_pickle: bool = False, num_labels: int | None = None,
                    label_names: list[str] | None = None, dtype: Any = "auto",
                    device: str = "cpu") -> tuple[Any, Any, str]:
    """Load weights the way a user's model is always loaded. Returns (model, tokenizer, task)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from core.module_tree import infer_task
    from core.sources import load_auto_config

    source = resolve_source(spec, trust_remote_code)
    check_weights(source, allow_pickle)
    config = load_auto_config(source, trust_remote_code,
                              len(label_names) if label_names else num_labels)
    if task == "auto":
        task = infer_task(config)
    if label_names:
        config.id2label = dict(enumerate(label_names))
        config.label2id = {n: i for i, n in enumerate(label_names)}
    auto = AutoModelForSequenceClassification if task == "sequence-classification" \
        else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(str(source.path), config=config, dtype=dtype,
                                     use_safetensors=source.weights == "safetensors",
                                     trust_remote_code=trust_remote_code)
    except Exception as exc:  # corrupt/truncated files surface as many exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UserError(f"could not load the weights of {spec}: {first}; check that the "
                        "safetensors files are complete (re-download or re-save them).",
                        field="model.source") from None
    if device != "cpu":
        model.to(device)
    return model, load_tokenizer(source), task


def pick_device_and_precision(cfg: RunConfig) -> tuple[str, str, list[str]]:
    """Resolve ``auto`` device/precision; never fp16 on CPU (accelerate ignores it there)."""
    import torch

    notes: list[str] = []
    t = cfg.training
    cuda = torch.cuda.is_available()
    if t.device == "cuda" and not cuda:
        raise UserError("training.device is cuda but no CUDA GPU is available; set "
                        "`training.device: auto` or cpu.", field="training.device")
    device = "cuda" if (t.device == "auto" and cuda) or t.device == "cuda" else "cpu"
    precision = t.precision
    if precision == "auto":
        precision = "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and device == "cpu":
        notes.append("fp16 is not available on CPU (accelerate would silently run fp32); "
                     "training in fp32.")
        precision = "fp32"
    return device, precision, notes


def quiet_libraries() -> None:
    """No tqdm bars or deprecation chatter from the libraries: we report progress ourselves."""
    import warnings

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    # peft 0.21 calls a deprecated transformers property on every get_peft_model.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                            category=FutureWarning)


class TrainingSession(RunControl):
    """One training run. `run()` blocks; stop/pause requests may come from any thread."""

    def __init__(self, cfg: RunConfig, sinks: Sequence[Callable[[Event], None]] = (),
                 resume: bool = False) -> None:
        """Args:
            cfg: the run.
            sinks: callables that receive every event.
            resume: continue the run in ``cfg.training.output_dir`` from its latest complete
                checkpoint instead of starting a new run folder.
        """
        super().__init__()
        self.cfg = cfg
        self.resume = resume
        self.sinks = list(sinks)
        self.model: Any = None
        self.plan: AdapterPlan | None = None
        self.run_dir = Path(cfg.training.output_dir)
        self._jsonl: JsonlSink | None = None
        self._early: list[Event] = []

    def _module_tree(self) -> ModuleTree:
        """The module tree for planning: from config.json alone for Llama-family models (no
        meta-device skeleton to build), else from the skeleton."""
        from core.shape_tree import quick_tree

        m = self.cfg.model
        quick = quick_tree(m.source, m.task, m.trust_remote_code) if m.num_labels is None \
            else None
        return quick or build_tree(m.source, m.task, m.trust_remote_code, m.num_labels)

    def snapshot_adapter(self, out_dir: str | Path) -> list[tuple[Path, int]]:
        """Save the adapter as it is now (for "export while paused"); atomic like every export.

        Call it only while the run is paused (or finished): the training thread is then
        blocked between steps, so the weights are not changing underneath the save.
        """
        from core.export import save_adapter

        if self.model is None:
            raise UserError("the model is not loaded yet; wait for the first step, then pause "
                            "and export.")
        if not self.paused and self._jsonl is not None:
            raise UserError("pause the run before exporting its adapter mid-training.")
        source = resolve_source(self.cfg.model.source, self.cfg.model.trust_remote_code)
        return save_adapter(self.model, out_dir, source.name)

    def emit(self, event: Event) -> None:
        if self._jsonl is None:  # the run folder does not exist yet: replay these into it
            self._early.append(event)
        for sink in self.sinks:
            sink(event)

    def _open_run_dir(self, task: str, checkpoint: CheckpointInfo | None) -> None:
        """Create (or reopen, on resume) the run folder, once all input is known to be good."""
        from core.checkpoints import truncate_metrics
        from core.run_dir import prepare_run_dir, write_resolved_run

        assert self.plan is not None
        if checkpoint is not None:
            truncate_metrics(self.run_dir / "metrics.jsonl", checkpoint.step)
        else:
            self.run_dir = prepare_run_dir(self.cfg.training.output_dir)
            write_resolved_run(self.run_dir, self.cfg, self.plan, task)
        self._jsonl = JsonlSink(self.run_dir / "metrics.jsonl")
        for event in self._early:
            self._jsonl(event)
        self._early.clear()
        self.sinks.append(self._jsonl)
        if checkpoint is not None:
            self.emit(Message(f"resuming from {checkpoint.path.name} (step "
                              f"{checkpoint.step} of {checkpoint.max_steps})"))

    def _check_stop(self) -> None:
        if self.stop_requested:
            raise RunStopped

    # ---- the run --------------------------------------------------------------------------
    def run(self) -> RunResult:
        from core.checkpoints import latest_checkpoint
        from core.run_dir import check_run_dir

        cfg = self.cfg
        quiet_libraries()
        try:
            checkpoint = None
            if self.resume:  # fail fast on a folder that cannot be resumed
                self.run_dir = Path(cfg.training.output_dir)
                checkpoint = latest_checkpoint(self.run_dir)
            tree = self._module_tree()
            self.plan = plan_adapter(tree, cfg.adapter)
            for w in self.plan.warnings:
                self.emit(Message(w, "warning"))
            check_weights(resolve_source(cfg.model.source, cfg.model.trust_remote_code),
                          cfg.model.allow_pickle_weights)
            if checkpoint is None:
                check_run_dir(cfg.training.output_dir)  # fail before loading anything
            self._check_stop()
            return self._train(tree.task, checkpoint)
        except RunStopped:
            self.emit(Finished(0, True, None, None, 0.0))
            return RunResult(self.run_dir, None, 0, True, None)
        except UserError as exc:
            self.emit(Failed(exc.message, True, field=exc.field))
            raise
        except Exception as exc:
            self.emit(Failed(f"internal error: {exc}", False, traceback.format_exc()))
            raise
        finally:
            if self._jsonl is not None:
                self._jsonl.close()
                self.sinks.remove(self._jsonl)
                self._jsonl = None

    def _train(self, task: str, checkpoint: CheckpointInfo | None) -> RunResult:
        import torch
        from peft import get_peft_model
        from transformers import PrinterCallback

        from core.callbacks import SessionCallback, training_arguments
        from core.checkpoints import make_trainer_class
        from core.data import prepare
        from core.export import save_adapter
        from core.packing import choose_collator

        cfg, plan = self.cfg, self.plan
        assert plan is not None
        device, precision, notes = pick_device_and_precision(cfg)
        for n in notes:
            self.emit(Message(n, "warning"))
        source = resolve_source(cfg.model.source, cfg.model.trust_remote_code)
        tokenizer = load_tokenizer(source)
        data = prepare(cfg.data, tokenizer, task, cfg.training.seed)
        self.emit(Message(f"data: {len(data.train)} training examples ({data.format}), "
                          f"{data.num_dropped} dropped, {data.num_truncated} truncated"
                          + (f", {len(data.eval)} held out" if data.eval is not None else "")))
        self._check_stop()
        dtype = torch.bfloat16 if precision == "bf16" and device == "cuda" else torch.float32
        model, _tok, _task = load_base_model(
            cfg.model.source, task, trust_remote_code=cfg.model.trust_remote_code,
            allow_pickle=cfg.model.allow_pickle_weights, num_labels=cfg.model.num_labels,
            label_names=data.label_names, dtype=dtype, device=device)
        model.config.use_cache = False  # a KV cache in training is wasted work (and breaks packing)
        if model.config.pad_token_id is None:  # classifiers find the last token by padding
            model.config.pad_token_id = tokenizer.pad_token_id
        self._check_stop()
        torch.manual_seed(cfg.training.seed)  # LoRA A init draws from the global RNG
        self.model = get_peft_model(model, plan.lora_config())
        self._check_stop()
        self._open_run_dir(task, checkpoint)
        args = training_arguments(cfg, self.run_dir, device, precision,
                                  has_eval=data.eval is not None)
        started = Started(str(self.run_dir), 0, plan.trainable_params, plan.base_params,
                          device, precision, len(data.train))
        callback = SessionCallback(self, started)
        collator, packing_note = choose_collator(self.model, tokenizer, task,
                                                 cfg.training.packing)
        if packing_note:
            self.emit(Message(packing_note))
        trainer = make_trainer_class()(
            model=self.model, args=args, train_dataset=data.train, eval_dataset=data.eval,
            data_collator=collator, callbacks=[callback])
        trainer.checkpoint_limit = cfg.training.checkpoint_limit
        trainer.remove_callback(PrinterCallback)
        output = trainer.train(
            resume_from_checkpoint=str(checkpoint.path) if checkpoint else None)
        if callback.diverged:
            raise UserError(callback.diverged + ".", field="training.learning_rate")
        if data.eval is not None and not callback.evaluated_at_end:
            trainer.evaluate()
        step = trainer.state.global_step
        stopped = self.stop_requested
        adapter_dir: Path | None = None
        if not stopped or self.save_on_stop:
            adapter_dir = self.run_dir / "adapter"
            save_adapter(self.model, adapter_dir, source.name)
        self.emit(Finished(step, stopped, str(adapter_dir) if adapter_dir else None,
                           float(output.training_loss) if step else None,
                           callback.active_seconds()))
        return RunResult(self.run_dir, adapter_dir, step, stopped,
                         float(output.training_loss) if step else None)
