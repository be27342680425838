"""Try: the base side is the base model, the adapted side is PEFT's, adapters swap without a
reload, classifiers give a plain model's probabilities; `graftlab generate` says the same."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
from graftlab.core import cli
from graftlab.core.adapter import playground as playground_mod
from graftlab.core.adapter.playground import DecodeOptions, Playground
from graftlab.core.adapter.targets import read_target
from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from try_models import PROMPT, make_adapter, plain_ids

GREEDY = DecodeOptions(max_new_tokens=12)


@pytest.fixture(scope="module")
def llama_adapters(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("try-adapters")
    base = tiny_models["llama"]
    return base, make_adapter(base, root / "one", 1), make_adapter(base, root / "two", 2)


def test_base_adapted_and_switching_match_plain_models_without_reloading(llama_adapters,
                                                                          monkeypatch):
    base, one, two = llama_adapters
    loads = []
    real = playground_mod.load_base_model
    monkeypatch.setattr(playground_mod, "load_base_model",
                        lambda *a, **k: loads.append(a) or real(*a, **k))
    pg = Playground(str(base))
    want_base, want_base_text = plain_ids(base)
    assert pg.generate(PROMPT, "base", options=GREEDY) == want_base_text
    assert pg.last_ids == want_base
    assert pg.attach(one) == "one" and pg.attach(two) == "two"
    want = {"one": plain_ids(base, one)[0], "two": plain_ids(base, two)[0]}
    assert want["one"] != want_base and want["two"] != want["one"]  # the adapters matter
    for side in ("one", "base", "two", "one", "base", "two"):
        pg.generate(PROMPT, side, options=GREEDY)
        assert pg.last_ids == (want_base if side == "base" else want[side]), side
    assert len(loads) == 1  # switching never reloads the base
    assert pg.attach(one) == "one"  # the same folder again: the same adapter
    assert sorted(pg.adapters) == ["one", "two"]


def test_streamed_text_joins_to_the_answer_and_stop_ends_early(llama_adapters):
    base, one, _two = llama_adapters
    pg = Playground(str(base))
    pg.attach(one)
    pieces: list[str] = []
    text = pg.generate(PROMPT, "one", options=GREEDY, on_text=pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == text
    calls = []
    pg.generate(PROMPT, "one", options=DecodeOptions(max_new_tokens=200),
                should_stop=lambda: calls.append(1) or len(calls) >= 3)
    assert len(pg.last_ids) == 3


def test_sampling_with_a_seed_repeats_and_options_are_checked(llama_adapters):
    base, _one, _two = llama_adapters
    pg = Playground(str(base))
    opts = DecodeOptions(max_new_tokens=10, temperature=1.5, top_p=0.9, seed=7)
    first = pg.generate(PROMPT, options=opts)
    assert pg.generate(PROMPT, options=opts) == first
    with pytest.raises(UserError, match="top-p"):
        pg.generate(PROMPT, options=DecodeOptions(top_p=0))


def test_chat_uses_the_template_and_refuses_models_without_one(llama_adapters, tmp_path):
    base, _one, _two = llama_adapters
    pg = Playground(str(base))
    ids = pg.prompt_ids("hello", system="be brief", chat=True)["input_ids"][0].tolist()
    want = pg.tokenizer.apply_chat_template(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ids == list(want)
    assert pg.tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    plain = tmp_path / "no-template"
    shutil.copytree(base, plain)
    (plain / "chat_template.jinja").unlink()
    bare = Playground(str(plain))
    assert not bare.has_chat_template
    with pytest.raises(UserError, match="no chat template"):
        bare.generate("hello", chat=True)
    with pytest.raises(UserError, match="prompt is empty"):
        bare.generate("   ")


def test_adapter_for_another_base_is_one_sentence(llama_adapters, tiny_models, tmp_path):
    base, _one, _two = llama_adapters
    pg = Playground(str(base))
    gpt2 = make_adapter(tiny_models["gpt2"], tmp_path / "gpt2", 3, target_modules=["c_attn"])
    with pytest.raises(UserError, match="another base|different model") as err:
        pg.attach(gpt2)
    assert "\n" not in err.value.message
    from graftlab.core.model.demo import save_tiny_model

    wide = save_tiny_model("llama", tmp_path / "wide", size={"hidden": 96, "heads": 4})
    wide_adapter = make_adapter(wide, tmp_path / "wide-adapter", 4)
    cfg = json.loads((wide_adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "somewhere/else-moved"  # only the shapes can tell
    (wide_adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="has size 64 in"):
        pg.attach(wide_adapter)
    assert pg.adapters == {}  # nothing half-attached


def test_classifier_probabilities_equal_a_plain_model(tiny_models, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = tiny_models["bert"]
    adapter = make_adapter(base, tmp_path / "cls", 5, task="sequence-classification")
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["id2label"] = {"0": "sad", "1": "glad"}  # label names stored with the adapter
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    target = read_target(adapter)
    assert target.task == "sequence-classification" and target.label_names == ("sad", "glad")
    pg = Playground(str(base), target.task)
    name = pg.attach(adapter)
    text = "the cat had a lovely day"
    tok = AutoTokenizer.from_pretrained(str(base))
    plain = AutoModelForSequenceClassification.from_pretrained(str(base)).eval()
    inputs = tok(text, return_tensors="pt", truncation=True)
    with torch.no_grad():
        want_base = torch.softmax(plain(**inputs).logits[0], -1).tolist()
        peft_model = PeftModel.from_pretrained(plain, str(adapter)).eval()
        want_adapted = torch.softmax(peft_model(**inputs).logits[0], -1).tolist()
    got_base, got_adapted = pg.classify(text, "base"), pg.classify(text, name)
    assert [n for n, _ in got_base] == ["negative", "positive"]
    assert [n for n, _ in got_adapted] == ["sad", "glad"]
    assert [p for _, p in got_base] == pytest.approx(want_base, abs=1e-6)
    assert [p for _, p in got_adapted] == pytest.approx(want_adapted, abs=1e-6)
    assert abs(got_base[0][1] - got_adapted[0][1]) > 1e-4  # the adapter matters
    with pytest.raises(UserError, match="classifier"):
        pg.generate("hello")


def run_folder(tmp_path, base, adapter):
    run = tmp_path / "run"
    run.mkdir()
    cfg = RunConfig()
    cfg.model.source = str(base)
    cfg.model.task = "causal-lm"
    cfg.training.output_dir = str(run)
    cfg.save(run / "run.yaml")
    shutil.copytree(adapter, run / "adapter")
    return run


def test_generate_command_json(llama_adapters, tmp_path, capsys):
    base, one, two = llama_adapters
    run = run_folder(tmp_path, base, one)
    assert read_target(run).base == str(base)
    assert cli.main(["generate", str(run), "--prompt", PROMPT, "--max-new-tokens", "12",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"prompt": PROMPT, "base": plain_ids(base)[1],
                   "adapted": plain_ids(base, one)[1]}
    assert cli.main(["generate", str(base), "--adapter", str(one), str(two), "--prompt",
                     PROMPT, "--max-new-tokens", "12", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"prompt": PROMPT, "base": plain_ids(base)[1],
                   "one": plain_ids(base, one)[1], "two": plain_ids(base, two)[1]}
    assert cli.main(["generate", str(one), "--prompt", "hi", "--chat", "--system", "be brief",
                     "--max-new-tokens", "3", "--temperature", "0.7", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("== base ==\n") and "== one ==\n" in printed


def test_generate_command_bad_input_exits_2(llama_adapters, tiny_models, tmp_path, capsys):
    base, one, _two = llama_adapters
    assert cli.main(["generate", str(one), "--prompt", "  "]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    gpt2 = make_adapter(tiny_models["gpt2"], tmp_path / "gpt2", 3, target_modules=["c_attn"])
    assert cli.main(["generate", str(base), "--adapter", str(gpt2), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.slow
def test_try_process_matches_in_process_and_stops(llama_adapters):
    from graftlab.core.process.try_child import TryProcess

    base, one, two = llama_adapters
    proc = TryProcess()
    try:
        info = proc.call("load", base=str(base))
        assert info["task"] == "causal-lm" and info["chat_template"]
        assert proc.call("attach", dir=str(one))["name"] == "one"
        info = proc.call("attach", dir=str(two))
        assert info["base_loads"] == 1 and sorted(info["adapters"]) == ["one", "two"]
        pieces: list[tuple[str, str]] = []
        result = proc.call("generate", on_piece=lambda s, t: pieces.append((s, t)),
                           prompt=PROMPT, sides=["base", "two", "one"],
                           options={"max_new_tokens": 12})
        assert result["texts"] == {"base": plain_ids(base)[1], "one": plain_ids(base, one)[1],
                                   "two": plain_ids(base, two)[1]}
        assert "".join(t for s, t in pieces if s == "two") == result["texts"]["two"]
        with pytest.raises(UserError, match="prompt is empty"):
            proc.call("generate", prompt="", sides=["base"])
        threading.Timer(0.5, proc.stop).start()
        result = proc.call("generate", prompt=PROMPT, sides=["base", "one"],
                           options={"max_new_tokens": 5000})
        assert result["stopped"] and result["tokens"]["base"] < 5000
        assert proc.call("info")["base_loads"] == 1
    finally:
        proc.close()
    assert not proc.is_alive()


def test_out_of_memory_is_one_sentence():
    import torch
    from graftlab.core.adapter.playground import memory_errors

    for exc in (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                             "allocate memory: you tried to allocate 8589934592 bytes")):
        with pytest.raises(UserError, match="out of memory while generating") as err, \
                memory_errors("generating"):
            raise exc
        assert "\n" not in err.value.message
    with pytest.raises(RuntimeError, match="other"), memory_errors("generating"):
        raise RuntimeError("other")
