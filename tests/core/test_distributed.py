"""The same run on several processes, under torchrun: one run folder written by rank 0, every
step once, the same examples as one process with the same global batch, an exact resume after
the whole job is SIGKILLed, two "machines" on 127.0.0.1, and a detached job paused, exported,
continued and stopped through its folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import psutil
import pytest
import yaml
from graftlab.core import cli
from graftlab.core.config import RunConfig
from graftlab.core.train import distributed
from graftlab.core.train.checkpoints import complete_checkpoints
from graftlab.core.train.launch import Launch, check_launch, torchrun_command
from graftlab.core.train.live import request_export, run_status, send_control, wait_for_state
from safetensors.torch import load_file

GRAFTLAB = [sys.executable, "-m", "graftlab.core.cli"]


def cfg_for(model, out, steps=12, batch=2):
    cfg = RunConfig()
    cfg.model.source = str(model)
    cfg.data.path = "demo:stories"
    cfg.data.max_length = 48
    cfg.adapter.rank, cfg.adapter.alpha, cfg.adapter.dropout = 8, 16, 0.1  # dropout: RNG state
    cfg.adapter.targets = ["model.layers.*.self_attn.q_proj", "model.layers.*.mlp.up_proj"]
    cfg.training.max_steps = steps
    cfg.training.batch_size = batch
    cfg.training.learning_rate = 3e-3
    cfg.training.checkpoint_every = 3
    cfg.training.output_dir = str(out)
    return cfg


def write_run(cfg, path):
    cfg.save(path)
    return str(path)


def adapter(run_dir):
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def events(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- without processes: the launcher's command line and its sentences ------------------------
def test_one_process_needs_no_launcher_and_collectives_are_no_ops():
    assert not Launch(1).wanted and Launch(2).wanted and Launch(1, nnodes=2).wanted
    assert distributed.agree([1, 0, 1]) == [1, 0, 1]
    distributed.barrier()
    with distributed.main_first():
        pass
    distributed.finish()


def test_torchrun_lines_for_one_machine_and_for_several():
    one = torchrun_command(Launch(2), ["train", "run.yaml"])
    assert one[1:7] == ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                        "-m"]
    assert one[-3:] == ["graftlab.core.cli", "train", "run.yaml"]
    two = torchrun_command(Launch(4, 2, 1, "10.0.0.1:29500"), ["train", "r.yaml"])
    flags = two[two.index("--nnodes"):two.index("--nnodes") + 6]
    assert flags == ["--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint", "10.0.0.1:29500"]
    assert "--standalone" not in two


@pytest.mark.parametrize("launch, words", [
    (Launch(0), "--nproc is 0"),
    (Launch(1, nnodes=2), "needs --rdzv-endpoint"),
    (Launch(1, 2, 2, "h:1"), "--node-rank is 2"),
    (Launch(2, rdzv_endpoint="nohost"), "write HOST:PORT"),
])
def test_bad_launch_flags_get_one_sentence(launch, words):
    with pytest.raises(cli.UserError, match=words):
        check_launch(launch)


def test_bad_input_fails_before_any_process_starts(tiny_models, tmp_path, monkeypatch, capsys):
    started = []
    monkeypatch.setattr("graftlab.core.train.launch.run_torchrun",
                        lambda *a: started.append(a) or 0)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "run.yaml").write_text("{}")
    run = write_run(cfg_for(tiny_models["llama"], tmp_path / "taken"), tmp_path / "run.yaml")
    assert cli.main(["train", run, "--nproc", "2"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    fsdp = cfg_for(tiny_models["llama"], tmp_path / "new")
    fsdp.training.distributed = "fsdp"
    assert cli.main(["train", write_run(fsdp, tmp_path / "fsdp.yaml"), "--nproc", "2"]) == 2
    err = capsys.readouterr().err
    assert "`training.distributed: fsdp` needs CUDA GPUs" in err and err.count("\n") == 1
    assert cli.main(["train", run, "--nnodes", "2"]) == 2
    assert "--rdzv-endpoint" in capsys.readouterr().err
    assert started == [] and not (tmp_path / "new").exists()


# ---- real jobs ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_process_run(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    run = write_run(cfg_for(tiny_models["llama"], root / "run"), root / "run.yaml")
    done = subprocess.run([*GRAFTLAB, "train", run, "--nproc", "2"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "run", done


@pytest.mark.slow
def test_two_processes_write_one_run_folder(two_process_run, tiny_models, tmp_path):
    run_dir, done = two_process_run
    assert done.stdout.count("run folder:") == 1  # rank 0 alone reports
    (started,) = events(run_dir, "started")
    assert started["world_size"] == 2
    assert [e["step"] for e in events(run_dir, "step")] == list(range(1, 13))
    assert len(events(run_dir, "finished")) == 1
    assert yaml.safe_load((run_dir / "run.yaml").read_text())["training"]["processes"] == 2
    last = complete_checkpoints(run_dir / "checkpoints")[-1]
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in last.path.iterdir()}
    assert not list((run_dir / "checkpoints").glob(".staging-*"))
    # the two ranks saw exactly the examples one process with the same global batch sees
    one = cfg_for(tiny_models["llama"], tmp_path / "one", batch=4)
    one_dir = tmp_path / "one"
    from graftlab.core.train.session import TrainingSession

    TrainingSession(one).run()
    assert events(one_dir, "step")[-1]["tokens_seen"] == events(run_dir, "step")[-1]["tokens_seen"]
    assert events(one_dir, "step")[0]["loss"] == pytest.approx(events(run_dir, "step")[0]["loss"],
                                                               abs=1e-5)
    # and the adapter loads in plain PEFT
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(
        tiny_models["llama"]), str(run_dir / "adapter"))
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == \
        started["trainable_params"]


def _kill_tree(proc):
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in tree:
        p.kill()
    psutil.wait_procs(tree, timeout=30)


@pytest.mark.slow
def test_a_killed_job_resumes_exactly(two_process_run, tmp_path):
    reference, _ = two_process_run
    cfg = RunConfig.load(reference / "run.yaml")
    cfg.training.output_dir = str(tmp_path / "run")
    run = write_run(cfg, tmp_path / "run.yaml")
    proc = subprocess.Popen([*GRAFTLAB, "train", run, "--nproc", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while '"event": "checkpoint", "step": 6' not in (metrics.read_text() if metrics.exists()
                                                      else ""):
        assert time.monotonic() < deadline and proc.poll() is None, "the job ended too early"
        time.sleep(0.01)
    _kill_tree(proc)  # the launcher, torchrun and both ranks: SIGKILL
    assert not (tmp_path / "run" / "adapter").exists()
    # the same command line; run.yaml says 2 processes, so torchrun starts again
    resumed = subprocess.run([*GRAFTLAB, "train", "--resume", str(tmp_path / "run")],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert max_diff(adapter(tmp_path / "run"), adapter(reference)) <= 1e-5
    assert [e["step"] for e in events(tmp_path / "run", "step")] == list(range(1, 13))
    assert events(tmp_path / "run", "started")[-1]["world_size"] == 2


@pytest.mark.slow
def test_two_machines_on_loopback(two_process_run, tmp_path):
    reference, _ = two_process_run
    cfg = RunConfig.load(reference / "run.yaml")
    cfg.training.output_dir = str(tmp_path / "run")
    cfg.training.processes = 1
    run = write_run(cfg, tmp_path / "run.yaml")
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [subprocess.Popen([*GRAFTLAB, "train", run, "--nproc", "1", "--nnodes", "2",
                               "--node-rank", str(rank), "--rdzv-endpoint", endpoint],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outputs = [n.communicate(timeout=300)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert "run folder:" in outputs[0] and "run folder:" not in outputs[1]
    assert events(tmp_path / "run", "started")[0]["world_size"] == 2
    assert max_diff(adapter(tmp_path / "run"), adapter(reference)) <= 1e-5


@pytest.mark.slow
def test_a_detached_job_is_paused_exported_continued_and_stopped(tiny_models, tmp_path,
                                                                 no_orphans):
    cfg = cfg_for(tiny_models["llama"], tmp_path / "run", steps=100_000)
    cfg.training.update_norms_every = 0
    run_dir = tmp_path / "run"
    run = write_run(cfg, tmp_path / "run.yaml")
    out = subprocess.run([*GRAFTLAB, "train", run, "--nproc", "2", "--detach"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    try:
        wait = wait_for_state
        assert wait(run_dir, {"running"}, 5).state == "running"
        deadline = time.monotonic() + 240
        while run_status(run_dir).step < 3:
            assert time.monotonic() < deadline, (run_dir / "train.log").read_text()[-3000:]
            time.sleep(0.1)
        send_control(run_dir, "pause")
        assert wait(run_dir, {"paused"}, 60).state == "paused"
        step = run_status(run_dir).step
        files = request_export(run_dir, tmp_path / "mid")
        assert (tmp_path / "mid" / "adapter_model.safetensors") in [p for p, _n in files]
        time.sleep(1.0)
        assert run_status(run_dir).step == step  # both ranks really wait
        send_control(run_dir, "continue")
        deadline = time.monotonic() + 60
        while run_status(run_dir).step <= step + 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        send_control(run_dir, "stop")
        status = wait(run_dir, {"stopped", "failed", "killed"}, 120)
        assert status.state == "stopped", (run_dir / "train.log").read_text()[-3000:]
    finally:
        if run_status(run_dir).state in ("running", "paused", "stopping"):
            send_control(run_dir, "stop", save=False)
            wait_for_state(run_dir, {"stopped", "failed", "killed"}, 60)
    steps = [e["step"] for e in events(run_dir, "step")]
    assert steps == list(range(1, steps[-1] + 1))
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    paused = events(run_dir, "paused")
    # the pause comes at the step's end, before that step's log line: one step past the last
    assert len(paused) == 1 and paused[0]["step"] in (step, step + 1)
    deadline = time.monotonic() + 30  # the launcher, torchrun and both ranks all leave
    while _job_processes(run_dir):
        assert time.monotonic() < deadline, _job_processes(run_dir)
        time.sleep(0.2)


def _job_processes(run_dir):
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.status() != psutil.STATUS_ZOMBIE and \
                    str(run_dir) in " ".join(p.cmdline()):
                found.append(p.pid)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_accelerate_launch_runs_the_same_job(two_process_run, tmp_path):
    reference, _ = two_process_run
    run = write_run(RunConfig.load(reference / "run.yaml"), tmp_path / "run.yaml")
    # --multi_gpu is accelerate's torchrun-style launcher; without a GPU the ranks use gloo
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                           "--num_processes", "2", "--num_machines", "1",
                           "--main_process_port", str(free_port()), "-m", "graftlab.core.cli",
                           "train", run, "--output", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert events(tmp_path / "run", "started")[0]["world_size"] == 2
    assert max_diff(adapter(tmp_path / "run"), adapter(reference)) <= 1e-5


def test_fsdp_settings_are_the_ones_lora_needs(monkeypatch, tmp_path):
    from graftlab.core.train.callbacks import fsdp_arguments

    cfg = RunConfig()
    cfg.training.distributed = "fsdp"
    assert fsdp_arguments(cfg, ["LlamaDecoderLayer"]) == {}  # one process: nothing to shard
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    args = fsdp_arguments(cfg, ["LlamaDecoderLayer"])
    assert args["fsdp"] == "full_shard auto_wrap"
    assert args["fsdp_config"]["use_orig_params"] is True  # frozen and LoRA tensors share units
    assert args["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    cfg.training.distributed = "ddp"
    assert fsdp_arguments(cfg, ["LlamaDecoderLayer"]) == {}
