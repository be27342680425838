"""The bridge between transformers' Trainer and a training session: events out, control in."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, Any

from graftlab.core.config import RunConfig, uses_checkpointing
from graftlab.core.train.distributed import agree
from graftlab.core.train.events import (
    Checkpoint,
    Message,
    Paused,
    Resumed,
    Sample,
    Saving,
    Started,
    Step,
    UpdateNorms,
)
from transformers import TrainerCallback, TrainingArguments

PAUSE_TICK_S = 0.5  # several processes: how often rank 0 tells the others a pause goes on

if TYPE_CHECKING:
    from graftlab.core.train.session import TrainingSession


def training_arguments(cfg: RunConfig, run_dir: Path, device: str, precision: str,
                       has_eval: bool, wrap_classes: list[str] | None = None) -> TrainingArguments:
    """Map run.yaml's training section onto TrainingArguments.

    GPU path: bf16 autocast when ``precision`` resolved to bf16 (the session loads the weights in
    bf16 on CUDA as well), fused AdamW (one kernel per parameter group instead of a loop over
    tensors), optional ``torch.compile`` (``training.torch_compile``, off unless measured to
    win). Attention is transformers 5's default, SDPA, which the session keeps.
    """
    t = cfg.training
    if "tensorboard" in t.report_to:  # transformers 5 reads the event folder from here only
        import os

        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        max_steps=t.max_steps,
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        activation_checkpointing=uses_checkpointing(cfg),  # unset: on with a 4-bit base
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        logging_nan_inf_filter=False,  # a diverging run must show its NaN, not hide it
        # Evaluation is graftlab.core.train.scoring's, run by SessionCallback (task metrics,
        # one token-weighted loss over the split), so Trainer's own stays off.
        eval_strategy="no",
        # Checkpoints are requested by SessionCallback (steps, minutes, stop) and written
        # atomically by graftlab.core.train.checkpoints; Trainer's own schedule and rotation stay
        # off.
        save_strategy="no",
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        report_to=list(t.report_to) or "none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_pin_memory=False,
        ddp_find_unused_parameters=False,
        remove_unused_columns=False,
        label_names=["labels"],
        # Fused AdamW: CUDA kernels on a GPU; on CPU the fused path also exists (torch >= 2.4)
        # and is transformers 5's default, so both devices get the same optimizer.
        optim="adamw_torch_fused",
        torch_compile=t.torch_compile,
        **fsdp_arguments(cfg, wrap_classes),
    )


def fsdp_arguments(cfg: RunConfig, wrap_classes: list[str] | None) -> dict[str, Any]:
    """`training.distributed: fsdp` with several processes: the Trainer's FSDP, set the way LoRA
    needs it: the original parameters kept (``use_orig_params``, so frozen and trainable tensors
    can share a shard), one shard unit per decoder layer (`wrap_classes`, the model's
    ``_no_split_modules``)."""
    from graftlab.core.train.distributed import ranks

    if cfg.training.distributed != "fsdp" or not ranks().many:
        return {}
    config: dict[str, Any] = {"use_orig_params": True, "sync_module_states": True,
                              "cpu_ram_efficient_loading": False}
    if wrap_classes:
        config["transformer_layer_cls_to_wrap"] = list(wrap_classes)
    return {"fsdp": "full_shard auto_wrap", "fsdp_config": config}


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class SessionCallback(TrainerCallback):
    """Turns Trainer logs into events, and applies the session's pause and stop requests.

    Time spent paused is excluded from elapsed time, tokens/s and the ETA.
    """

    def __init__(self, session: TrainingSession, started: Started) -> None:
        self.session = session
        self.started = started
        self.evaluated_at_end = False
        self._t0 = monotonic()
        self._paused_total = 0.0
        self._last_time = 0.0
        self._last_tokens = 0
        self._first_step = 0
        self._last_checkpoint = 0.0
        self._norms_cost = 0.0
        self._norms_step = -1
        self.samples_cost = 0.0
        self._last_samples_cost = 0.0  # the latest round of samples, to project the next
        self.eval_cost = 0.0
        self._samples_skipped = False
        self.diverged: str | None = None

    def active_seconds(self) -> float:
        return monotonic() - self._t0 - self._paused_total

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0 = monotonic()
        self._first_step = state.global_step
        self._last_tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        self.session.emit(dataclasses.replace(self.started, total_steps=state.max_steps,
                                              start_step=state.global_step))
        if self.session.ranks.main:  # rank 0 scores; the others wait at the first step
            self.session.base_eval()  # after Started: a view that clears on Started keeps it

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
               **kwargs: Any) -> None:
        logs = logs or {}
        step = state.global_step
        if "loss" not in logs:
            return
        loss = float(logs["loss"])
        if not math.isfinite(loss):  # stop before a checkpoint can store the broken state
            self.diverged = (f"training diverged: the loss is {loss} at step {step}; lower "
                             "training.learning_rate (or check the data), then resume from the "
                             "last good checkpoint")
            control.should_training_stop = True
            control.should_save = False
        now = self.active_seconds()
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        dt = max(now - self._last_time, 1e-9)
        rate = (tokens - self._last_tokens) / dt
        self._last_time, self._last_tokens = now, tokens
        done = step - self._first_step
        eta = (state.max_steps - step) * now / done if done > 0 else None
        gpu = None
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.memory_allocated() / 2**20
        grad = logs.get("grad_norm")
        self.session.emit(Step(
            step=step, loss=loss, learning_rate=float(logs.get("learning_rate",
                                                                               0.0)),
            grad_norm=float(grad) if grad is not None and math.isfinite(float(grad)) else None,
            epoch=float(logs.get("epoch", state.epoch or 0.0)), tokens_per_s=rate,
            tokens_seen=tokens, elapsed_s=now, eta_s=eta, memory_mb=_rss_mb(),
            gpu_memory_mb=gpu))

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._last_checkpoint = self.active_seconds()
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.session.emit(Checkpoint(state.global_step, str(path)))

    def _emit_update_norms(self, step: int) -> None:
        """Heatmap data, computed here in the worker thread from the small factors.

        On big models this costs seconds, so it is skipped while its total cost would exceed
        5% of training time.
        """
        every = self.session.cfg.training.update_norms_every
        if not every or step % every or self._norms_cost > 0.05 * self.active_seconds():
            return
        from graftlab.core.adapter.update_norms import relative_update_sizes

        t = monotonic()
        sizes = relative_update_sizes(self.session.model)
        self._norms_cost += monotonic() - t
        self._norms_step = step
        self.session.emit(UpdateNorms(step, sizes))

    def _emit_samples(self, step: int) -> None:
        """The sample prompts answered by the current adapter (greedy, capped length).

        Skipped, with one message the first time, while their total cost, with the next round
        counted at the cost of the last one, would exceed ``training.sample_max_share`` (5 % by
        default) of training time. The first round always runs: its cost is not known before.
        """
        t = self.session.cfg.training
        if not t.sample_every or not t.sample_prompts or step % t.sample_every:
            return
        if t.sample_max_share < 1 and self.samples_cost + self._last_samples_cost > \
                t.sample_max_share * self.active_seconds():
            if not self._samples_skipped:
                self._samples_skipped = True
                self.session.emit(Message(
                    f"samples skipped from step {step} on while they would take more than "
                    f"{100 * t.sample_max_share:g}% of training time (raise "
                    "training.sample_every or training.sample_max_share for more)", "warning"))
            return
        from graftlab.core.train.samples import sample_text

        start = monotonic()
        for prompt in t.sample_prompts:
            text = sample_text(self.session.model, self.session.tokenizer, self.session.task,
                               prompt, t.sample_max_new_tokens)
            self.session.emit(Sample(step, prompt, text))
        self._last_samples_cost = monotonic() - start
        self.samples_cost += self._last_samples_cost

    def evaluate_now(self, step: int) -> None:
        """Score the adapted model on the eval split (an Eval event); the time is counted."""
        start = monotonic()
        self.session.evaluate(step)
        self.eval_cost += monotonic() - start

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step
        if self.session.cfg.training.update_norms_every and step and step != self._norms_step \
                and self.session.ranks.main:
            from graftlab.core.adapter.update_norms import relative_update_sizes

            self.session.emit(UpdateNorms(step, relative_update_sizes(self.session.model)))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        session = self.session
        step = state.global_step
        main = session.ranks.main
        if main:  # extras on rank 0 alone; the other ranks wait for it in `agree` below
            self._emit_update_norms(step)
            self._emit_samples(step)
            every = session.cfg.training.eval_steps
            if session.has_eval and every and step % every == 0 and not session.stop_requested:
                self.evaluate_now(step)
                self.evaluated_at_end = step >= state.max_steps
        t = session.cfg.training
        save = bool((t.checkpoint_every and step % t.checkpoint_every == 0) or (
            t.checkpoint_minutes
            and self.active_seconds() - self._last_checkpoint >= 60 * t.checkpoint_minutes))
        pause = session.paused and not session.stop_requested
        # Rank 0's decisions (its clock, its control requests) hold on every rank.
        pause, save, stop, keep = agree([pause, save, session.stop_requested,
                                         session.save_on_stop])
        if stop and not session.stop_requested:
            session.request_stop(save=bool(keep))
        if pause:
            stop = self._pause(step) or stop
        if save:
            control.should_save = True
        if stop:
            control.should_training_stop = True
            control.should_save = True  # a stopped run can always be resumed
        if control.should_save:
            session.emit(Saving(state.global_step, "checkpoint"))
        return control

    def _pause(self, step: int) -> bool:
        """Block between steps until resumed or stopped (returns True: stopped); paused time
        is not training time.

        With several processes, rank 0 waits for the request and tells the others twice a
        second whether the pause goes on, so every rank leaves it at once (and no collective
        waits long enough to time out, however long the pause)."""
        session = self.session
        session.emit(Paused(step))
        t = monotonic()
        stop = False
        if not session.ranks.many:
            session.wait_while_paused()  # marks the run blocked; snapshots wait for that
            stop = session.stop_requested
        else:
            over = False
            while not over:
                if session.ranks.main:
                    over = session.wait_while_paused(PAUSE_TICK_S)
                over, stop, keep = agree([over, session.stop_requested, session.save_on_stop])
                if stop and not session.stop_requested:
                    session.request_stop(save=bool(keep))
        self._paused_total += monotonic() - t
        if not stop:
            session.emit(Resumed(step))
        return bool(stop)
