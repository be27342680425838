"""The adapter's model card: PEFT's front matter and sections, filled from the adapter and its
run; no hub link built from a local path; a README the user wrote is never replaced."""

from __future__ import annotations

import json

import pytest
import yaml
from graftlab.core.adapter.export import adapter_readme, export_adapter, save_adapter
from graftlab.core.adapter.gguf_export import export_gguf
from graftlab.core.adapter.model_card import (
    CardFacts,
    is_graftlab_card,
    read_facts,
    render_card,
)
from graftlab.core.adapter.uniform import export_uniform

OVERRIDE = "model.layers.1.self_attn.q_proj"


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def fake_run(root, pm):
    """A run folder as training leaves it: run.yaml, metrics.jsonl and adapter/."""
    root.mkdir()
    (root / "run.yaml").write_text(yaml.safe_dump({
        "model": {"source": "demo:tiny-llama"},
        "data": {"path": "data/train.jsonl", "format": "chat", "eval_fraction": 0.1,
                 "max_length": 256},
        "training": {"max_steps": 40, "batch_size": 8, "learning_rate": 1e-4,
                     "scheduler": "cosine", "seed": 3}}))
    events = [{"event": "started", "run_dir": str(root), "total_steps": 40,
               "num_examples": 900, "device": "cpu", "precision": "fp32"},
              {"event": "eval", "step": 0, "eval_loss": 9.0, "base": True},
              *({"event": "step", "step": s, "loss": 5.0 - s / 10} for s in range(1, 41)),
              {"event": "eval", "step": 40, "eval_loss": 3.25, "perplexity": 25.79}]
    (root / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    save_adapter(pm, root / "adapter", "/models/my-llama", run_dir=root)
    return root / "adapter"


def test_card_from_a_run(tmp_path, save_peft):
    pm = save_peft(tmp_path / "scratch", r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                   rank_pattern={OVERRIDE: 16}, alpha_pattern={OVERRIDE: 32})
    adapter = fake_run(tmp_path / "run", pm)
    text = (adapter / "README.md").read_text()
    meta = front_matter(text)
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-generation"
    assert "lora" in meta["tags"] and "base_model" not in meta  # a local base: no hub link
    assert "huggingface.co" not in text and "`/models/my-llama`" in text
    for part in ("## Model Details", "## Training Details", "### Training Data",
                 "#### Training Hyperparameters", "## Evaluation", "### Framework versions",
                 "r = 8, alpha = 16 (scale 2)", "4 modules: q_proj, v_proj in layers 0-1",
                 f"| `{OVERRIDE}` | 16 | 32 | 2 |", "`data/train.jsonl` (chat)",
                 "900 for training, 10% of the data held out", "**Steps:** 40 of 40",
                 "**Learning rate:** 0.0001", "fp32 on cpu", "(last logged step): 1",
                 "**Eval loss:** 3.25", "**Perplexity:** 25.79", "- PEFT "):
        assert part in text, part
    assert "**Eval loss:** 9" not in text  # the base's score is not the adapter's
    assert is_graftlab_card(text)


def test_hub_base_is_linked_the_way_peft_does():
    text = render_card(CardFacts("meta-llama/Llama-3.2-1B", rank=8, alpha=16))
    meta = front_matter(text)
    assert meta["base_model"] == "meta-llama/Llama-3.2-1B"
    assert "base_model:adapter:meta-llama/Llama-3.2-1B" in meta["tags"]
    assert "(https://huggingface.co/meta-llama/Llama-3.2-1B)" in text
    local = render_card(CardFacts("/home/me/models/llama", rank=8, alpha=16))
    assert "base_model" not in front_matter(local) and "huggingface.co" not in local


def test_a_readme_the_user_wrote_is_kept(tmp_path, save_peft):
    pm = save_peft(tmp_path / "scratch", r=4, lora_alpha=8, target_modules=["q_proj"])
    out = tmp_path / "adapter"
    save_adapter(pm, out, "/models/base")
    card = (out / "README.md").read_text()
    assert is_graftlab_card(card)
    save_adapter(pm, out, "/models/base", overwrite=True)  # our own card: rewritten
    assert is_graftlab_card((out / "README.md").read_text())
    edited = card.replace("# LoRA adapter", "# My summarizer, v2")
    (out / "README.md").write_text(edited)
    assert not is_graftlab_card(edited)
    save_adapter(pm, out, "/models/base", overwrite=True)
    assert (out / "README.md").read_text() == edited
    for name, export in (("peft", export_adapter), ("uniform", export_uniform)):
        export(out, tmp_path / name)
        assert (tmp_path / name / "README.md").read_text() == edited
    (out / "README.md").write_text(adapter_readme("/models/base"))  # an older Graftlab card
    save_adapter(pm, out, "/models/base", overwrite=True)
    assert is_graftlab_card((out / "README.md").read_text())


def test_exports_write_a_card_that_says_what_they_are(tmp_path, save_peft):
    pm = save_peft(tmp_path / "scratch", r=4, lora_alpha=8, target_modules=["q_proj"])
    adapter = fake_run(tmp_path / "run", pm)
    pm.get_base_model().config.save_pretrained(tmp_path / "base")
    export_uniform(adapter, tmp_path / "uniform")
    export_gguf(adapter, tmp_path / "gguf", base=str(tmp_path / "base"))
    uniform = (tmp_path / "uniform" / "README.md").read_text()
    gguf_card = (tmp_path / "gguf" / "README.md").read_text()
    assert "vLLM" in uniform and "**Eval loss:** 3.25" in uniform
    assert "llama-cli -m BASE.gguf --lora adapter.gguf" in gguf_card
    assert "PeftModel.from_pretrained" not in gguf_card
    assert is_graftlab_card(uniform) and is_graftlab_card(gguf_card)


def test_facts_without_a_run(tmp_path, save_peft):
    save_peft(tmp_path / "a", r=4, lora_alpha=8, target_modules=["q_proj"], use_rslora=True)
    facts = read_facts(tmp_path / "a", base="org/model")
    assert facts.variant == "rslora" and facts.steps is None and len(facts.modules) == 2
    text = render_card(facts)
    assert "rsLoRA" in text and "not recorded" in text and "no metrics recorded" in text


@pytest.mark.slow
def test_training_writes_the_card(tmp_path):
    from graftlab.core.config import Override, RunConfig
    from graftlab.core.train.session import TrainingSession

    cfg = RunConfig()
    cfg.model.source = "demo:tiny-llama"
    cfg.data.path = "demo:stories"
    cfg.data.eval_fraction = 0.2
    cfg.adapter.targets = ["model.layers.*.self_attn.q_proj"]
    cfg.adapter.overrides = [Override(targets=[OVERRIDE], rank=16, alpha=32)]
    cfg.training.max_steps = 2
    cfg.training.output_dir = str(tmp_path / "run")
    result = TrainingSession(cfg).run()
    text = (result.adapter_dir / "README.md").read_text()
    assert is_graftlab_card(text) and "huggingface.co" not in text
    assert "base_model" not in front_matter(text)  # the demo base is a local folder
    for part in ("demo:stories", "**Steps:** 2 of 2", f"| `{OVERRIDE}` | 16 | 32 | 2 |",
                 "**Eval loss:**", "Final training loss"):
        assert part in text, part
