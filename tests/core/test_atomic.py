"""Atomic files: a failure mid-write (an exception, a full disk) leaves the previous file or
folder intact and no temporary debris behind."""

from __future__ import annotations

import errno
import os

import pytest
from graftlab.core.atomic import atomic_dir, atomic_write_text
from graftlab.core.config import RunConfig


class FullDisk:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, real):
        self._real = real

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._real.close()


def test_full_disk_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "run.yaml"
    atomic_write_text(path, "old: 1\n")
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, "new: 2\n")
    assert path.read_text() == "old: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run.yaml"]


def test_run_yaml_save_failure_keeps_previous(tmp_path, monkeypatch):
    cfg = RunConfig()
    cfg.save(tmp_path / "run.yaml")
    before = (tmp_path / "run.yaml").read_text()
    cfg.training.max_steps = 7
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("rename failed")))
    with pytest.raises(OSError):
        cfg.save(tmp_path / "run.yaml")
    assert (tmp_path / "run.yaml").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.yaml"]


def test_exception_inside_atomic_dir_keeps_previous_folder(tmp_path):
    target = tmp_path / "adapter"
    with atomic_dir(target) as tmp:
        (tmp / "adapter_model.safetensors").write_bytes(b"good")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "adapter_model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert (target / "adapter_model.safetensors").read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_failed_adapter_export_keeps_previous_adapter(tmp_path, tiny_models):
    import torch
    from graftlab.core.adapter.export import save_adapter
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_models["llama"]),
                           LoraConfig(r=4, target_modules=["q_proj"]))
    out = tmp_path / "adapter"
    save_adapter(model, out, "base")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken_save(folder, **kwargs):
        (folder / "adapter_model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(1.0)
    model.save_pretrained = broken_save
    with pytest.raises(OSError):
        save_adapter(model, out, "base")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]
