"""Never lose a run: pause is exact, a SIGKILLed run resumes to the same adapter, metrics.jsonl
holds every step exactly once, NaN stops the run and keeps the last good checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml
from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from graftlab.core.train.checkpoints import MARKER, complete_checkpoints, list_resumable, verify
from graftlab.core.train.events import Step
from graftlab.core.train.session import TrainingSession
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # every test here trains for real or starts `graftlab train`


def cfg_for(model, out, steps=12, every=3):
    cfg = RunConfig()
    cfg.model.source = str(model)
    cfg.data.path = "demo:stories"
    cfg.data.max_length = 48
    cfg.adapter.rank, cfg.adapter.alpha, cfg.adapter.dropout = 8, 16, 0.1  # dropout: RNG state
    cfg.adapter.targets = ["model.layers.*.self_attn.q_proj", "model.layers.*.mlp.up_proj"]
    cfg.training.max_steps = steps
    cfg.training.batch_size = 4
    cfg.training.learning_rate = 3e-3
    cfg.training.checkpoint_every = every
    cfg.training.checkpoint_limit = 2
    cfg.training.output_dir = str(out)
    return cfg


def adapter_tensors(run_dir):
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def reference(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    TrainingSession(cfg_for(tiny_models["llama"], out)).run()
    return out


def test_checkpoints_are_complete_and_rotated(reference):
    done = complete_checkpoints(reference / "checkpoints")
    assert [c.step for c in done] == [9, 12]  # limit 2 of 3, 6, 9, 12
    assert (done[-1].path / MARKER).is_file()
    assert not list((reference / "checkpoints").glob(".staging-*"))
    assert list_resumable(reference.parent)[0].step == 12


def test_pause_resume_is_bit_identical(tiny_models, reference, tmp_path):
    events = []
    session = TrainingSession(cfg_for(tiny_models["llama"], tmp_path / "run"), [events.append])
    session.request_pause()  # pauses after the first step
    thread = threading.Thread(target=session.run)
    thread.start()
    deadline = time.monotonic() + 120
    while not any(e.kind == "paused" for e in events):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    session.request_resume()
    thread.join(120)
    steps = [e for e in events if isinstance(e, Step)]
    assert [s.step for s in steps] == list(range(1, 13))
    assert max(s.elapsed_s for s in steps) < steps[-1].elapsed_s + 1e-9
    assert max_diff(adapter_tensors(tmp_path / "run"), adapter_tensors(reference)) == 0.0


def test_sigkill_then_resume_matches_uninterrupted(tiny_models, reference, tmp_path):
    cfg = cfg_for(tiny_models["llama"], tmp_path / "run")
    (tmp_path / "run.yaml").write_text(cfg.to_yaml())
    proc = subprocess.Popen([sys.executable, "-m", "graftlab.core.cli", "train",
                             str(tmp_path / "run.yaml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, "run ended before the kill"
        text = metrics.read_text() if metrics.exists() else ""
        if '"event": "checkpoint", "step": 6' in text:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "adapter").exists()
    resumed = subprocess.run([sys.executable, "-m", "graftlab.core.cli", "train", "--resume",
                              str(tmp_path / "run")], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert max_diff(adapter_tensors(tmp_path / "run"), adapter_tensors(reference)) <= 1e-6
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [x["step"] for x in lines if x["event"] == "step"] == list(range(1, 13))


def test_torn_checkpoint_is_ignored(reference, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(reference, run)
    newest = complete_checkpoints(run / "checkpoints")[-1].path
    victim = newest / "adapter_model.safetensors"
    victim.write_bytes(victim.read_bytes()[:100])  # cut off mid-write
    assert verify(newest) is None
    assert complete_checkpoints(run / "checkpoints")[-1].step == 9


def test_nan_loss_stops_with_a_sentence_and_keeps_checkpoint(tiny_models, tmp_path):
    cfg = cfg_for(tiny_models["llama"], tmp_path / "run", steps=200, every=2)
    session = None

    def poison(event):  # a diverging run, made deterministic: NaN weights after step 5
        if isinstance(event, Step) and event.step == 5:
            import torch

            with torch.no_grad():
                next(p for n, p in session.model.named_parameters() if "lora_B" in n).fill_(
                    float("nan"))

    session = TrainingSession(cfg, [poison])
    with pytest.raises(UserError, match="diverged"):
        session.run()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["event"] == "failed" and "learning_rate" in lines[-1]["message"]
    good = complete_checkpoints(tmp_path / "run" / "checkpoints")
    assert good, "the last good checkpoint is kept"
    state = json.loads((good[-1].path / "trainer_state.json").read_text())
    assert all(h.get("loss", 0) == h.get("loss", 0) for h in state["log_history"])  # no NaN


def test_resume_needs_a_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    proc = subprocess.run([sys.executable, "-m", "graftlab.core.cli", "train", "--resume",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not a Graftlab run folder" in proc.stderr
    (tmp_path / "run" / "run.yaml").write_text(yaml.safe_dump({}))
    cfg = RunConfig.load(tmp_path / "run" / "run.yaml")
    cfg.training.output_dir = str(tmp_path / "run")
    with pytest.raises(UserError, match="no complete checkpoint"):
        TrainingSession(cfg, resume=True).run()
