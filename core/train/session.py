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

from graftlab.core.adapter.plan import AdapterPlan, plan_adapter
from graftlab.core.config import RunConfig
from graftlab.core.errors import RunStopped, UserError
from graftlab.core.model.loading import (
    check_weights,
    load_base_model,
    load_tokenizer,
    quiet_libraries,
)
from graftlab.core.model.module_tree import ModuleTree, build_tree
from graftlab.core.model.sources import resolve_source
from graftlab.core.train import distributed
from graftlab.core.train.checkpoints import CheckpointInfo
from graftlab.core.train.device import pick_device_and_precision
from graftlab.core.train.events import (
    Download,
    Eval,
    Event,
    Failed,
    Finished,
    JsonlSink,
    Message,
    Saving,
    Sink,
    Started,
    Step,
)
from graftlab.core.train.lifecycle import RunControl
from graftlab.core.train.live import LivePresence


def download_reporter(emit: Sink,
                      every_s: float = 0.5) -> Callable[[int, int, str], None]:
    """Turns byte counts from a hub download into Download events, at most every `every_s`."""
    from time import monotonic

    last = [0.0]

    def report(done: int, total: int, name: str) -> None:
        now = monotonic()
        if done >= total or now - last[0] >= every_s:
            last[0] = now
            emit(Download(done, total, name))

    return report


RUNTIME_NAMES = {"vllm": "vLLM", "llama.cpp": "llama.cpp", "peft": "PEFT",
                 "size": "adapter size"}


def module_tree_for(cfg: RunConfig) -> ModuleTree:
    """The module tree for planning: from config.json alone for Llama-family models (no
    meta-device skeleton to build), else from the skeleton. Opens no weight file."""
    from graftlab.core.model.shape_tree import quick_tree

    m = cfg.model
    quick = quick_tree(m.source, m.task, m.trust_remote_code) if m.num_labels is None else None
    return quick or build_tree(m.source, m.task, m.trust_remote_code, m.num_labels)


@dataclass
class RunResult:
    run_dir: Path
    adapter_dir: Path | None
    steps: int
    stopped_early: bool
    train_loss: float | None


class TrainingSession(RunControl):
    """One training run. `run()` blocks; stop/pause requests may come from any thread."""

    def __init__(self, cfg: RunConfig, sinks: Sequence[Sink] = (),
                 resume: bool = False, strict: bool = False) -> None:
        """Args:
            cfg: the run.
            sinks: callables that receive every event.
            resume: continue the run in ``cfg.training.output_dir`` from its latest complete
                checkpoint instead of starting a new run folder.
            strict: a compatibility finding (vLLM, llama.cpp, PEFT) is an error before
                anything is loaded, instead of a warning.
        """
        super().__init__()
        self.strict = strict
        self.cfg = cfg
        self.resume = resume
        self.sinks = list(sinks)
        self.model: Any = None
        self.plan: AdapterPlan | None = None
        self.run_dir = Path(cfg.training.output_dir)
        self._jsonl: JsonlSink | None = None
        self._early: list[Event] = []
        self.tokenizer: Any = None
        self.task = "causal-lm"
        self._eval_data: Any = None
        self._eval_collator: Any = None
        self.costs: dict[str, float] = {}
        """Seconds spent on extras, for the record: base_eval, eval, samples, and train (all
        active training time, extras included)."""
        self.live: LivePresence | None = None  # the lock, live.json and control.json
        self.tree: ModuleTree | None = None
        self.ranks = distributed.ranks()
        """This process's place in a torchrun / accelerate job; only rank 0 (`ranks.main`)
        writes the run folder and reports events."""

    @property
    def has_eval(self) -> bool:
        return self._eval_data is not None

    def evaluate(self, step: int, base: bool = False) -> None:
        """Score the model on the eval split and emit an Eval event (``base``: adapters off)."""
        from graftlab.core.train.scoring import evaluate

        scores = evaluate(self.model, self._eval_data, self._eval_collator, self.task,
                          self.cfg.training.batch_size, base=base)
        self.emit(Eval(step, base=base, **scores.event_fields()))

    def base_eval(self) -> None:
        """The base model's scores, once, as training begins (the callback calls this right
        after Started). Not again on resume: the run's metrics.jsonl already has them."""
        from time import monotonic

        from graftlab.core.train.scoring import base_eval_wanted

        mode = self.cfg.training.base_eval
        if self.resume or not self.has_eval or not base_eval_wanted(mode, len(self._eval_data)):
            return
        start = monotonic()
        self.evaluate(0, base=True)
        self.costs["base_eval"] = monotonic() - start
        self.emit(Message(f"base model scored on {len(self._eval_data)} eval examples in "
                          f"{self.costs['base_eval']:.1f} s"))

    def _go_live(self) -> None:
        """Hold the run folder's lock and obey its control file from now until the end (only
        the first process of a torchrun job: the others follow it)."""
        if self.live is None and self.ranks.main:
            self.live = LivePresence(self.run_dir, self)
            try:
                self.live.open()
            except BaseException:
                self.live = None
                raise

    def snapshot_adapter(self, out_dir: str | Path, overwrite: bool = False,
                         timeout_s: float = 60.0) -> list[tuple[Path, int]]:
        """Save the adapter as it is now (for "export while paused"); atomic like every export.

        Waits (up to `timeout_s`) until the training thread is really blocked between steps,
        so the weights are not changing underneath the save; a pause that was only requested
        is not enough.
        """
        from graftlab.core.adapter.export import save_adapter

        if self.fsdp:
            raise UserError("export while paused is not available with `training.distributed: "
                            "fsdp` (the model is sharded across the processes); stop the run, "
                            "which saves its adapter.")
        if self.model is None:
            raise UserError("the model is not loaded yet; wait for the first step, then pause "
                            "and export.")
        if self._jsonl is not None:  # running: only between steps, in a pause
            if not self.paused:
                raise UserError("pause the run before exporting its adapter mid-training.")
            if not self.wait_until_blocked(timeout_s):
                raise UserError(f"the run did not reach a pause within {timeout_s:g} s (the "
                                "current step is still running); try the export again in a "
                                "moment.")
        source = resolve_source(self.cfg.model.source, self.cfg.model.trust_remote_code)
        self._sync_metrics()  # the model card reads the steps and evals so far
        return save_adapter(self.model, out_dir, source.name, overwrite,
                            run_dir=self.run_dir if self._jsonl is not None else None)

    def _sync_metrics(self) -> None:
        sync = getattr(self._jsonl, "sync", None)
        if sync is not None:
            sync()

    def emit(self, event: Event) -> None:
        self.lifecycle.apply(event)  # Started, Paused, Finished and Failed move the phase
        if not self.ranks.main:  # rank 0 reports for the whole job
            return
        if self.live is not None and isinstance(event, Step | Failed):
            if isinstance(event, Step):
                self.live.step = event.step
            else:
                self.live.error = event.message
        if self._jsonl is None:  # the run folder does not exist yet: replay these into it
            self._early.append(event)
        for sink in self.sinks:
            sink(event)

    def _open_run_dir(self, task: str, checkpoint: CheckpointInfo | None) -> None:
        """Create (or reopen, on resume) the run folder, once all input is known to be good."""
        from graftlab.core.train.checkpoints import truncate_metrics
        from graftlab.core.train.run_dir import prepare_run_dir, write_resolved_run

        assert self.plan is not None
        if not self.ranks.main:  # rank 0 writes the folder; the barrier after waits for it
            self.run_dir = Path(self.cfg.training.output_dir).expanduser()
            return
        if checkpoint is not None:
            truncate_metrics(self.run_dir / "metrics.jsonl", checkpoint.step)
        else:
            self.run_dir = prepare_run_dir(self.cfg.training.output_dir)
            self._go_live()
            cfg = self.cfg
            if self.ranks.many:  # as launched: a resume starts the same number again
                import dataclasses

                cfg = dataclasses.replace(cfg, training=dataclasses.replace(
                    cfg.training, processes=self.ranks.local_world_size))
            write_resolved_run(self.run_dir, cfg, self.plan, task)
        metrics = self.run_dir / "metrics.jsonl"
        if self.live is not None:  # where this process's lines begin, for attached readers
            self.live.metrics_offset = metrics.stat().st_size if metrics.exists() else 0
            self.live.write()
        self._jsonl = JsonlSink(metrics)
        for event in self._early:
            self._jsonl(event)
        self._early.clear()
        self.sinks.append(self._jsonl)
        if checkpoint is not None:
            self.emit(Message(f"resuming from {checkpoint.path.name} (step "
                              f"{checkpoint.step} of {checkpoint.max_steps})"))

    def _check_compat(self, tree: ModuleTree) -> None:
        """The export rules the window shows before Start, as one warning per finding."""
        from graftlab.core.adapter.compat import check_plan

        assert self.plan is not None
        findings = check_plan(self.plan, tree.model_type, tree.tie_word_embeddings)
        names = [RUNTIME_NAMES.get(f.target, f.target) for f in findings]
        lines = [f"{name}: {f.message}" for name, f in zip(names, findings, strict=True)]
        for line in lines:
            self.emit(Message(line, "warning"))
        if self.strict and lines:
            runtimes = ", ".join(dict.fromkeys(names))
            raise UserError(f"--strict: {len(lines)} compatibility finding(s) for {runtimes} "
                            f"(first, {lines[0].rstrip('.')}); change the adapter settings or "
                            "train without --strict.", field="adapter")

    def _chunked_loss(self, task: str) -> bool:
        """`training.chunked_loss` for the loaded model, said in the run log."""
        from graftlab.core.train.chunked_loss import (
            chunk_tokens,
            decoder_and_head,
            unsupported_reason,
            use_chunked_loss,
        )

        mode = self.cfg.training.chunked_loss
        if task != "causal-lm":
            return False
        causal, _decoder, head = decoder_and_head(self.model)
        vocab = head.weight.shape[0] if head is not None else 0
        if not use_chunked_loss(mode, task, vocab):
            return False
        why = unsupported_reason(causal)
        if why:
            if mode == "on":
                raise UserError(f"`training.chunked_loss: on` cannot be used with this model: "
                                f"{why}; set `training.chunked_loss: off`.",
                                field="training.chunked_loss")
            self.emit(Message(f"chunked loss: off ({why})"))
            return False
        self.emit(Message(f"chunked loss: on, {chunk_tokens(vocab):,} tokens per chunk of the "
                          f"{vocab:,}-token vocabulary (the full logits are never held)"))
        return True

    def _prepare_base(self, model: Any, dtype: Any, kernels: Any) -> Any:
        """A quantized base made ready for k-bit training, and the fused kernels, each said in
        the run log."""
        quantization = self.cfg.model.quantization
        if quantization != "none":
            from graftlab.core.model.quantization import describe, prepare_for_training

            model = prepare_for_training(model)
            self.emit(Message(describe(quantization, dtype)))
        if kernels.use:
            from graftlab.core.train.kernels import apply_kernels

            apply_kernels(model)
        self.emit(Message(kernels.message))
        return model

    def _check_stop(self) -> None:
        # Several processes stop together, at a step end (SessionCallback agrees on it): rank 0
        # alone reads the requests, and leaving before the others would strand them.
        if self.stop_requested and not self.ranks.many:
            raise RunStopped

    # ---- the run --------------------------------------------------------------------------
    def check(self, claim: bool = True) -> CheckpointInfo | None:
        """Everything that can be refused before a weight is loaded: the resume point, the
        module tree and adapter plan, compatibility (`strict`), trackers, the weight files and
        the run folder. Returns the checkpoint to resume from. `claim`: also take the run
        folder's lock (the training process does; the launcher of a multi-process run calls
        this first with `claim=False`, so bad input fails before any process starts)."""
        from graftlab.core.config import check_trackers
        from graftlab.core.train.checkpoints import latest_checkpoint
        from graftlab.core.train.run_dir import check_run_dir

        cfg = self.cfg
        checkpoint = None
        if self.resume:  # fail fast on a folder that cannot be resumed
            self.run_dir = Path(cfg.training.output_dir)
            checkpoint = latest_checkpoint(self.run_dir)
            steps = cfg.training.max_steps
            if 0 < steps <= checkpoint.step:
                raise UserError(f"{self.run_dir} already trained {checkpoint.step} of "
                                f"{steps} steps; pass a larger --max-steps to train on "
                                "(its adapter is kept as it is).", field="resume")
            if claim:
                self._go_live()  # refuses a folder another process still trains in
        self._check_fsdp()
        tree = self.tree = module_tree_for(cfg)
        self.plan = plan_adapter(tree, cfg.adapter)
        for w in self.plan.warnings:
            self.emit(Message(w, "warning"))
        self._check_compat(tree)
        check_trackers(cfg)  # a missing tracker package: one sentence, before any weight
        check_weights(resolve_source(cfg.model.source, cfg.model.trust_remote_code),
                      cfg.model.allow_pickle_weights)
        if checkpoint is None and self.ranks.main:  # the others never write it
            check_run_dir(cfg.training.output_dir)  # fail before loading anything
            if claim and self.run_dir.is_dir():  # made beforehand (a detached run's log)
                self._go_live()
        return checkpoint

    @property
    def fsdp(self) -> bool:
        """Sharded training: `training.distributed: fsdp` with several processes."""
        return self.cfg.training.distributed == "fsdp" and (
            self.ranks.many or self.cfg.training.processes > 1)

    def _check_fsdp(self) -> None:
        if not self.fsdp:
            return
        if self.cfg.model.quantization != "none":  # bitsandbytes weights are not sharded here
            raise UserError(f"`training.distributed: fsdp` cannot shard a "
                            f"{self.cfg.model.quantization} base; use `training.distributed: "
                            "ddp` (each GPU holds the quantized base) or "
                            "`model.quantization: none`.", field="training.distributed")
        device, _precision, _notes = pick_device_and_precision(self.cfg)
        if device != "cuda":  # accelerate would quietly train data-parallel instead
            raise UserError("`training.distributed: fsdp` needs CUDA GPUs (accelerate shards "
                            "a model only there); on CPU use `training.distributed: ddp`.",
                            field="training.distributed")

    def _without_extras(self) -> None:
        """FSDP: a sharded model runs forward only with every rank, so the extras rank 0 runs
        alone (update norms, samples, evaluation during training) are off, said once."""
        import dataclasses

        t = self.cfg.training
        if not (t.update_norms_every or t.sample_every or self._eval_data is not None):
            return
        self.cfg = dataclasses.replace(self.cfg, training=dataclasses.replace(
            t, update_norms_every=0, sample_every=0))
        self._eval_data = None
        self.emit(Message("fsdp: update norms, samples and evaluation are off while the model "
                          "is sharded; evaluate the adapter afterwards with `graftlab eval`",
                          "warning"))

    def run(self) -> RunResult:
        quiet_libraries()
        ok = False
        try:
            checkpoint = self.check()
            assert self.tree is not None
            tree = self.tree
            self._check_stop()
            result = self._train(tree.task, checkpoint)
            ok = True
            return result
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
            if self.live is not None:
                self.live.close()
            distributed.finish(ok)

    def _train(self, task: str, checkpoint: CheckpointInfo | None) -> RunResult:
        import torch
        from graftlab.core.adapter.export import save_adapter
        from graftlab.core.data.dataset import prepare
        from graftlab.core.data.packing import choose_collator
        from graftlab.core.train.callbacks import SessionCallback, training_arguments
        from graftlab.core.train.checkpoints import make_trainer_class
        from graftlab.core.train.preflight import (
            attn_implementation,
            check_run_options,
            config_dict,
            data_summary,
            fit_sentence,
            memory_for,
            resolve_packing,
        )
        from peft import get_peft_model
        from transformers import PrinterCallback

        cfg, plan = self.cfg, self.plan
        assert plan is not None
        device, precision, notes = pick_device_and_precision(cfg)
        for n in notes:
            self.emit(Message(n, "warning"))
        distributed.init(device)
        source = resolve_source(cfg.model.source, cfg.model.trust_remote_code)
        model_config = config_dict(source)
        assert self.tree is not None
        kernels = check_run_options(cfg, self.tree, device, model_config)  # before any weight
        tokenizer = load_tokenizer(source)
        self.tokenizer, self.task = tokenizer, task
        with distributed.main_first():  # tokenized once; the other ranks read the cache
            data = prepare(cfg.data, tokenizer, task, cfg.training.seed)
        self.emit(Message(f"data: {len(data.train)} training examples ({data.format}), "
                          f"{data.num_dropped} dropped, {data.num_truncated} truncated"
                          + (f", {len(data.eval)} held out" if data.eval is not None else "")))
        summary = data_summary(data)
        decision = resolve_packing(cfg, self.tree, summary.lengths, device,
                                   attn_implementation(model_config))
        fits = fit_sentence(memory_for(cfg, self.tree, plan, device, None, summary, decision,
                                       model_config), cfg)
        if fits:  # the same sentence as `graftlab plan`; the run still goes ahead
            self.emit(Message(fits, "warning"))
        self._check_stop()
        # Seed before anything random is built: a new classification head is initialised
        # inside from_pretrained, and LoRA's A matrices inside get_peft_model.
        from transformers import set_seed

        set_seed(cfg.training.seed)
        dtype = torch.bfloat16 if precision == "bf16" and device == "cuda" else torch.float32
        model, _tok, _task = load_base_model(
            cfg.model.source, task, trust_remote_code=cfg.model.trust_remote_code,
            allow_pickle=cfg.model.allow_pickle_weights, num_labels=cfg.model.num_labels,
            label_names=data.label_names, dtype=dtype, device=device,
            on_download=download_reporter(self.emit), quantization=cfg.model.quantization,
            keep_modules=[*self.tree.head, *plan.saved_modules])
        model = self._prepare_base(model, dtype, kernels)
        model.config.use_cache = False  # a KV cache in training is wasted work (and breaks packing)
        if model.config.pad_token_id is None:  # classifiers find the last token by padding
            model.config.pad_token_id = tokenizer.pad_token_id
        self._check_stop()
        torch.manual_seed(cfg.training.seed)  # LoRA A init draws from the global RNG
        self.model = get_peft_model(model, plan.lora_config())
        self._check_stop()
        self._open_run_dir(task, checkpoint)
        distributed.barrier()  # the run folder exists (rank 0 made it) before any rank goes on
        if task == "sequence-classification" and cfg.training.sample_every and \
                cfg.training.sample_prompts:
            self.emit(Message("samples of a classifier are its predicted label for each "
                              "sample prompt"))
        if data.eval is not None:
            from graftlab.core.data.dataset import make_collator

            self._eval_data, self._eval_collator = data.eval, make_collator(tokenizer, task)
        if self.fsdp:
            self._without_extras()
            cfg = self.cfg
        args = training_arguments(cfg, self.run_dir, device, precision,
                                  has_eval=data.eval is not None,
                                  wrap_classes=getattr(model, "_no_split_modules", None))
        started = Started(str(self.run_dir), 0, plan.trainable_params, plan.base_params,
                          device, precision, len(data.train),
                          world_size=self.ranks.world_size,
                          quantization=cfg.model.quantization)
        if self.ranks.many:
            self.emit(Message(f"{self.ranks.world_size} processes ({cfg.training.distributed}), "
                              f"{cfg.training.batch_size} examples per process per micro-batch; "
                              "rank 0 writes the run folder"))
        callback = SessionCallback(self, started)
        collator, packing_note = choose_collator(self.model, tokenizer, task, decision)
        if packing_note:
            self.emit(Message(packing_note))
        trainer = make_trainer_class()(
            model=self.model, args=args, train_dataset=data.train, eval_dataset=data.eval,
            data_collator=collator, callbacks=[callback])
        trainer.checkpoint_limit = cfg.training.checkpoint_limit
        trainer.chunked_loss = self._chunked_loss(task)
        trainer.remove_callback(PrinterCallback)
        output = trainer.train(
            resume_from_checkpoint=str(checkpoint.path) if checkpoint else None)
        diverged = callback.diverged or trainer.nonfinite
        if diverged:
            raise UserError(diverged + ".", field="training.learning_rate")
        stopped = self.stop_requested
        step = trainer.state.global_step
        if self.has_eval and not callback.evaluated_at_end and self.ranks.main and (
                not stopped or cfg.training.eval_on_stop):
            callback.evaluate_now(step)
        self.costs.update(eval=callback.eval_cost, samples=callback.samples_cost,
                          train=callback.active_seconds())
        adapter_dir: Path | None = None
        if not stopped or self.save_on_stop:
            adapter_dir = self.run_dir / "adapter"
            self.emit(Saving(trainer.state.global_step, "adapter"))
            self._sync_metrics()  # the model card reads the steps and evals from the file
            with distributed.full_params(trainer):  # FSDP: rank 0 holds all of it (collective)
                if self.ranks.main:
                    save_adapter(self.model, adapter_dir, source.name, overwrite=True,
                                 run_dir=self.run_dir)
        self.emit(Finished(step, stopped, str(adapter_dir) if adapter_dir else None,
                           float(output.training_loss) if step else None,
                           callback.active_seconds()))
        return RunResult(self.run_dir, adapter_dir, step, stopped,
                         float(output.training_loss) if step else None)
