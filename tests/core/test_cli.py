"""The graftlab command end to end, in subprocesses like a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.slow  # every test here runs `graftlab` in a subprocess


def graftlab(*args, cwd=None, timeout=300):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "graftlab.core.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


def test_train_end_to_end(tmp_path, tiny_models):
    run = {
        "model": {"source": str(tiny_models["llama"]), "task": "causal-lm"},
        "adapter": {"rank": 8, "alpha": 16, "targets": ["model.layers.*.self_attn.q_proj",
                                                        "model.layers.0.mlp.down_proj"],
                    "overrides": [{"targets": ["model.layers.1.*"], "rank": 16, "alpha": 32}]},
        "data": {"path": "demo:stories", "format": "text", "max_length": 64},
        "training": {"max_steps": 3, "batch_size": 4, "learning_rate": 2.0e-4, "seed": 0,
                     "output_dir": str(tmp_path / "unused")},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    out = tmp_path / "out"
    proc = graftlab("train", str(tmp_path / "run.yaml"), "--output", str(out), "--max-steps", "4")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    saved = yaml.safe_load((out / "run.yaml").read_text())
    assert sorted(saved["adapter"]["targets"]) == ["model.layers.0.mlp.down_proj",
                                                   "model.layers.0.self_attn.q_proj",
                                                   "model.layers.1.self_attn.q_proj"]
    assert saved["adapter"]["overrides"] == [{"targets": ["model.layers.1.self_attn.q_proj"],
                                              "rank": 16, "alpha": 32.0}]
    assert saved["training"]["max_steps"] == 4
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in steps if x["event"] == "step"] == [1, 2, 3, 4]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    info = graftlab("adapter-info", str(out / "adapter"), "--json")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["base_model"] == str(tiny_models["llama"].resolve())
    ranks = {m["name"]: m["rank"] for m in data["modules"]}
    assert ranks == {"model.layers.0.mlp.down_proj": 8, "model.layers.0.self_attn.q_proj": 8,
                     "model.layers.1.self_attn.q_proj": 16}
    # The resolved run.yaml reproduces the run.
    again = graftlab("train", str(out / "run.yaml"), "--output", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr


def test_inspect_json_and_text(tiny_models):
    proc = graftlab("inspect", str(tiny_models["gpt2"]), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["model_type"] == "gpt2" and data["total_params"] > 0
    c_attn = next(m for m in data["modules"] if m["name"] == "transformer.h.0.attn.c_attn")
    assert c_attn["lora"] and c_attn["type"] == "Conv1D" and c_attn["shape"] == [64, 192]
    text = graftlab("inspect", "demo:tiny-bert")
    assert text.returncode == 0 and "sequence-classification" in text.stdout


def test_invalid_input_exits_2_with_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("adapter:\n  rnak: 8\n")
    proc = graftlab("train", str(tmp_path / "bad.yaml"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "adapter.rnak" in lines[0]
    proc = graftlab("inspect", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_subcommands_never_import_qt(tiny_models, tmp_path):
    # Through the real entry point (`graftlab` = graftlab.app.launcher:main), as a user runs it.
    code = ("import sys\nfrom graftlab.app.launcher import main\n"
            "rc = main(['inspect', 'demo:tiny-llama'])\n"
            "assert rc == 0\n"
            f"assert main(['install-desktop', '--prefix', {str(tmp_path)!r}]) == 0\n"
            "bad = [m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph', 'shiboken'))]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
