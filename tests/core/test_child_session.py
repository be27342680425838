"""ProcessSession: a real training run in a child process, driven like an in-process session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from graftlab.core.process.child import ProcessSession, TrainingProcessError, child_command
from graftlab.core.train.events import Failed, Finished, Paused, Resumed, Started, Step

pytestmark = pytest.mark.slow  # every test here starts a child training process

ROOT = Path(__file__).resolve().parents[2]


def demo_cfg(out: Path, max_steps: int = 6, **training) -> RunConfig:
    cfg = RunConfig()
    cfg.model.source = "demo:tiny-llama"
    cfg.data.path = "demo:stories"
    cfg.adapter.targets = ["model.layers.*.self_attn.q_proj"]
    cfg.training.max_steps = max_steps
    cfg.training.output_dir = str(out)
    for key, value in training.items():
        setattr(cfg.training, key, value)
    return cfg


class Recorder:
    """A sink that lets the test wait for an event from another thread."""

    def __init__(self) -> None:
        self.events: list = []
        self._cond = threading.Condition()

    def __call__(self, event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def of(self, cls) -> list:
        return [e for e in self.events if isinstance(e, cls)]

    def wait_for(self, cls, timeout: float = 120.0):
        with self._cond:
            ok = self._cond.wait_for(lambda: self.of(cls), timeout)
        assert ok, f"no {cls.__name__} event within {timeout} s"
        return self.of(cls)[0]

    def wait_until(self, predicate, timeout: float = 120.0) -> bool:
        """Block until `predicate()` holds (True) or `timeout` seconds pass (False)."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)


def run_in_thread(session: ProcessSession) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def target() -> None:
        try:
            out["result"] = session.run()
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def running_session(tmp_path: Path, max_steps: int = 100_000, **training):
    """A ProcessSession running in a thread, once its first step has arrived."""
    rec = Recorder()
    session = ProcessSession(demo_cfg(tmp_path / "run", max_steps, **training), [rec])
    thread, out = run_in_thread(session)
    rec.wait_for(Step)
    return rec, session, thread, out


def test_child_trains_pauses_exports_resumes_and_finishes(tmp_path):
    rec, session, thread, out = running_session(tmp_path, max_steps=8)
    session.request_pause()
    assert session.paused
    paused = rec.wait_for(Paused)
    files = session.snapshot_adapter(tmp_path / "snap")
    assert {p.name for p, _n in files} >= {"adapter_config.json", "adapter_model.safetensors"}
    assert all(p.is_file() and p.stat().st_size == n for p, n in files)
    steps_while_paused = [e.step for e in rec.of(Step)]
    more = rec.wait_until(lambda: len(rec.of(Step)) > len(steps_while_paused), timeout=0.3)
    assert not more, "a step arrived while paused"
    session.request_resume()
    thread.join(120)
    assert not thread.is_alive() and "error" not in out, out
    result = out["result"]
    assert result.steps == 8 and not result.stopped_early and session.returncode == 0
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert [e.step for e in rec.of(Step)] == list(range(1, 9))
    assert rec.of(Resumed)[0].step == paused.step
    assert isinstance(rec.events[-1], Finished)
    started = rec.of(Started)[0]
    assert started.run_dir == str(result.run_dir) and started.trainable_params > 0
    # the child wrote the run's history itself
    history = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["event"] == "step" for line in history) == 8


def test_a_bad_input_comes_back_as_the_same_user_error(tmp_path):
    cfg = demo_cfg(tmp_path / "run")
    cfg.data.path = str(tmp_path / "missing.jsonl")
    rec = Recorder()
    with pytest.raises(UserError) as info:
        ProcessSession(cfg, [rec]).run()
    assert "missing.jsonl" in info.value.message and info.value.field == "data.path"
    failed = rec.of(Failed)
    assert failed and failed[0].message == info.value.message
    assert failed[0].field == "data.path" and failed[0].user_error
    assert not (tmp_path / "run").exists()  # nothing written for a run that never started


def test_a_stop_before_the_child_exists_trains_nothing(tmp_path):
    rec = Recorder()
    session = ProcessSession(demo_cfg(tmp_path / "run", max_steps=1000), [rec])
    session.request_stop(save=False)
    result = session.run()
    assert result.stopped_early and result.steps == 0 and not rec.of(Step)


def test_a_killed_child_is_reported_in_a_sentence(tmp_path):
    rec, session, thread, out = running_session(tmp_path, max_steps=100_000, checkpoint_every=2)
    assert rec.wait_until(lambda: any(e.step >= 3 for e in rec.of(Step))), "no step 3 in 120 s"
    os.killpg(session._proc.pid, signal.SIGKILL)
    thread.join(60)
    assert isinstance(out.get("error"), TrainingProcessError)
    failed = rec.of(Failed)[-1]
    assert "killed by SIGKILL" in failed.message and "Resume run" in failed.message
    assert str(tmp_path / "run") in failed.message
    assert session.returncode == -signal.SIGKILL


def test_the_child_saves_and_stops_when_its_parent_goes_away(tmp_path):
    """The GUI crashing must not lose the run: stdin closes, the child stops and saves."""
    cfg = demo_cfg(tmp_path / "run", max_steps=100_000)
    # keep the caller's PYTHONPATH first: it decides which checkout `graftlab` imports from
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p))
    proc = subprocess.Popen(child_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env)
    proc.stdin.write((json.dumps({"config": cfg.to_dict(), "resume": False}) + "\n").encode())
    proc.stdin.flush()
    lines = []
    deadline = threading.Timer(120, proc.kill)  # a child that never steps fails, not hangs
    deadline.start()
    for line in proc.stdout:  # wait for the first step, then vanish
        lines.append(json.loads(line))
        if lines[-1].get("event") == "step":
            break
    deadline.cancel()
    assert lines and lines[-1].get("event") == "step", "no step within 120 s"
    proc.stdin.close()
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(120) == 0
    result = rest[-1]["result"]
    assert result["stopped_early"] and result["adapter_dir"]
    assert (Path(result["adapter_dir"]) / "adapter_model.safetensors").is_file()
    assert (tmp_path / "run" / "checkpoints").is_dir()


def test_stray_prints_in_the_child_do_not_corrupt_the_stream(tmp_path):
    code = ("import sys, graftlab.core.train.session as s\n"
            "run = s.TrainingSession.run\n"
            "def noisy(self):\n"
            "    print('a stray print {\"event\": \"step\"}', flush=True)\n"
            "    return run(self)\n"
            "s.TrainingSession.run = noisy\n"
            "from graftlab.core.process.child import child_main\n"
            "sys.exit(child_main())\n")
    rec = Recorder()
    session = ProcessSession(demo_cfg(tmp_path / "run", max_steps=2), [rec],
                             command=[sys.executable, "-c", code])
    result = session.run()
    assert result.steps == 2 and [e.step for e in rec.of(Step)] == [1, 2]


def test_the_hidden_cli_subcommand_runs_the_child(tmp_path):
    """Frozen builds start the child as `graftlab _session`: graftlab.core.cli must dispatch it."""
    cfg = demo_cfg(tmp_path / "run")
    data = cfg.to_dict()
    data["adapter"]["rank"] = 0  # rejected before torch is even imported
    proc = subprocess.run([sys.executable, "-m", "graftlab.core.cli", "_session"],
                          input=json.dumps({"config": data}) + "\n", capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    last = json.loads(proc.stdout.splitlines()[-1])
    assert last["error"]["user_error"] and last["error"]["field"] == "adapter.rank"


def test_sigterm_ends_a_running_child_after_the_step_with_a_save(tmp_path):
    """A system shutdown or `kill PID` must not lose the run: SIGTERM is a stop with a save."""
    rec, session, thread, out = running_session(tmp_path, max_steps=100_000)
    os.kill(session._proc.pid, signal.SIGTERM)
    thread.join(120)
    result = out["result"]
    assert result.stopped_early and session.returncode == 0
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


def test_kill_ends_a_run_at_once_and_says_what_was_kept(tmp_path):
    rec, session, thread, out = running_session(tmp_path, max_steps=100_000)
    session.kill()
    thread.join(60)
    error = out.get("error")
    assert isinstance(error, UserError) and "ended before it had stopped" in error.message
    assert str(tmp_path / "run") in error.message and "Resume run" in error.message
    assert rec.of(Failed)[-1].message == error.message
    assert session.returncode == -signal.SIGKILL
