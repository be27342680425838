"""Run folders read back as library rows: finished, stopped, failed, killed and running runs,
written through the real event writer (JsonlSink) and process record."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys

from graftlab.core.cli import main
from graftlab.core.config import RunConfig
from graftlab.core.train.events import Eval, Failed, Finished, JsonlSink, Started, Step
from graftlab.core.train.live import LIVE_NAME, LOCK_NAME
from graftlab.core.train.run_index import read_curves, read_run, read_runs

HELD = []  # lock descriptors of the "running" runs, held for the test session


def make_run(root, name, steps=300, end=None, alive=True, eval_every=0):
    run = root / name
    run.mkdir(parents=True)
    cfg = RunConfig()
    cfg.model.source = "demo:tiny-llama"
    cfg.adapter.targets = ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj",
                           "model.layers.0.mlp.up_proj"]
    cfg.training.max_steps = 500
    cfg.data.eval_fraction = 0.1 if eval_every else 0.0
    cfg.training.output_dir = str(run)
    cfg.save(run / "run.yaml")
    if alive:  # what a training process holds while it lives
        fd = os.open(run / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        HELD.append(fd)
    else:  # the files of a process that has exited (a SIGKILLed writer leaves the same)
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        (run / LOCK_NAME).write_text("")
        (run / LIVE_NAME).write_text(json.dumps(
            {"pid": child.pid, "host": socket.gethostname(), "phase": "running"}))
    sink = JsonlSink(run / "metrics.jsonl")
    sink(Started(str(run), 500, 1000, 100000, "cpu", "fp32", 64))
    for i in range(1, steps + 1):
        sink(Step(i, 3.0 - i / 1000, 2e-4, 1.0, 0.1, 100.0, 10 * i, 0.5 * i, 1.0, 100.0))
        if eval_every and i % eval_every == 0:
            sink(Eval(i, 2.5 - i / 2000))
    if end is not None:
        sink(end)
    sink.close()
    return run


def test_statuses_progress_and_metrics(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "a-finished", 500, Finished(500, False, None, 2.6, 250.0), alive=False,
             eval_every=100)
    make_run(root, "b-stopped", 120, Finished(120, True, None, 2.9, 60.0), alive=False)
    make_run(root, "c-failed", 40, Failed("training diverged", True), alive=False)
    make_run(root, "d-killed", 77, None, alive=False)
    make_run(root, "e-running", 10, None, alive=True)
    (root / "not-a-run").mkdir()
    (root / "not-a-run" / "notes.txt").write_text("mine")
    rows = {r.run_dir.rsplit("/", 1)[-1]: r for r in read_runs([root])}
    assert set(rows) == {"a-finished", "b-stopped", "c-failed", "d-killed", "e-running"}
    assert {k: r.status for k, r in rows.items()} == {
        "a-finished": "finished", "b-stopped": "stopped", "c-failed": "failed",
        "d-killed": "killed", "e-running": "running"}
    a = rows["a-finished"]
    assert (a.steps, a.max_steps, a.duration_s) == (500, 500, 250.0)
    assert abs(a.final_loss - 2.5) < 1e-9 and abs(a.eval - 2.25) < 1e-9
    assert a.model == "demo:tiny-llama" and a.targets == "3: q_proj, up_proj"
    assert rows["d-killed"].steps == 77 and rows["d-killed"].final_loss is not None
    assert rows["c-failed"].message == "training diverged"


def test_eval_far_from_the_tail_is_found(tmp_path):
    run = make_run(tmp_path, "r", 2000, None, eval_every=1000)  # last eval ~1000 lines back
    s = read_run(run)
    assert abs(s.eval - (2.5 - 1.0)) < 1e-9 and s.steps == 2000


def test_curves_hold_every_step(tmp_path):
    run = make_run(tmp_path, "r", 300, Finished(300, False, None, 2.8, 150.0), eval_every=100)
    curves = read_curves(run)
    assert curves["loss"][0] == list(range(1, 301))
    assert curves["eval_loss"][0] == [100, 200, 300]


def test_runs_command_table_and_json(tmp_path, capsys):
    root = tmp_path / "runs"
    make_run(root, "f", 50, Finished(50, False, None, 2.9, 25.0), alive=False)
    make_run(root, "k", 5, None, alive=False)
    assert main(["runs", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    by = {r["run_dir"].rsplit("/", 1)[-1]: r for r in out["runs"]}
    assert by["f"]["status"] == "finished" and by["k"]["status"] == "killed"
    assert set(by["f"]) >= {"run_dir", "status", "model", "steps", "max_steps", "final_loss",
                            "eval", "started_at", "duration_s", "adapter"}
    assert main(["runs", str(root)]) == 0
    table = capsys.readouterr().out
    assert "finished" in table and "killed" in table and "50/500" in table
    assert main(["runs", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
