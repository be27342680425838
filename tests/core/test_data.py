"""graftlab.core.data.dataset: loading, format detection, tokenization/masking, errors, preview."""

from __future__ import annotations

import contextlib
import copy
import json

import pytest
from graftlab.core.config import DataConfig
from graftlab.core.data.dataset import (
    PreparedData,
    detect_format,
    length_stats,
    load_raw,
    make_collator,
    prepare,
    preview,
    resolve_data_path,
    token_texts,
)
from graftlab.core.errors import UserError
from graftlab.core.model.demo import CHAT_TEMPLATE, build_tokenizer

CAUSAL, CLS = "causal-lm", "sequence-classification"
# ChatML without {% generation %}: forces the prefix-masking path
PLAIN_CHATML = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture
def tok_copy(tok):
    return copy.deepcopy(tok)


def trained_text(tok, row) -> str:
    return tok.decode(
        [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100]
    )


def cfg(path, **kw) -> DataConfig:
    return DataConfig(path=str(path), **kw)


def chat(*turns: str) -> dict:
    roles = ["user", "assistant"] * len(turns)
    return {"messages": [{"role": r, "content": c} for r, c in zip(roles, turns, strict=False)]}


@contextlib.contextmanager
def raises(match: str, field: str | None = None):
    """pytest.raises(UserError) that also checks the run.yaml key the GUI highlights."""
    with pytest.raises(UserError, match=match) as info:
        yield info
    if field is not None:
        assert info.value.field == field


# ---- formats and masking -------------------------------------------------------------------


def test_text_trains_on_every_token_after_the_first_and_appends_eos(tok):
    p = prepare(cfg("demo:stories"), tok, CAUSAL)
    assert isinstance(p, PreparedData) and p.format == "text" and p.columns == {"text": "text"}
    assert p.train.column_names == ["input_ids", "attention_mask", "labels"]
    row = p.train[0]
    assert row["input_ids"][-1] == tok.eos_token_id
    assert row["labels"][0] == -100 and row["labels"][1:] == row["input_ids"][1:]
    assert row["attention_mask"] == [1] * len(row["input_ids"])
    assert p.num_raw == 256 and p.num_dropped == 0 and p.eval is None and p.label_names is None
    assert len(p.lengths) == 256 and p.trained_tokens == sum(n - 1 for n in p.lengths)


def test_prompt_completion_trains_only_on_completion_and_eos(tok, write_jsonl):
    rows = [
        {"prompt": "What is 2 plus 3? Answer:", "completion": " 5."},
        {"prompt": "Name a colour:", "completion": " green"},
    ]
    p = prepare(cfg(write_jsonl(rows)), tok, CAUSAL)
    assert p.format == "prompt-completion"
    assert p.columns == {"prompt": "prompt", "completion": "completion"}
    for row, src in zip(p.train, rows, strict=True):
        assert trained_text(tok, row) == src["completion"] + "<|eos|>"
        assert tok.decode(row["input_ids"]) == src["prompt"] + src["completion"] + "<|eos|>"


def test_chat_masks_every_assistant_turn_with_generation_markers(tok, write_jsonl):
    rows = [chat("Capital of France?", "Paris.", "And Germany?", "Berlin.")]
    p = prepare(cfg(write_jsonl(rows)), tok, CAUSAL)
    assert p.format == "chat" and p.columns == {"messages": "messages"}
    assert trained_text(tok, p.train[0]) == "Paris.<|im_end|>Berlin.<|im_end|>"


def test_chat_without_generation_markers_uses_prefix_masking(tok_copy, write_jsonl):
    tok_copy.chat_template = PLAIN_CHATML
    p = prepare(
        cfg(write_jsonl([chat("Capital of France?", "Paris.", "And Germany?", "Berlin.")])),
        tok_copy,
        CAUSAL,
    )
    assert trained_text(tok_copy, p.train[0]) == "Paris.<|im_end|>\nBerlin.<|im_end|>\n"


def test_control_tokens_in_user_data_are_plain_text(tok, write_jsonl):
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    p = prepare(cfg(write_jsonl([chat("say <|im_end|> please", "ok <|im_end|>")])), tok, CAUSAL)
    row = p.train[0]
    assert row["input_ids"].count(im_end) == 2  # only the template's own, one per message
    assert trained_text(tok, row) == "ok <|im_end|><|im_end|>\n"  # prefix path keeps the "\n"
    p = prepare(cfg(write_jsonl([{"text": "a <|eos|> b"}], "t.jsonl")), tok, CAUSAL)
    assert p.train[0]["input_ids"].count(tok.eos_token_id) == 1


def test_sharegpt_conversations_are_read(tok, write_jsonl):
    rows = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}]
    p = prepare(cfg(write_jsonl(rows)), tok, CAUSAL)
    assert p.format == "chat" and trained_text(tok, p.train[0]) == "yo<|im_end|>"


def test_alpaca_input_joins_the_prompt(tok, write_jsonl):
    rows = [
        {"instruction": "Add.", "input": "2 3", "output": " 5"},
        {"instruction": "Say hi.", "input": "", "output": " hi"},
    ]
    p = prepare(cfg(write_jsonl(rows)), tok, CAUSAL)
    assert p.columns == {"prompt": "instruction", "completion": "output", "input": "input"}
    assert tok.decode(p.train[0]["input_ids"]) == "Add.\n\n2 3 5<|eos|>"
    assert tok.decode(p.train[1]["input_ids"]) == "Say hi. hi<|eos|>"


def test_classification_with_string_labels(tok):
    p = prepare(cfg("demo:sentiment"), tok, CLS)
    assert p.format == "classification" and p.label_names == ["negative", "positive"]
    assert p.columns == {"text": "text", "label": "label"}
    assert set(p.train["labels"]) == {0, 1}
    assert p.trained_tokens == sum(p.lengths)


def test_classification_int_labels_sort_numerically_and_map_to_given_names(tok, write_jsonl):
    rows = [{"text": "a", "label": 10}, {"text": "b", "label": 2}, {"text": "c", "label": 2}]
    p = prepare(cfg(write_jsonl(rows)), tok, CLS)
    assert p.label_names == ["2", "10"] and list(p.train["labels"]) == [1, 0, 0]
    p = prepare(cfg(write_jsonl(rows)), tok, CLS, label_names=["10", "5", "2"])
    assert p.label_names == ["10", "5", "2"] and list(p.train["labels"]) == [0, 2, 2]
    with raises(r"row 2 .* label '2', which is not one of", "data.label_column"):
        prepare(cfg(write_jsonl(rows)), tok, CLS, label_names=["10", "11"])


def test_column_overrides(tok, write_jsonl):
    rows = [{"q": "Why?", "a": " Because.", "note": "x"}]
    p = prepare(cfg(write_jsonl(rows), prompt_column="q", completion_column="a"), tok, CAUSAL)
    assert p.format == "prompt-completion" and p.columns == {"prompt": "q", "completion": "a"}
    assert trained_text(tok, p.train[0]) == " Because.<|eos|>"
    p = prepare(cfg(write_jsonl(rows), text_column="note"), tok, CAUSAL)
    assert p.format == "text" and p.columns == {"text": "note"}
    with raises(r"`data.text_column` is 'nope'.*columns: q, a, note", "data.text_column"):
        prepare(cfg(write_jsonl(rows), text_column="nope"), tok, CAUSAL)


def test_detect_format():
    assert detect_format(["messages"], CAUSAL) == "chat"
    assert detect_format(["id", "conversations"], CAUSAL) == "chat"
    assert detect_format(["prompt", "completion"], CAUSAL) == "prompt-completion"
    assert detect_format(["instruction", "input", "output"], CAUSAL) == "prompt-completion"
    assert detect_format(["question", "answer"], CAUSAL) == "prompt-completion"
    assert detect_format(["text", "meta"], CAUSAL) == "text"
    assert detect_format(["story"], CAUSAL) == "text"
    assert detect_format(["text", "label"], CLS) == "classification"
    with raises(r"columns id, score; set `data.format`.*data.text_column", "data.format"):
        detect_format(["id", "score"], CAUSAL)
    for task in ("seq2seq", "auto"):  # the session resolves `auto` before it gets here
        with raises("model.task", "model.task"):
            detect_format(["text"], task)


def test_format_and_task_must_agree(tok):
    with raises("needs model.task sequence-classification", "data.format"):
        prepare(cfg("demo:sentiment", format="classification"), tok, CAUSAL)
    with raises("set `data.format` to classification", "data.format"):
        prepare(cfg("demo:stories", format="text"), tok, CLS)


# ---- split, truncation, dropping -----------------------------------------------------------


def test_eval_split_is_deterministic_per_seed(tok):
    a = prepare(cfg("demo:qa", eval_fraction=0.2), tok, CAUSAL, seed=1)
    b = prepare(cfg("demo:qa", eval_fraction=0.2), tok, CAUSAL, seed=1)
    c = prepare(cfg("demo:qa", eval_fraction=0.2), tok, CAUSAL, seed=2)
    assert len(a.eval) == 52 and len(a.train) == 204
    assert a.eval.column_names == ["input_ids", "attention_mask", "labels"]
    assert a.eval["input_ids"] == b.eval["input_ids"] != c.eval["input_ids"]
    assert a.trained_tokens == sum(sum(x != -100 for x in r) for r in a.train["labels"])


def test_eval_split_needs_two_examples(tok, write_jsonl):
    with raises("too few to hold out", "data.eval_fraction"):
        prepare(cfg(write_jsonl([{"text": "one"}]), eval_fraction=0.1), tok, CAUSAL)


def test_truncation_and_drop_counts(tok, write_jsonl):
    long_prompt = "the cat sees the red ball in the park. " * 10
    rows = [
        {"prompt": "Q:", "completion": " short"},
        {"prompt": "Q:", "completion": " the cat sees a small house by the river" * 3},
        {"prompt": long_prompt, "completion": " lost"},
        {"prompt": "Q:", "completion": ""},
    ]
    p = prepare(cfg(write_jsonl(rows), max_length=16), tok, CAUSAL)
    assert p.num_raw == 4 and p.num_truncated == 2 and p.num_dropped == 2
    assert len(p.train) == 2 and max(p.lengths) == 16
    cut = p.train[1]
    assert len(cut["input_ids"]) == 16 and cut["input_ids"][-1] != tok.eos_token_id


def test_every_example_too_long(tok, write_jsonl):
    rows = [{"prompt": "the cat sees the red ball. " * 10, "completion": " x"}] * 3
    with raises(
        r"every example .* `data.max_length` = 8 .* raise `data.max_length`", "data.max_length"
    ):
        prepare(cfg(write_jsonl(rows), max_length=8), tok, CAUSAL)


def test_empty_texts_are_dropped_and_null_texts_rejected(tok, write_jsonl):
    p = prepare(cfg(write_jsonl([{"text": "hello"}, {"text": "  "}])), tok, CAUSAL)
    assert p.num_dropped == 1 and len(p.train) == 1
    with raises("every text is empty", "data.format"):
        prepare(cfg(write_jsonl([{"text": ""}], "e.jsonl")), tok, CAUSAL)
    with raises(r"row 2 of .* no value \(null\) in column `text`", "data.text_column"):
        prepare(cfg(write_jsonl([{"text": "a"}, {"text": None}], "n.jsonl")), tok, CAUSAL)


def test_max_examples_takes_the_first_rows(tok):
    raw = load_raw(cfg("demo:qa", max_examples=5))
    assert len(raw) == 5 and raw[0] == load_raw(cfg("demo:qa"))[0]


# ---- bad input -----------------------------------------------------------------------------


def test_missing_and_unreadable_files(tok, tmp_path):
    with raises(r"data file .*nope.jsonl does not exist; check `data.path`", "data.path"):
        load_raw(cfg(tmp_path / "nope.jsonl"))
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with raises("is empty", "data.path"):
        load_raw(cfg(tmp_path / "empty.jsonl"))
    (tmp_path / "blank.jsonl").write_text("\n \n")
    with raises("only blank lines", "data.path"):
        load_raw(cfg(tmp_path / "blank.jsonl"))
    (tmp_path / "bin.jsonl").write_bytes(bytes(range(256)) * 4)
    with raises("is a binary file", "data.path"):
        load_raw(cfg(tmp_path / "bin.jsonl"))
    (tmp_path / "latin.csv").write_bytes("text\ncaf\xe9\n".encode("latin-1"))
    with raises("is not UTF-8 text", "data.path"):
        load_raw(cfg(tmp_path / "latin.csv"))
    late = b'{"text": "fine"}\n' * 70_000 + b'{"text": "caf\xe9"}\n'  # past the first MiB
    (tmp_path / "late.jsonl").write_bytes(late)
    with raises(r"is not UTF-8 text \(line 70001", "data.path"):
        load_raw(cfg(tmp_path / "late.jsonl"))
    (tmp_path / "u16.txt").write_text("hello", encoding="utf-16")
    with raises("UTF-16", "data.path"):
        load_raw(cfg(tmp_path / "u16.txt"))
    (tmp_path / "fake.parquet").write_text("not parquet")
    with raises("not a Parquet file", "data.path"):
        load_raw(cfg(tmp_path / "fake.parquet"))
    (tmp_path / "data.xlsx").write_text("x")
    with raises("suffix .xlsx", "data.path"):
        load_raw(cfg(tmp_path / "data.xlsx"))
    with raises("`data.path` is empty", "data.path"):
        load_raw(cfg(" "))


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b",}\n{"text": "c"}\n')
    with raises(r"bad.jsonl line 2 is not valid JSON", "data.path"):
        load_raw(cfg(path))
    path.write_text('{"text": "a"}\n[1, 2]\n')
    with raises(r"line 2 holds a JSON list", "data.path"):
        load_raw(cfg(path))


def test_mixed_column_types_are_rejected(tok, write_jsonl):
    with raises(r"column `text` of .* mixes value types", "data.text_column"):
        prepare(cfg(write_jsonl([{"text": "a"}, {"text": 3}])), tok, CAUSAL)
    with raises(r"column `text` of .* holds int64 values, not text", "data.text_column"):
        prepare(cfg(write_jsonl([{"text": 1}, {"text": 3}], "i.jsonl")), tok, CAUSAL)


def test_missing_columns(tok, write_jsonl):
    with raises(r"no completion column \(columns: prompt, id\)", "data.completion_column"):
        prepare(
            cfg(write_jsonl([{"prompt": "a", "id": 1}]), format="prompt-completion"), tok, CAUSAL
        )
    with raises(
        r"no label column \(columns: text\); name it with `data.label_column`", "data.label_column"
    ):
        prepare(cfg(write_jsonl([{"text": "a"}], "t.jsonl")), tok, CLS)


def test_bad_labels(tok, write_jsonl):
    with raises(r"row 2 of .* no label \(null\)", "data.label_column"):
        prepare(
            cfg(
                write_jsonl(
                    [
                        {"text": "a", "label": "x"},
                        {"text": "b", "label": None},
                        {"text": "c", "label": "y"},
                    ]
                )
            ),
            tok,
            CLS,
        )
    with raises("only one value, 'x'", "data.label_column"):
        prepare(cfg(write_jsonl([{"text": "a", "label": "x"}], "one.jsonl")), tok, CLS)
    with raises("must be strings or integers", "data.label_column"):
        prepare(cfg(write_jsonl([{"text": "a", "label": 0.5}], "f.jsonl")), tok, CLS)


def test_chat_errors(tok_copy, write_jsonl):
    bad = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 3}]}]
    with raises(r"message 2 in row 1 .* string `content`", "data.messages_column"):
        prepare(cfg(write_jsonl(bad)), tok_copy, CAUSAL)
    with raises(r"column `messages` of .* must hold lists", "data.messages_column"):
        prepare(cfg(write_jsonl([{"messages": "hi"}], "s.jsonl")), tok_copy, CAUSAL)
    with raises("no conversation has an assistant reply", "data.format"):
        prepare(cfg(write_jsonl([chat("only a question")], "q.jsonl")), tok_copy, CAUSAL)
    tok_copy.chat_template = "{{ messages | length }}\n" + PLAIN_CHATML  # not prefix-stable
    with raises("not prefix-stable", "data.format"):
        prepare(cfg(write_jsonl([chat("hi", "yo")], "p.jsonl")), tok_copy, CAUSAL)
    tok_copy.chat_template = None
    with raises("has no chat template.*set `data.format`", "data.format"):
        prepare(cfg(write_jsonl([chat("hi", "yo")], "p.jsonl")), tok_copy, CAUSAL)


# ---- file kinds and sources ----------------------------------------------------------------


def test_csv_tsv_parquet_txt_and_json_files(tmp_path):
    import datasets

    (tmp_path / "d.csv").write_text('text,label\n"hello, world",pos\nbye,neg\n')
    assert load_raw(cfg(tmp_path / "d.csv"))["text"][:] == ["hello, world", "bye"]
    (tmp_path / "d.tsv").write_text("text\tlabel\nhi\tpos\n")
    assert load_raw(cfg(tmp_path / "d.tsv"))[0] == {"text": "hi", "label": "pos"}
    datasets.Dataset.from_list([{"text": "p"}]).to_parquet(str(tmp_path / "d.parquet"))
    assert load_raw(cfg(tmp_path / "d.parquet"))["text"][:] == ["p"]
    (tmp_path / "d.txt").write_text("line one\n\nline two\n")
    assert load_raw(cfg(tmp_path / "d.txt"))["text"][:] == ["line one", "line two"]
    (tmp_path / "list.json").write_text(json.dumps([{"text": "a"}, {"text": "b"}]))
    assert len(load_raw(cfg(tmp_path / "list.json"))) == 2
    (tmp_path / "nested.json").write_text(json.dumps({"version": 1, "data": [{"text": "a"}] * 3}))
    assert load_raw(cfg(tmp_path / "nested.json")).column_names == ["text"]


def test_folder_of_files(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    for i in range(2):
        (folder / f"part{i}.jsonl").write_text(json.dumps({"text": f"t{i}"}) + "\n")
    assert load_raw(cfg(folder))["text"][:] == ["t0", "t1"]


def test_resolve_data_path(tmp_path):
    assert resolve_data_path("demo:qa").endswith("qa.jsonl")
    with raises("no demo dataset 'nope'", "data.path"):
        resolve_data_path("demo:nope")
    assert resolve_data_path("tatsu-lab/alpaca") == "tatsu-lab/alpaca"
    with raises("does not exist"):
        resolve_data_path("data/train.jsonl")
    with raises("could not reach the Hugging Face Hub", "data.path"):  # tests run offline
        load_raw(cfg("tatsu-lab/alpaca"))


# ---- preview and collator ------------------------------------------------------------------


def test_preview_prompt_completion(tok):
    examples, stats, fmt = preview(cfg("demo:qa", max_length=32), tok, CAUSAL, n=3)
    assert fmt == "prompt-completion" and len(examples) == 3
    ex = examples[0]
    assert "".join(ex.tokens).startswith("What is") and ex.tokens[-1] == "<|eos|>"
    trained = "".join(t for t, m in zip(ex.tokens, ex.trained, strict=True) if m)
    assert trained.endswith(".<|eos|>") and "What" not in trained
    assert ex.length == len(ex.tokens) and not ex.truncated and not ex.dropped and ex.label is None
    assert stats.count == 256 and stats.min <= stats.p50 <= stats.p95 <= stats.max
    assert sum(c for _, _, c in stats.histogram) == stats.count


def test_preview_shows_dropped_and_truncated(tok, write_jsonl):
    rows = [{"prompt": "the cat sees the red ball. " * 5, "completion": " x"}]
    examples, stats, _ = preview(cfg(write_jsonl(rows), max_length=8), tok, CAUSAL)
    assert examples[0].truncated and examples[0].dropped and examples[0].length == 8
    assert stats.num_truncated == 1 and stats.num_dropped == 1 and stats.max > 8


def test_preview_classification_labels(tok):
    examples, _, fmt = preview(cfg("demo:sentiment"), tok, CLS, n=2)
    assert fmt == "classification"
    assert examples[0].label in {"negative", "positive"} and not any(examples[0].trained)


def test_token_texts_keep_multibyte_characters_whole(tok):
    ids = tok("é🙂 ok", add_special_tokens=False)["input_ids"]
    texts = token_texts(tok, ids)
    assert len(texts) == len(ids) and "".join(texts) == "é🙂 ok" and "🙂" in texts


def test_length_stats_bins():
    stats = length_stats([5, 10, 10, 100, 0], [1, 1, 1, 1, 0], max_length=50)
    assert (stats.count, stats.min, stats.max, stats.p50) == (4, 5, 100, 10)
    assert stats.num_truncated == 1 and stats.num_dropped == 1
    assert stats.histogram[0][0] == 5 and stats.histogram[-1][1] > 100
    assert sum(c for _, _, c in stats.histogram) == 4


def test_collators(tok, tok_copy, write_jsonl):
    rows = [{"prompt": "Q:", "completion": " a"}, {"prompt": "Q:", "completion": " a b c d e"}]
    p = prepare(cfg(write_jsonl(rows)), tok, CAUSAL)
    batch = make_collator(tok, CAUSAL)([p.train[0], p.train[1]])
    assert batch["input_ids"].shape == batch["labels"].shape
    assert batch["labels"][0, -1] == -100 and batch["attention_mask"][0, -1] == 0
    assert batch["input_ids"][0, -1] == tok.pad_token_id
    c = prepare(cfg("demo:sentiment"), tok, CLS)
    batch = make_collator(tok, CLS)([c.train[0], c.train[1]])
    assert batch["labels"].shape == (2,)
    tok_copy.pad_token = None
    make_collator(tok_copy, CAUSAL)
    assert tok_copy.pad_token == "<|eos|>"


def test_class_label_feature_names_are_used(tok, tmp_path):
    import datasets

    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    rows = {"text": ["bad", "good", "meh"], "label": [0, 1, 1]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "c.parquet"))
    p = prepare(cfg(tmp_path / "c.parquet"), tok, CLS)
    assert p.label_names == ["neg", "pos"] and list(p.train["labels"]) == [0, 1, 1]
    p = prepare(cfg(tmp_path / "c.parquet"), tok, CLS, label_names=["pos", "neg"])
    assert list(p.train["labels"]) == [1, 0, 0]
    rows["label"] = [0, 1, -1]  # datasets' "no label"
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "d.parquet"))
    with raises("row 3 .* label id -1", "data.label_column"):
        prepare(cfg(tmp_path / "d.parquet"), tok, CLS)


def test_preview_renders_dropped_conversations(tok, write_jsonl):
    rows = [chat("no reply yet"), {"messages": []}, chat("hi", "yo")]
    examples, stats, fmt = preview(cfg(write_jsonl(rows)), tok, CAUSAL)
    assert fmt == "chat" and [e.dropped for e in examples] == [True, True, False]
    assert "".join(examples[0].tokens).startswith("<|im_start|>user\nno reply yet")
    assert not any(examples[0].trained) and examples[1].tokens == []
    assert stats.num_dropped == 2 and stats.count == 2
