"""Atomic files: a failure mid-write (an exception, a full disk) leaves the previous file or
folder intact and no temporary debris behind."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest
from graftlab.core import atomic
from graftlab.core.atomic import atomic_dir, atomic_write_text, recover_dir
from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError


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
    with pytest.raises(RuntimeError), atomic_dir(target, replace=True) as tmp:
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
    with pytest.raises(UserError, match="holds an earlier Graftlab export"):
        save_adapter(model, out, "base")  # replacing needs consent
    with pytest.raises(UserError, match="is full"):
        save_adapter(model, out, "base", overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_non_empty_folder_is_never_replaced_without_consent(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError), atomic_dir(target) as tmp:
        (tmp / "x").write_text("new")
    assert (target / "notes.txt").read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


@pytest.mark.skipif(atomic._renameat2 is None, reason="renameat2 is Linux (glibc >= 2.28) only")
def test_replacement_is_one_exchange_on_linux(tmp_path, monkeypatch):
    target = tmp_path / "adapter"
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("old")
    renames = []
    real_rename = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: renames.append((a, b)) or real_rename(a, b))
    with atomic_dir(target, replace=True) as tmp:
        (tmp / "f").write_text("new")
    assert renames == []  # no moment without a folder at the name: a single exchange
    assert (target / "f").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
from graftlab.core import atomic
mode, target = sys.argv[1], Path(sys.argv[2])
if mode == "two-renames":
    atomic._renameat2 = None  # as on a system without an atomic exchange
    real = os.rename
    calls = []
    def rename(a, b):
        calls.append(a)
        if len(calls) == 2:  # the old folder is aside, the new one not yet in place
            os.kill(os.getpid(), signal.SIGKILL)
        real(a, b)
    os.rename = rename
else:
    real_exchange = atomic.exchange
    def exchange(a, b):
        done = real_exchange(a, b)
        os.kill(os.getpid(), signal.SIGKILL)  # before the old folder is deleted
        return done
    atomic.exchange = exchange
with atomic.atomic_dir(target, replace=True) as tmp:
    (tmp / "f").write_text("new")
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["two-renames", "exchange"])
def test_kill_between_the_two_steps_loses_nothing(tmp_path, mode):
    if mode == "exchange" and atomic._renameat2 is None:
        pytest.skip("renameat2 is Linux only")
    target = tmp_path / "adapter"
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("old")
    script = tmp_path / "killed_write.py"
    script.write_text(textwrap.dedent(KILLED_WRITE))
    proc = subprocess.run([sys.executable, str(script), mode, str(target)], env=os.environ,
                          capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".adapter."))
    assert leftovers, "the kill left the interrupted replacement on disk"
    if mode == "two-renames":
        assert not target.exists()  # the moment the exchange avoids
    else:
        assert (target / "f").read_text() == "new"
    assert recover_dir(target) is not None  # what the next write or start runs
    assert (target / "f").read_text() == ("old" if mode == "two-renames" else "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "killed_write.py"]


def test_recovery_never_touches_look_alike_folders_of_the_user(tmp_path):
    from graftlab.core.atomic import atomic_dir, recover_dir

    target = tmp_path / "adapter"
    mine = [tmp_path / ".adapter.old-backup", tmp_path / ".adapter.staging-notes"]
    for folder in mine:
        folder.mkdir()
        (folder / "keep.txt").write_text("user data")
    assert recover_dir(target) is None
    with atomic_dir(target) as staging:
        (staging / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new"
    assert all((folder / "keep.txt").read_text() == "user data" for folder in mine)
