"""run.yaml: strict loading, defaults, round trip, errors that name the key."""

from __future__ import annotations

import pytest
from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError


def test_defaults_round_trip(tmp_path):
    cfg = RunConfig()
    cfg.adapter.targets = ["model.layers.*.self_attn.q_proj"]
    cfg.save(tmp_path / "run.yaml")
    again = RunConfig.load(tmp_path / "run.yaml")
    assert again == cfg and again.to_yaml() == cfg.to_yaml()


def test_issue_example_loads(tmp_path):
    (tmp_path / "run.yaml").write_text("""
model:
  source: path/to/folder
  task: causal-lm
adapter:
  rank: 8
  alpha: 16
  dropout: 0.0
  variant: lora
  targets: ["model.layers.*.self_attn.q_proj", "model.layers.0.mlp.down_proj"]
  overrides:
    - targets: ["model.layers.1.*"]
      rank: 16
      alpha: 32
data:
  path: train.jsonl
  format: text
  max_length: 512
training:
  max_steps: 100
  batch_size: 4
  learning_rate: 2.0e-4
  seed: 0
  output_dir: runs/example
""")
    cfg = RunConfig.load(tmp_path / "run.yaml")
    assert cfg.adapter.overrides[0].rank == 16 and cfg.adapter.overrides[0].alpha == 32.0
    assert cfg.training.learning_rate == 2e-4


@pytest.mark.parametrize("text,key", [
    ("adapter:\n  rnak: 8\n", "adapter.rnak"),
    ("adapter:\n  rank: eight\n", "adapter.rank"),
    ("adapter:\n  rank: 0\n", "adapter.rank"),
    ("adapter:\n  alpha: -1\n", "adapter.alpha"),
    ("adapter:\n  dropout: 1.0\n", "adapter.dropout"),
    ("adapter:\n  variant: lokr\n", "adapter.variant"),
    ("training:\n  learning_rate: .nan\n", "training.learning_rate"),
    ("training:\n  batch_size: 0\n", "training.batch_size"),
    ("training:\n  max_steps: 0\n", "training.max_steps"),
    ("data:\n  format: xml\n", "data.format"),
    ("bogus: 1\n", "bogus"),
    ("- 1\n- 2\n", None),
    ("adapter: [1, 2]\n", "adapter"),
    ("adapter:\n  targets: 3\n", "adapter.targets"),
])
def test_bad_values_name_the_key(tmp_path, text, key):
    (tmp_path / "run.yaml").write_text(text)
    with pytest.raises(UserError) as info:
        RunConfig.load(tmp_path / "run.yaml")
    if key:
        assert f"`{key}" in info.value.message or key in info.value.message
        assert info.value.field == key
    assert "\n" not in info.value.message


def test_yaml_syntax_error_gives_line(tmp_path):
    (tmp_path / "run.yaml").write_text("adapter:\n  rank: [8\n")
    with pytest.raises(UserError, match="line"):
        RunConfig.load(tmp_path / "run.yaml")
