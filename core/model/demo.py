"""Built-in demo models and data, generated offline so a new user can train at once.

The demo models have **random weights**: they exist to show the workflow (the loss falls fast on
the demo data), not to produce a useful model. Each is written once to the user's cache folder
with ``save_pretrained`` and then loaded through exactly the same path as any user model.

The same builders make the tiny models the tests use (Llama, GPT-2, Qwen2, BERT).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

from graftlab.core.atomic import atomic_dir, atomic_write_text

# ChatML with {% generation %} markers so that assistant tokens can be masked exactly.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>", "<|im_start|>", "<|im_end|>"]

DEMO_MODELS: dict[str, dict[str, Any]] = {
    "tiny-llama": {
        "arch": "llama",
        "task": "causal-lm",
        "description": "Llama-style causal LM, 4 layers, hidden 128 (random weights, demo only)",
        "size": {"hidden": 128, "layers": 4, "heads": 4, "kv_heads": 2, "ffn": 256},
    },
    "tiny-bert": {
        "arch": "bert",
        "task": "sequence-classification",
        "description": "BERT-style classifier, 2 layers, hidden 64, 2 labels "
        "(random weights, demo only)",
        "size": {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 4, "ffn": 128},
    },
}
DEMO_DATASETS = {
    "stories": "text",
    "qa": "prompt-completion",
    "chat": "chat",
    "sentiment": "classification",
}

_SUBJECTS = ["the cat", "a dog", "the bird", "my friend", "the teacher", "a child", "the robot"]
_VERBS = ["sees", "likes", "finds", "paints", "follows", "helps", "reads"]
_OBJECTS = ["the red ball", "a small house", "the green tree", "a blue book", "the old map"]
_PLACES = ["in the park", "at home", "by the river", "on the hill", "in the garden"]


def cache_dir() -> Path:
    """Graftlab's cache folder: ``$GRAFTLAB_CACHE``, else the platform's user cache folder.

    That is ``$XDG_CACHE_HOME/graftlab`` or ``~/.cache/graftlab`` on Linux,
    ``~/Library/Caches/graftlab`` on macOS and ``%LOCALAPPDATA%\\graftlab\\Cache`` on Windows.
    """
    override = os.environ.get("GRAFTLAB_CACHE")
    if override:
        return Path(override)
    from platformdirs import user_cache_path

    return user_cache_path("graftlab", appauthor=False)


def _sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
        f"{rng.choice(_PLACES)}."
        for _ in range(n)
    ]


def build_tokenizer(vocab_size: int = 512, corpus: list[str] | None = None) -> Any:
    """A real byte-level BPE tokenizer trained offline, with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = corpus or (_sentences(400) + [json.dumps(r) for r in _qa_rows(50)])
    tok.train_from_iterator(text, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_config(arch: str, vocab_size: int, size: dict[str, int] | None = None) -> Any:
    """A transformers config of architecture `arch` (llama, mistral, qwen2, gpt2, bert) at a
    tiny size."""
    s = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 128} | (size or {})
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=vocab_size, hidden_size=s["hidden"],
                           num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                           num_key_value_heads=s["kv_heads"], intermediate_size=s["ffn"],
                           max_position_embeddings=1024, tie_word_embeddings=False,
                           bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "mistral":
        from transformers import MistralConfig

        return MistralConfig(vocab_size=vocab_size, hidden_size=s["hidden"],
                             num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                             num_key_value_heads=s["kv_heads"], intermediate_size=s["ffn"],
                             max_position_embeddings=1024, tie_word_embeddings=False,
                             bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(vocab_size=vocab_size, hidden_size=s["hidden"],
                           num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                           num_key_value_heads=s["kv_heads"], intermediate_size=s["ffn"],
                           max_position_embeddings=1024, tie_word_embeddings=True,
                           bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(vocab_size=vocab_size, n_embd=s["hidden"], n_layer=s["layers"],
                          n_head=s["heads"], n_positions=1024, bos_token_id=1, eos_token_id=2,
                          pad_token_id=0)
    if arch == "bert":
        from transformers import BertConfig

        return BertConfig(vocab_size=vocab_size, hidden_size=s["hidden"],
                          num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                          intermediate_size=s["ffn"], max_position_embeddings=1024,
                          num_labels=2, pad_token_id=0)
    raise ValueError(f"unknown tiny architecture {arch!r}")


def save_tiny_model(arch: str, folder: Path, task: str = "causal-lm", seed: int = 0,
                    size: dict[str, int] | None = None, vocab_size: int = 512) -> Path:
    """Build a random-weight model + tokenizer and ``save_pretrained`` both into `folder`."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    transformers.logging.disable_progress_bar()  # no "Writing model shards" bar on first use
    tok = build_tokenizer(vocab_size)
    config = build_config(arch, len(tok), size)
    torch.manual_seed(seed)
    auto = AutoModelForSequenceClassification if task != "causal-lm" else AutoModelForCausalLM
    if task != "causal-lm":
        config.num_labels = 2
        config.id2label = {0: "negative", 1: "positive"}
        config.label2id = {"negative": 0, "positive": 1}
    model = auto.from_config(config)
    with atomic_dir(Path(folder)) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return Path(folder)


def demo_model_path(name: str) -> Path:
    """The folder of demo model `name`, generating it on first use."""
    if name not in DEMO_MODELS:
        from graftlab.core.errors import UserError

        raise UserError(f"there is no demo model {name!r}; choose one of "
                        f"{', '.join('demo:' + n for n in DEMO_MODELS)}.", field="model.source")
    spec = DEMO_MODELS[name]
    folder = cache_dir() / "demo-models" / name
    if not (folder / "config.json").is_file():
        save_tiny_model(spec["arch"], folder, task=spec["task"], size=spec["size"])
    return folder


def _qa_rows(n: int, seed: int = 1) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        rows.append({"prompt": f"What is {a} plus {b}? Answer:", "completion": f" {a + b}."})
    return rows


def demo_rows(name: str) -> list[dict[str, Any]]:
    """The rows of demo dataset `name` (deterministic)."""
    if name == "stories":
        return [{"text": s} for s in _sentences(256)]
    if name == "qa":
        return _qa_rows(256)
    if name == "chat":
        return [
            {"messages": [{"role": "user", "content": r["prompt"]},
                          {"role": "assistant", "content": r["completion"].strip()}]}
            for r in _qa_rows(128)
        ]
    if name == "sentiment":
        rng = random.Random(2)
        good = ["great", "lovely", "wonderful", "happy", "excellent"]
        bad = ["awful", "sad", "terrible", "boring", "broken"]
        rows = []
        for _ in range(256):
            positive = rng.random() < 0.5
            word = rng.choice(good if positive else bad)
            rows.append({"text": f"{rng.choice(_SUBJECTS)} had a {word} day "
                                 f"{rng.choice(_PLACES)}.",
                         "label": "positive" if positive else "negative"})
        return rows
    from graftlab.core.errors import UserError

    raise UserError(f"there is no demo dataset {name!r}; choose one of "
                    f"{', '.join('demo:' + n for n in DEMO_DATASETS)}.", field="data.path")


def demo_data_path(name: str) -> Path:
    """A jsonl file holding demo dataset `name`, written on first use."""
    rows = demo_rows(name)
    path = cache_dir() / "demo-data" / f"{name}.jsonl"
    if not path.is_file():
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path
