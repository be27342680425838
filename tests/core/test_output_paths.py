"""Output paths: an export never deletes or replaces what Graftlab did not write, replacing an
earlier export needs consent, and a full disk, a denied write or a symlink is one sentence with
nothing on disk changed."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from graftlab.core.adapter.destination import (
    OUTPUT_MARKER,
    OutputExistsError,
    OutputOccupiedError,
    check_free_space,
    is_graftlab_output,
)
from graftlab.core.adapter.export import adapter_readme, export_adapter
from graftlab.core.errors import UserError


def snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def adapter(tmp_path):
    """A folder with the two files a PEFT adapter needs (contents are not read by a copy)."""
    src = tmp_path / "run" / "adapter"
    src.mkdir(parents=True)
    (src / "adapter_config.json").write_text(json.dumps({"r": 4}))
    (src / "adapter_model.safetensors").write_bytes(b"weights")
    return src


def test_occupied_folder_is_refused_with_a_free_subfolder(tmp_path, adapter):
    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "thesis.tex").write_text("years of work")
    before = snapshot(tmp_path)
    with pytest.raises(OutputOccupiedError, match="did not write") as info:
        export_adapter(adapter, docs)
    assert info.value.suggestion == docs / "graftlab-export"
    assert snapshot(tmp_path) == before
    files = export_adapter(adapter, info.value.suggestion)  # what the GUI offers
    assert (docs / "thesis.tex").read_text() == "years of work"
    assert {p.name for p, _n in files} >= {"adapter_model.safetensors", OUTPUT_MARKER}


def test_file_at_the_output_path_is_refused(tmp_path, adapter):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(UserError, match="is a file"):
        export_adapter(adapter, tmp_path / "out")
    assert (tmp_path / "out").read_text() == "a file"


def test_symlink_is_refused_and_its_target_untouched(tmp_path, adapter):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    (tmp_path / "link").symlink_to(elsewhere)
    with pytest.raises(UserError, match="symbolic link"):
        export_adapter(adapter, tmp_path / "link")
    assert (tmp_path / "link").is_symlink()
    assert snapshot(elsewhere) == {"keep.txt": b"keep"}


def test_replacing_an_earlier_export_needs_consent(tmp_path, adapter):
    out = tmp_path / "export"
    export_adapter(adapter, out)
    assert is_graftlab_output(out)
    (adapter / "adapter_model.safetensors").write_bytes(b"newer")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_adapter(adapter, out)
    assert (out / "adapter_model.safetensors").read_bytes() == b"weights"
    export_adapter(adapter, out, overwrite=True)
    assert (out / "adapter_model.safetensors").read_bytes() == b"newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "run"]


@pytest.mark.parametrize("code, needle", [(errno.ENOSPC, "is full"),
                                          (errno.EROFS, "cannot write")])
def test_full_disk_or_read_only_keeps_the_earlier_export(tmp_path, adapter, monkeypatch, code,
                                                         needle):
    out = tmp_path / "export"
    export_adapter(adapter, out)
    before = snapshot(tmp_path)

    def failing_copy(src, dst, **kwargs):
        Path(dst).write_bytes(b"half")
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(shutil, "copy2", failing_copy)
    with pytest.raises(UserError, match=needle) as info:
        export_adapter(adapter, out, overwrite=True)
    assert "nothing at" in info.value.message
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "run"]


def test_unwritable_parent_is_refused_before_writing(tmp_path, adapter, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # tests may run as root
    with pytest.raises(UserError, match="write access"):
        export_adapter(adapter, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_not_enough_free_space_is_refused(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=10 * 2**20))
    with pytest.raises(UserError, match="GB free but this needs"):
        check_free_space(tmp_path / "merged", 2**30)


def test_run_adapter_folder_counts_as_graftlab_output(tmp_path, adapter):
    assert not is_graftlab_output(adapter)  # no run.yaml/metrics.jsonl beside it yet
    (adapter.parent / "run.yaml").write_text("model: {}\n")
    (adapter.parent / "metrics.jsonl").write_text("")
    assert is_graftlab_output(adapter)


def test_readme_has_no_hub_link_for_a_local_base(tmp_path):
    local = adapter_readme(str(tmp_path / "base"))
    assert "base_model:" not in local and str(tmp_path) in local
    assert "base_model: meta-llama/Llama-3.2-1B" in adapter_readme("meta-llama/Llama-3.2-1B")
