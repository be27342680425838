"""`graftlab plan`: the pre-flight without a window, from the training session's own steps.
No weights are read: the tests delete the weight files before planning."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml
from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from graftlab.core.train.preflight import FREE_MEMORY_ENV, make_plan

TARGETS = {
    "llama": ["*.q_proj", "*.v_proj", "*.down_proj"],
    "gpt2": ["*.c_attn", "*.c_fc"],
    "qwen2": ["*.q_proj", "*.k_proj", "*.o_proj"],
    "bert": ["*.query", "*.value"],
}


def _weightless(tiny_models, arch, tmp_path):
    """A copy of a tiny model folder without its weight files."""
    folder = tmp_path / f"{arch}-noweights"
    shutil.copytree(tiny_models[arch], folder)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    return folder


def _cfg(source, arch, data=None, **training):
    cfg = {"model": {"source": str(source)},
           "adapter": {"rank": 4, "alpha": 8, "targets": TARGETS[arch],
                       "overrides": [{"targets": ["*.1.*"], "rank": 8, "alpha": 32}]},
           "data": {"path": str(data) if data else "", "max_length": 48},
           "training": {"batch_size": 4, "device": "cpu", **training}}
    return RunConfig.from_dict(cfg)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2", "bert"])
@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_trainable_params_equal_peft(tiny_models, tmp_path, arch, variant):
    """The plan's count is what PEFT reports after get_peft_model, per-module rank overrides,
    DoRA magnitudes and a classifier's fully trained head included."""
    from graftlab.core.model.loading import load_base_model
    from peft import get_peft_model

    cfg = _cfg(_weightless(tiny_models, arch, tmp_path), arch)
    cfg.adapter.variant = variant
    result = make_plan(cfg, with_data=False)
    model, _tok, _task = load_base_model(str(tiny_models[arch]), result.tree.task)
    assert result.to_json()["model"]["total_params"] == sum(
        p.numel() for p in model.parameters())
    peft_model = get_peft_model(model, result.plan.lora_config())
    trainable, _total = peft_model.get_nb_trainable_parameters()
    assert result.to_json()["trainable_params"] == trainable
    names = {m["name"] for m in result.to_json()["modules"]}
    wrapped = {n.removeprefix("base_model.model.") for n, mod in peft_model.named_modules()
               if hasattr(mod, "lora_A")}
    assert names == wrapped


def test_plan_reads_data_and_decides_packing_like_training(tiny_models, tmp_path,
                                                           write_jsonl):
    rows = [{"text": "word " * n} for n in (3, 40, 7, 90, 5, 60, 2, 30) * 4]
    data = write_jsonl(rows)
    cfg = _cfg(_weightless(tiny_models, "llama", tmp_path), "llama", data)
    result = make_plan(cfg).to_json()
    assert result["data"]["examples"] == 32 and result["data"]["truncated"] > 0
    assert result["data"]["longest"] == 48  # max_length
    assert result["packing"]["mode"] == "on" and "less work" in result["packing"]["reason"]
    cfg.training.packing = "off"
    assert make_plan(cfg).to_json()["packing"]["mode"] == "off"
    uniform = write_jsonl([{"text": "word " * 80}] * 32, "uniform.jsonl")
    cfg.training.packing, cfg.data.path = "auto", str(uniform)
    off = make_plan(cfg).to_json()["packing"]
    assert off["mode"] == "off" and "padded batches cost less" in off["reason"]


def test_bare_config_json_plans_without_the_data_part(tiny_models, tmp_path, write_jsonl):
    config = tmp_path / "bare" / "config.json"
    config.parent.mkdir()
    shutil.copy(tiny_models["llama"] / "config.json", config)
    cfg = _cfg(config, "llama", write_jsonl([{"text": "hello there"}]))
    result = make_plan(cfg)
    out = result.to_json()
    assert out["data"] is None and out["trainable_params"] > 0
    assert out["memory"]["total_bytes"] > 0 and out["memory"]["fits"] is True
    assert "not read" in result.to_text()


def test_demo_source_and_text_table():
    cfg = RunConfig.from_dict({"model": {"source": "demo:tiny-llama"},
                               "adapter": {"targets": ["*.q_proj"]},
                               "data": {"path": "demo:stories"}})
    text = make_plan(cfg).to_text()
    for head in ("model", "device", "adapter", "memory", "packing", "data"):
        assert any(line.startswith(head) for line in text.splitlines()), head


def test_does_not_fit_says_why_and_what_helps(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv(FREE_MEMORY_ENV, str(100 * 2**20))  # 100 MB free
    cfg = _cfg(_weightless(tiny_models, "llama", tmp_path), "llama")
    result = make_plan(cfg, with_data=False)
    out = result.to_json()["memory"]
    assert out["fits"] is False and out["free_bytes"] == 100 * 2**20
    msg = out["message"]
    assert msg.startswith("the run needs about") and "the largest part is overhead" in msg
    assert msg.count(".") >= 1 and "\n" not in msg
    cfg.training.batch_size, cfg.data.max_length = 64, 4096
    msg = make_plan(cfg, with_data=False).to_json()["memory"]["message"]
    assert "largest part is activations" in msg
    assert "training.batch_size" in msg and "gradient_checkpointing" in msg


# ---- the command line ------------------------------------------------------------------------
def graftlab(*args, env=None):
    import os

    return subprocess.run([sys.executable, "-m", "graftlab.core.cli", *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_cli_json_text_and_the_same_errors_as_train(tiny_models, tmp_path):
    run = tmp_path / "run.yaml"
    cfg = {"model": {"source": str(_weightless(tiny_models, "qwen2", tmp_path))},
           "adapter": {"targets": ["*.q_proj"]},
           "data": {"path": "demo:stories", "max_length": 32},
           "training": {"output_dir": str(tmp_path / "out")}}
    run.write_text(yaml.safe_dump(cfg))
    proc = graftlab("plan", str(run), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"model", "modules", "trainable_params", "memory", "compatibility",
                        "packing", "data", "device", "precision"}
    assert set(out["memory"]) >= {"device", "total_bytes", "breakdown", "fits"}
    assert not (tmp_path / "out").exists()  # planning creates nothing
    text = graftlab("plan", str(run))
    assert text.returncode == 0 and text.stdout.startswith("model")
    for bad in ({"adapter": {"targets": ["*.nope"]}}, {"training": {"batch_sise": 2}},
                {"model": {"source": str(tmp_path / "missing")}}):
        broken = yaml.safe_load(run.read_text())
        for k, v in bad.items():
            broken[k] = {**broken.get(k, {}), **v}
        bad_run = tmp_path / "bad.yaml"
        bad_run.write_text(yaml.safe_dump(broken))
        planned, trained = graftlab("plan", str(bad_run)), graftlab("train", str(bad_run))
        assert planned.returncode == trained.returncode == 2
        assert planned.stderr.strip() == trained.stderr.strip().splitlines()[-1]
        assert planned.stderr.startswith("error: ") and "Traceback" not in planned.stderr


@pytest.mark.slow
def test_train_warns_with_the_plans_sentence_and_still_runs(tiny_models, tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({
        "model": {"source": str(tiny_models["llama"])}, "adapter": {"targets": ["*.q_proj"]},
        "data": {"path": "demo:stories", "max_length": 32},
        "training": {"max_steps": 2, "output_dir": str(tmp_path / "out")}}))
    env = {FREE_MEMORY_ENV: str(50 * 2**20)}
    plan = json.loads(graftlab("plan", str(run), "--json", env=env).stdout)
    trained = graftlab("train", str(run), env=env)
    assert trained.returncode == 0, trained.stderr
    assert f"warning: {plan['memory']['message']}" in trained.stderr
    assert (tmp_path / "out" / "adapter").is_dir()


def test_plan_refuses_bad_input_with_a_sentence(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        make_plan(RunConfig.from_dict({"model": {"source": str(tmp_path / "nope")},
                                       "adapter": {"targets": ["*.q_proj"]}}))
