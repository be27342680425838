"""Run control without races: the config is always the child's first line, a pause or stop sent
before the child is ready is queued, and export-while-paused waits until the loop is blocked."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from graftlab.core.process.child import ProcessSession
from graftlab.core.train.events import Message
from graftlab.core.train.lifecycle import RunControl

# A stand-in for the training process that speaks the protocol without importing torch: it
# records every line it reads until a pause or stop, then reports them.
FAKE_CHILD = """
import json, sys
lines = []
for line in sys.stdin:
    lines.append(json.loads(line))
    if lines[-1].get("cmd") in ("pause", "stop"):
        break
out = sys.stdout
out.write(json.dumps({"event": "message", "text": json.dumps(lines), "level": "info"}) + "\\n")
out.write(json.dumps({"result": {"run_dir": ".", "adapter_dir": None, "steps": 0,
                                 "stopped_early": True, "train_loss": None}}) + "\\n")
out.flush()
"""


@pytest.mark.slow
def test_pause_storm_at_start_is_queued_behind_the_config(tmp_path):
    script = tmp_path / "fake_child.py"
    script.write_text(FAKE_CHILD)
    cfg = RunConfig()
    cfg.training.output_dir = str(tmp_path / "run")
    for attempt in range(100):
        received: list = []
        session = ProcessSession(cfg, [received.append], command=[sys.executable, str(script)])
        thread = threading.Thread(target=session.run)
        thread.start()
        if attempt % 10 == 9:
            session.request_stop(save=True)  # a stop before the child is ready, too
        else:
            session.request_pause()  # races with the start of the child, on purpose
        thread.join(30)
        assert not thread.is_alive()
        lines = json.loads(next(e for e in received if isinstance(e, Message)).text)
        assert "config" in lines[0], (attempt, lines)
        want = "stop" if attempt % 10 == 9 else "pause"
        assert [line.get("cmd") for line in lines[1:]] == [want], (attempt, lines)


def test_child_refuses_a_first_line_that_is_not_the_config(tmp_path):
    import subprocess

    from graftlab.core.process.child import child_command

    proc = subprocess.run(child_command(), input=b'{"cmd": "pause"}\n', capture_output=True,
                          timeout=300)
    assert proc.returncode == 2
    last = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert "run settings first" in last["error"]["message"]


def test_blocked_is_set_only_while_really_waiting():
    control = RunControl()
    control.request_pause()
    assert control.paused and not control.blocked  # requested, the step may still run
    assert not control.wait_until_blocked(0.05)
    thread = threading.Thread(target=control.wait_while_paused)
    thread.start()
    assert control.wait_until_blocked(5)
    control.request_resume()
    thread.join(5)
    assert not control.blocked


def test_snapshot_waits_for_the_loop_to_block(tmp_path, tiny_models):
    from graftlab.core.train.session import TrainingSession
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = RunConfig()
    cfg.model.source = str(tiny_models["llama"])
    session = TrainingSession(cfg)
    session.model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_models["llama"]),
                                   LoraConfig(r=2, target_modules=["q_proj"]))
    session._jsonl = object()  # as while the run is training
    session.request_pause()
    with pytest.raises(UserError, match="did not reach a pause within"):
        session.snapshot_adapter(tmp_path / "early", timeout_s=0.1)
    assert not (tmp_path / "early").exists()

    def step_then_block():
        time.sleep(0.3)  # the step in flight finishes
        session.wait_while_paused()

    loop = threading.Thread(target=step_then_block)
    loop.start()
    files = session.snapshot_adapter(tmp_path / "snap", timeout_s=10)
    assert session.blocked and any(Path(p).name == "adapter_model.safetensors"
                                   for p, _n in files)
    session.request_resume()
    loop.join(5)


# Reports a save that takes a while, then a finished checkpoint, then trains on forever.
SAVING_CHILD = """
import json, sys, time
sys.stdin.readline()
def send(m):
    sys.stdout.write(json.dumps(m) + "\\n")
    sys.stdout.flush()
send({"event": "saving", "step": 1, "what": "checkpoint"})
time.sleep(1.5)
send({"event": "checkpoint", "step": 1, "path": "checkpoint-1"})
time.sleep(60)
"""


@pytest.mark.slow
def test_the_child_is_never_killed_while_it_reports_saving(tmp_path):
    from graftlab.core.train.events import Checkpoint, Saving

    script = tmp_path / "saving_child.py"
    script.write_text(SAVING_CHILD)
    cfg = RunConfig()
    cfg.training.output_dir = str(tmp_path / "run")
    seen: list = []
    session = ProcessSession(cfg, [seen.append], command=[sys.executable, str(script)])
    outcome: dict = {}

    def run() -> None:
        try:
            session.run()
        except UserError as exc:
            outcome["error"] = exc.message

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not any(isinstance(e, Saving) for e in seen) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert session.saving
    assert session.kill() is False  # deferred: the write is in progress
    time.sleep(0.5)
    assert thread.is_alive() and session._proc.poll() is None
    thread.join(30)
    assert not thread.is_alive()
    assert any(isinstance(e, Checkpoint) for e in seen)  # the save completed first
    assert session.returncode == -9 and "ended before it had stopped" in outcome["error"]
