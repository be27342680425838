"""Tokenized datasets are cached: a second run on the same data, tokenizer and settings (in a new
process, with another hash seed) does not tokenize again; a changed setting or file does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from graftlab.core.config import DataConfig

SCRIPT = textwrap.dedent("""
    import json, sys
    import graftlab.core.data.encode as de
    from graftlab.core.config import DataConfig
    from graftlab.core.data.dataset import prepare
    from transformers import AutoTokenizer

    calls = [0]
    original = de.Encoder.__call__

    def counting(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs)

    de.Encoder.__call__ = counting
    tok = AutoTokenizer.from_pretrained(sys.argv[1])
    data = prepare(DataConfig(path=sys.argv[2], max_length=int(sys.argv[3])), tok, "causal-lm")
    print(json.dumps({"calls": calls[0], "rows": len(data.train),
                      "first": data.train[0]["input_ids"]}))
""")


@pytest.fixture
def count_encoder_calls(monkeypatch):
    """Counts Encoder batches. Patching the class leaves each instance's fingerprint alone."""
    import graftlab.core.data.encode as de

    calls = [0]
    original = de.Encoder.__call__

    def counting(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(de.Encoder, "__call__", counting)
    return calls


def _prepare(tokenizer, path, max_length=64):
    from graftlab.core.data.dataset import prepare

    return prepare(DataConfig(path=str(path), max_length=max_length), tokenizer, "causal-lm")


@pytest.mark.slow
def test_second_run_reads_the_cache_in_a_new_process(tiny_models, write_jsonl,
                                                     count_encoder_calls):
    import datasets
    from transformers import AutoTokenizer

    path = write_jsonl([{"text": f"the cat sees the red ball {i} times"} for i in range(50)])
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_models["llama"]))
    first = _prepare(tokenizer, path)
    assert count_encoder_calls[0] > 0  # the first run tokenizes
    # The cache lives in datasets' stable cache folder (HF_DATASETS_CACHE, default
    # ~/.cache/huggingface/datasets), next to the Arrow copy of the file, not in a temp dir.
    cache_file = first.train.cache_files[0]["filename"]
    assert cache_file.startswith(str(datasets.config.HF_DATASETS_CACHE))
    env = dict(os.environ, PYTHONHASHSEED="12345",
               HF_DATASETS_CACHE=str(datasets.config.HF_DATASETS_CACHE))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_models["llama"]), str(path),
                           "64"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    second = json.loads(proc.stdout.strip().splitlines()[-1])
    assert second["calls"] == 0, "the second run tokenized again"
    assert second["rows"] == len(first.train)
    assert second["first"] == first.train[0]["input_ids"]


def test_changed_settings_or_file_tokenize_again(tiny_models, write_jsonl, count_encoder_calls):
    from transformers import AutoTokenizer

    rows = [{"text": f"a dog finds a small house {i} times"} for i in range(40)]
    path = write_jsonl(rows, "again.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_models["llama"]))
    _prepare(tokenizer, path)
    after_first = count_encoder_calls[0]
    _prepare(tokenizer, path)
    assert count_encoder_calls[0] == after_first  # same process, same settings: cached
    _prepare(tokenizer, path, max_length=16)
    after_length = count_encoder_calls[0]
    assert after_length > after_first  # another max_length is another tokenization
    other = AutoTokenizer.from_pretrained(str(tiny_models["gpt2"]))
    other.add_tokens(["<graftlab-test>"])  # a different vocabulary
    _prepare(other, path, max_length=16)
    after_tokenizer = count_encoder_calls[0]
    assert after_tokenizer > after_length
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:30]), encoding="utf-8")
    data = _prepare(tokenizer, path)
    assert count_encoder_calls[0] > after_tokenizer and len(data.train) == 30
