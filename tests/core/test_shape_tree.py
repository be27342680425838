"""The torch-free tree of Llama-family configs equals the meta-device skeleton's tree."""

from __future__ import annotations

import json

import pytest
from graftlab.core.model.module_tree import build_tree
from graftlab.core.model.shape_tree import quick_tree, tree_from_config_json

SMALL = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
             num_attention_heads=4, num_key_value_heads=2)
CASES = [
    ("llama", {}),
    ("llama", {"tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True}),
    ("llama", {"head_dim": 32, "dtype": "bfloat16"}),
    ("mistral", {}),
    ("qwen2", {"tie_word_embeddings": True}),
    ("qwen2", {"tie_word_embeddings": False, "dtype": "float16"}),
]


def _save(tmp_path, model_type, extra):
    from transformers import AutoConfig

    AutoConfig.for_model(model_type, **(SMALL | extra)).save_pretrained(tmp_path)
    return tmp_path / "config.json"


@pytest.mark.parametrize(("model_type", "extra"), CASES)
def test_equals_the_skeleton(tmp_path, model_type, extra):
    path = _save(tmp_path, model_type, extra)
    fast = tree_from_config_json(path, str(path))
    assert fast is not None
    assert fast.to_json() == build_tree(str(path)).to_json()
    assert quick_tree(str(path)).to_json() == fast.to_json()


def test_llama3_70b_count(tmp_path):
    path = _save(tmp_path, "llama", dict(hidden_size=8192, num_hidden_layers=80,
                                         num_attention_heads=64, num_key_value_heads=8,
                                         intermediate_size=28672, vocab_size=128256,
                                         tie_word_embeddings=False))
    assert tree_from_config_json(path).total_params == 70_553_706_496


def test_unknown_structures_fall_back(tmp_path, tiny_models):
    assert quick_tree(str(tiny_models["gpt2"])) is None  # not a Llama-family model
    assert quick_tree(str(tiny_models["llama"]), task="sequence-classification") is None
    path = _save(tmp_path, "llama", {"architectures": ["LlamaForSequenceClassification"]})
    assert tree_from_config_json(path) is None
    data = json.loads(path.read_text())
    data.pop("architectures")
    data.pop("intermediate_size")  # a default we would have to guess
    path.write_text(json.dumps(data))
    assert tree_from_config_json(path) is None
    data["intermediate_size"], data["auto_map"] = 96, {"AutoModel": "x.Y"}
    path.write_text(json.dumps(data))
    assert tree_from_config_json(path) is None
