"""Heavy one-off calls in a short-lived child process: the probe, a merge, and errors."""

from __future__ import annotations

import pytest
from graftlab.core.errors import UserError
from graftlab.core.process.oneshot import OneshotError, call_in_child
from graftlab.core.train.device import Accelerator, probe_accelerator

pytestmark = pytest.mark.slow  # each call starts a process


def test_the_probe_answers_what_this_process_would_find():
    found = Accelerator.from_dict(call_in_child("probe", timeout_s=120))
    here = probe_accelerator()
    assert (found.cuda, found.bf16, found.name) == (here.cuda, here.bf16, here.name)


def test_a_merge_error_comes_back_as_the_same_sentence(tmp_path):
    with pytest.raises(UserError, match="adapter") as info:
        call_in_child("merge", timeout_s=120, model_source="demo:tiny-llama",
                      adapter_dir=str(tmp_path / "missing"), out_dir=str(tmp_path / "out"))
    assert str(tmp_path / "missing") in info.value.message


def test_an_internal_error_carries_the_child_traceback():
    with pytest.raises(OneshotError, match="Traceback"):
        call_in_child("merge", timeout_s=120, model_source="demo:tiny-llama")  # no adapter_dir


def test_only_named_calls_can_be_asked_for():
    with pytest.raises(ValueError, match="no such"):
        call_in_child("os.system")
