"""Uniform-scale export: one rank and one alpha, with each module's scale folded into lora_B.
PEFT's logits stay equal; one alpha / r (vLLM, llama.cpp) then gives every module its trained
strength, and adapter-info no longer raises the uniform-scale finding."""

from __future__ import annotations

import json

import pytest
import torch
from graftlab.core.adapter.uniform import export_uniform
from graftlab.core.errors import UserError


def _logits(base_pm, adapter_dir):
    from peft import PeftModel

    base = base_pm.get_base_model()
    ids = torch.tensor([[1, 5, 9, 17, 33, 64, 100, 7]])
    with torch.no_grad():
        model = PeftModel.from_pretrained(base, str(adapter_dir))
        model.eval()
        out = model(input_ids=ids).logits
        model.unload()  # leaves the base as it was for the next load
    return out


@pytest.mark.parametrize("rslora", [False, True])
def test_uniform_export_keeps_logits_and_drops_the_patterns(tmp_path, save_peft, rslora):
    src = tmp_path / "adapter"
    pm = save_peft(src, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                   rank_pattern={"model.layers.1.self_attn.q_proj": 16, "down_proj": 2},
                   alpha_pattern={"model.layers.1.self_attn.q_proj": 32, "v_proj": 3},
                   use_rslora=rslora)
    pm.eval()
    ids = torch.tensor([[1, 5, 9, 17, 33, 64, 100, 7]])
    with torch.no_grad():
        want = pm(input_ids=ids).logits
    out = tmp_path / "uniform"
    files = export_uniform(src, out)
    assert {p.name for p, _n in files} >= {"adapter_config.json", "adapter_model.safetensors",
                                           "graftlab-output.json"}
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and cfg["lora_alpha"] == 16.0 and not cfg["use_rslora"]
    assert cfg["rank_pattern"] == {} and cfg["alpha_pattern"] == {}
    from safetensors.torch import load_file

    tensors = load_file(str(out / "adapter_model.safetensors"))
    assert all(t.shape[0] == 16 for k, t in tensors.items() if "lora_A" in k)
    pm.unload()
    got = _logits(pm, out)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # one alpha / r for all, as vLLM and llama.cpp apply it: scale 1 with B already scaled
    assert cfg["lora_alpha"] / cfg["r"] == 1.0


def test_adapter_info_has_no_uniform_scale_finding_after_export(tmp_path, save_peft):
    from graftlab.core.adapter.compat import check_adapter as _check
    from graftlab.core.adapter.info import read_adapter

    def check_adapter(folder):
        return _check(read_adapter(folder))

    src = tmp_path / "adapter"
    save_peft(src, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
              rank_pattern={"v_proj": 8}, alpha_pattern={"v_proj": 32})
    before = {f.rule for f in check_adapter(src)}
    export_uniform(src, tmp_path / "u")
    after = {f.rule for f in check_adapter(tmp_path / "u")}
    assert before - after  # the per-module scale findings are gone
    assert not any("alpha" in r or "rank_pattern" in r for r in after)


def test_refusals_and_nothing_lost(tmp_path, save_peft):
    src = tmp_path / "adapter"
    save_peft(src, r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True)
    with pytest.raises(UserError, match="DoRA"):
        export_uniform(src, tmp_path / "u")
    assert not (tmp_path / "u").exists()
    plain = tmp_path / "plain"
    save_peft(plain, r=4, lora_alpha=8, target_modules=["q_proj"])
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UserError):
        export_uniform(plain, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    export_uniform(plain, tmp_path / "again")
    with pytest.raises(UserError):
        export_uniform(plain, tmp_path / "again")  # an earlier export needs overwrite
    export_uniform(plain, tmp_path / "again", overwrite=True)


@pytest.mark.slow
def test_cli_export_formats(tmp_path, save_peft):
    import subprocess
    import sys

    src = tmp_path / "adapter"
    save_peft(src, r=4, lora_alpha=8, target_modules=["q_proj"], rank_pattern={"q_proj": 8})

    def run(*args):
        return subprocess.run([sys.executable, "-m", "graftlab.core.cli", "export", str(src),
                               *args], capture_output=True, text=True, timeout=300)

    ok = run("--format", "uniform", "--output", str(tmp_path / "u"))
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "u" / "adapter_config.json").read_text())["r"] == 8
    assert run("--format", "peft", "--output", str(tmp_path / "p")).returncode == 0
    again = run("--format", "uniform", "--output", str(tmp_path / "u"))
    assert again.returncode == 2 and again.stderr.startswith("error: ")
    merged = run("--format", "merged", "--output", str(tmp_path / "m"))
    assert merged.returncode == 2 and "--base" in merged.stderr
