"""Crash-safe checkpoints and exact resume.

Trainer's own checkpoint writing is not atomic (transformers #35782: a checkpoint cut off
mid-write breaks auto-resume; the fixes #27820 and #35580 did not survive). So each checkpoint is
written into a staging folder on the same filesystem, fsynced, given a completion marker that
lists a SHA-256 of every file, and only then renamed into place. Resume uses only checkpoints
whose marker is present and whose files still match it: those are the ones this app wrote, which
matters because their optimizer and RNG files are pickles (loaded with ``weights_only=True``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graftlab.core.atomic import atomic_write_text, fsync_tree
from graftlab.core.errors import UserError

MARKER = "graftlab-checkpoint.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    max_steps: int


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_marker(folder: Path, step: int, max_steps: int) -> None:
    files = {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}
    marker = {"app": "graftlab", "step": step, "max_steps": max_steps, "files": files}
    (folder / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")


def verify(folder: Path) -> CheckpointInfo | None:
    """The checkpoint's info if it is complete and unmodified, else None."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        if marker.get("app") != "graftlab":
            return None
        for name, digest in marker["files"].items():
            if "/" in name or name.startswith("..") or _sha256(folder / name) != digest:
                return None
        return CheckpointInfo(folder, int(marker["step"]), int(marker["max_steps"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def complete_checkpoints(root: Path) -> list[CheckpointInfo]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and _CKPT.match(p.name):
            info = verify(p)
            if info is not None:
                found.append(info)
    return sorted(found, key=lambda c: c.step)


def rotate(root: Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints; remove older ones and stale staging."""
    for stale in root.glob(".staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    done = complete_checkpoints(root)
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old.path, ignore_errors=True)


def save_atomically(trainer: Any, model: Any, trial: Any, save: Any, root: Path,
                    keep: int) -> Path:
    """Run Trainer's checkpoint writer (`save`) into a staging folder, then publish it.

    With several processes every rank writes into the same staging folder (its RNG state;
    rank 0 also the adapter, optimizer and trainer state): rank 0 makes the folder and, once
    all ranks are done, marks, renames and rotates; barriers keep the ranks in step.
    """
    from graftlab.core.train import distributed

    main = distributed.is_main()
    step = trainer.state.global_step
    final = root / f"checkpoint-{step}"
    done = distributed.agree([verify(final) is not None if main else False])[0]
    if done:  # e.g. a stop right after a periodic checkpoint
        return final
    staging = root / f".staging-{step}"  # one name that every rank knows
    if main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # a leftover of a killed run (ours)
        staging.mkdir()
    distributed.barrier()
    trainer._graftlab_staging = staging
    try:
        save(model, trial)
        distributed.barrier()  # every rank's files are in the staging folder
        if main:
            folder = staging / final.name
            write_marker(folder, step, trainer.state.max_steps)
            fsync_tree(folder)
            if final.exists():  # an incomplete leftover from a crash
                shutil.rmtree(final)
            os.replace(folder, final)
    finally:
        trainer._graftlab_staging = None
        if main:
            shutil.rmtree(staging, ignore_errors=True)
    if main:
        rotate(root, keep)
    distributed.barrier()  # published before any rank trains on
    return final


def make_trainer_class() -> type:
    """A Trainer whose checkpoints are written atomically (imported lazily: transformers)."""
    from transformers import Trainer

    class AtomicCheckpointTrainer(Trainer):  # type: ignore[misc]
        checkpoint_limit = 2
        nonfinite: str | None = None  # why training stopped: a non-finite adapter weight
        chunked_loss = False  # causal LM: the chunked cross-entropy (train/chunked_loss.py)
        _graftlab_staging: Path | None = None

        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            if not self.chunked_loss or return_outputs:  # eval wants logits: the plain path
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            from graftlab.core.train.chunked_loss import compute_chunked_loss

            # normalised like the plain path: by num_items_in_batch exactly when the model
            # would have received it (then the Trainer does not divide by accumulation again)
            items = num_items_in_batch if self.model_accepts_loss_kwargs else None
            return compute_chunked_loss(model, inputs, items)

        def _get_output_dir(self, trial: Any) -> str:
            if self._graftlab_staging is not None:
                return str(self._graftlab_staging)
            return str(super()._get_output_dir(trial))

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            from graftlab.core.adapter.export import finite_check

            # The loss is checked only at logging steps; the weights are checked here, before
            # every checkpoint, so a "last good" checkpoint never holds NaN.
            bad = finite_check(self.model)
            if bad:
                self.nonfinite = (f"training diverged: {bad} at step {self.state.global_step}; "
                                  "lower training.learning_rate (or check the data), then "
                                  "resume from the last good checkpoint")
                self.control.should_training_stop = True
                return
            save_atomically(self, model, trial, super()._save_checkpoint,
                            Path(self.args.output_dir), self.checkpoint_limit)

    return AtomicCheckpointTrainer


def truncate_metrics(path: Path, step: int) -> None:
    """Cut metrics.jsonl back to the checkpoint at `step` (inclusive), atomically.

    After a crash the file may hold steps past the last checkpoint, and a torn last line; the
    resumed run logs those steps again, so each step then appears exactly once.
    """
    if not path.is_file():
        return
    kept: list[str] = []
    cut = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.readlines()
    for i, line in enumerate(lines):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if data.get("event") == "checkpoint" and data.get("step") == step:
            cut = i
    if cut is None:  # no event for it (file lost its tail): keep lines for steps <= step
        for line in lines:
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            if data.get("event") in ("finished", "failed"):
                continue
            if data.get("step", 0) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
    else:
        for line in lines[: cut + 1]:
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            if data.get("event") not in ("finished", "failed"):
                kept.append(line if line.endswith("\n") else line + "\n")
    atomic_write_text(path, "".join(kept))


@dataclass(frozen=True)
class ResumableRun:
    run_dir: Path
    step: int
    max_steps: int
    finished: bool


def latest_checkpoint(run_dir: Path) -> CheckpointInfo:
    done = complete_checkpoints(run_dir / "checkpoints")
    if not (run_dir / "run.yaml").is_file():
        raise UserError(f"{run_dir} is not a Graftlab run folder (no run.yaml); choose the "
                        "folder a run was written to.", field="resume")
    if not done:
        raise UserError(f"{run_dir} has no complete checkpoint to resume from; set "
                        "training.checkpoint_every, or start the run again.", field="resume")
    return done[-1]


def list_resumable(root: Path) -> list[ResumableRun]:
    """Run folders under `root` (and `root` itself) that hold a complete checkpoint."""
    out = []
    candidates = [root] + (sorted(p for p in root.iterdir() if p.is_dir())
                           if root.is_dir() else [])
    for run_dir in candidates:
        if not (run_dir / "run.yaml").is_file():
            continue
        done = complete_checkpoints(run_dir / "checkpoints")
        if done:
            last = done[-1]
            out.append(ResumableRun(run_dir, last.step, last.max_steps,
                                    _finished(run_dir) or last.step >= last.max_steps))
    return out


def _finished(run_dir: Path) -> bool:
    """Whether metrics.jsonl ends with a run that finished (not stopped early)."""
    path = run_dir / "metrics.jsonl"
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))  # the last event is in the tail
            tail = fh.read().decode("utf-8", errors="replace").strip().splitlines()
        last = json.loads(tail[-1]) if tail else {}
    except (OSError, json.JSONDecodeError):
        return False
    return last.get("event") == "finished" and not last.get("stopped_early", True)
