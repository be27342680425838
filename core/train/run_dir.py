"""The run folder: run.yaml (resolved), metrics.jsonl, adapter/, checkpoints/."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from graftlab.core.adapter.plan import AdapterPlan
from graftlab.core.config import RunConfig, uses_checkpointing
from graftlab.core.errors import UserError


def check_run_dir(output_dir: str | Path) -> Path:
    """Refuse a run folder that is a file or holds another run; creates nothing."""
    run_dir = Path(output_dir).expanduser()
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"training.output_dir {run_dir} is a file; choose a folder path.",
                        field="training.output_dir")
    if run_dir.is_dir() and any((run_dir / n).exists() for n in
                                ("run.yaml", "adapter", "metrics.jsonl")):
        raise UserError(f"training.output_dir {run_dir} already holds a run; choose a new "
                        "folder (or pass --output) so the earlier run is kept.",
                        field="training.output_dir")
    return run_dir


def prepare_run_dir(output_dir: str | Path) -> Path:
    """Create the run folder, refusing one that is a file, unwritable, or holds another run."""
    run_dir = check_run_dir(output_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create training.output_dir {run_dir} ({exc.strerror}); "
                        "choose a folder you can write to.", field="training.output_dir") from None
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"cannot write to training.output_dir {run_dir}; choose a folder you "
                        "can write to.", field="training.output_dir")
    return run_dir


def write_resolved_run(run_dir: Path, cfg: RunConfig, plan: AdapterPlan, tree_task: str) -> Path:
    """Save run.yaml with the exact adapted module names (no globs), the resolved task and
    whether gradient checkpointing was used."""
    resolved = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, task=tree_task),
        adapter=plan.resolved(),
        training=dataclasses.replace(cfg.training, output_dir=str(run_dir),
                                     gradient_checkpointing=uses_checkpointing(cfg)),
    )
    path = run_dir / "run.yaml"
    resolved.save(path)
    return path
