"""Runs found and controlled through their folder: the lock, live.json, control.json, status,
and `graftlab train --detach` with `status`, `pause`, `continue`, `stop` and `--resume`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from graftlab.core.errors import UserError
from graftlab.core.train.lifecycle import RunControl, RunPhase
from graftlab.core.train.live import (
    LivePresence,
    RunBusyError,
    is_live,
    run_status,
    send_control,
    wait_for_state,
)


def _metrics(run_dir, *events):
    lines = [json.dumps(e) for e in events]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


STARTED = {"event": "started", "run_dir": "", "total_steps": 10, "trainable_params": 1,
           "base_params": 2, "device": "cpu", "precision": "fp32", "num_examples": 4}


def _step(n, loss):
    return {"event": "step", "step": n, "loss": loss}


def test_presence_holds_the_lock_and_obeys_new_requests_only(tmp_path):
    control = RunControl()
    (tmp_path / "control.json").write_text(json.dumps({"seq": 3, "cmd": "stop"}))  # old
    live = LivePresence(tmp_path, control)
    live.open()
    try:
        assert is_live(tmp_path)
        assert not control.stop_requested  # a request from before this process is done
        with pytest.raises(RunBusyError, match="being trained by another process"):
            LivePresence(tmp_path, RunControl()).open()  # a second trainer in the same folder
        control.lifecycle.apply(type("E", (), {"kind": "started"})())
        _metrics(tmp_path, STARTED, _step(1, 2.5))
        assert run_status(tmp_path).state == "running"
        send_control(tmp_path, "pause")
        assert control.lifecycle.wait_until(RunPhase.PAUSING, 5.0)
        assert wait_for_state(tmp_path, {"running"}, 1.0).state == "running"  # not blocked yet
        control.lifecycle.apply(type("E", (), {"kind": "paused"})())  # the pause point
        assert wait_for_state(tmp_path, {"paused"}, 5.0).state == "paused"
        send_control(tmp_path, "continue")
        assert control.lifecycle.wait_until(RunPhase.RUNNING, 5.0)
        send_control(tmp_path, "stop", save=False)
        deadline = time.monotonic() + 5
        while not control.stop_requested and time.monotonic() < deadline:
            time.sleep(0.05)
        assert control.stop_requested and not control.save_on_stop
        assert wait_for_state(tmp_path, {"stopping"}, 5.0).state == "stopping"
        assert stat_mode(tmp_path / "control.json") == 0o600  # the owner's alone
    finally:
        live.close()
    assert not is_live(tmp_path)


def stat_mode(path):
    return os.stat(path).st_mode & 0o777


@pytest.mark.parametrize(("events", "state", "step"), [
    ([STARTED, _step(1, 2.0), _step(10, 1.5),
      {"event": "finished", "step": 10, "stopped_early": False, "adapter_dir": "a",
       "train_loss": 1.7, "active_s": 1.0}], "finished", 10),
    ([STARTED, _step(4, 2.0), {"event": "finished", "step": 4, "stopped_early": True,
                               "adapter_dir": "a", "train_loss": 2.0, "active_s": 1.0}],
     "stopped", 4),
    ([STARTED, _step(2, 2.0), {"event": "failed", "message": "loss diverged.",
                               "user_error": True}], "failed", 2),
    ([STARTED, _step(1, 2.0), _step(7, 1.9)], "killed", 7),  # no final event, no lock
])
def test_status_of_ended_runs(tmp_path, events, state, step):
    _metrics(tmp_path, *events)
    (tmp_path / "live.json").write_text(json.dumps({"pid": 999_999_999, "phase": "running"}))
    status = run_status(tmp_path)
    assert (status.state, status.step, status.max_steps) == (state, step, 10)
    assert status.loss == events[-2 if state != "killed" else -1].get("loss", status.loss)
    if state == "failed":
        assert status.message == "loss diverged."
    with pytest.raises(UserError, match="not running"):
        send_control(tmp_path, "pause")


def test_status_of_a_started_process_before_it_locks(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        from graftlab.core.train.live import mark_starting

        mark_starting(tmp_path, proc.pid)
        assert run_status(tmp_path).state == "running"
    finally:
        proc.kill()
        proc.wait()
    assert run_status(tmp_path).state == "killed"  # a stale pid is not "running"
    (tmp_path / "train.log").write_text("error: model.source /x does not exist; check it.\n")
    status = run_status(tmp_path)
    assert status.state == "failed" and "does not exist" in status.message


def test_status_refuses_a_folder_without_a_run(tmp_path):
    with pytest.raises(UserError, match="not a Graftlab run folder"):
        run_status(tmp_path)


# ---- the command line, end to end -------------------------------------------------------------
def graftlab(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "graftlab.core.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


def _status(run_dir):
    proc = graftlab("status", str(run_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _wait(run_dir, pred, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "live.json").exists():
            s = _status(run_dir)
            if pred(s):
                return s
        time.sleep(0.3)
    raise AssertionError(f"timed out; last status {_status(run_dir)}")


def _stepped_since_resume(run_dir):
    events = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()
              if x.strip()]
    marks = [i for i, e in enumerate(events) if "resuming from" in e.get("text", "")]
    return bool(marks) and any(e["event"] == "step" for e in events[marks[-1]:])


@pytest.mark.slow
def test_detach_status_pause_continue_stop_kill_resume(tmp_path, tiny_models, no_orphans):
    run = {"model": {"source": str(tiny_models["llama"]), "task": "causal-lm"},
           "adapter": {"rank": 4, "alpha": 8, "targets": ["model.layers.*.self_attn.q_proj"]},
           "data": {"path": "demo:stories", "format": "text", "max_length": 32},
           "training": {"max_steps": 100000, "batch_size": 2, "checkpoint_every": 5,
                        "update_norms_every": 0, "output_dir": str(tmp_path / "run")}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    proc = graftlab("train", str(tmp_path / "run.yaml"), "--detach")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 30  # returns without waiting for the run (torch import)
    assert proc.stdout.strip() == f"run folder: {run_dir}"
    s = _wait(run_dir, lambda s: s["state"] == "running" and s["step"] >= 2)
    assert s["max_steps"] == 100000 and s["pid"] > 0

    assert graftlab("pause", str(run_dir)).returncode == 0
    paused = _status(run_dir)
    assert paused["state"] == "paused"
    time.sleep(1.5)
    assert _status(run_dir)["step"] == paused["step"]  # really paused: no steps
    assert graftlab("continue", str(run_dir)).returncode == 0
    _wait(run_dir, lambda s: s["step"] > paused["step"] + 5)  # past a checkpoint

    os.kill(paused["pid"], signal.SIGKILL)  # the whole run dies without a word
    s = _wait(run_dir, lambda s: s["state"] != "running", timeout=30)
    assert s["state"] == "killed"
    assert graftlab("pause", str(run_dir)).returncode == 2  # nothing to pause

    proc = graftlab("train", "--resume", str(run_dir), "--detach")
    assert proc.returncode == 0, proc.stderr
    _wait(run_dir, lambda s: s["state"] == "running" and _stepped_since_resume(run_dir))
    busy = graftlab("train", "--resume", str(run_dir), "--detach")  # a second trainer
    assert busy.returncode == 2 and "being trained by another process" in busy.stderr
    stop = graftlab("stop", str(run_dir))
    assert stop.returncode == 0, stop.stderr
    s = _status(run_dir)
    assert s["state"] == "stopped"
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()
             if json.loads(x).get("event") == "step"]
    assert steps == sorted(set(steps))  # every step once, after the kill and the resume
