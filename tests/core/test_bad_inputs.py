"""Bad-input corpus: every case exits 2 with one sentence naming the problem, no traceback,
and nothing written or damaged. The GUI shows the same sentence (tests/app)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from graftlab.core.cli import main
from graftlab.core.model.demo import save_tiny_model

GOOD_TARGETS = ["model.layers.*.self_attn.q_proj"]


@pytest.fixture(scope="module")
def corpus(tiny_models, tmp_path_factory):
    """Broken models, data files and an adapter, built once."""
    root = tmp_path_factory.mktemp("corpus")
    llama = Path(tiny_models["llama"])

    def broken_model(name, mutate):
        folder = root / name
        shutil.copytree(llama, folder)
        mutate(folder)
        return folder

    def truncate(folder):
        w = folder / "model.safetensors"
        w.write_bytes(w.read_bytes()[: 4000])

    def corrupt(folder):
        (folder / "model.safetensors").write_bytes(b"\x00\xff" * 5000)

    def pickle_only(folder):
        (folder / "model.safetensors").unlink()
        (folder / "pytorch_model.bin").write_bytes(b"not really")

    def remote_code(folder):
        cfg = json.loads((folder / "config.json").read_text())
        cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomModel"}
        (folder / "config.json").write_text(json.dumps(cfg))

    def no_model_type(folder):
        cfg = json.loads((folder / "config.json").read_text())
        del cfg["model_type"]
        (folder / "config.json").write_text(json.dumps(cfg))

    def no_template(folder):
        (folder / "chat_template.jinja").unlink(missing_ok=True)
        tc = json.loads((folder / "tokenizer_config.json").read_text())
        tc.pop("chat_template", None)
        (folder / "tokenizer_config.json").write_text(json.dumps(tc))

    models = {
        "truncated": broken_model("truncated", truncate),
        "corrupt": broken_model("corrupt", corrupt),
        "pickle": broken_model("pickle", pickle_only),
        "remote": broken_model("remote", remote_code),
        "no_model_type": broken_model("no_model_type", no_model_type),
        "no_template": broken_model("no_template", no_template),
        "wider": save_tiny_model("llama", root / "wider", size={"hidden": 128}),
        "shallower": save_tiny_model("llama", root / "shallower", size={"layers": 1}),
    }
    data = root / "data"
    data.mkdir()
    (data / "empty.jsonl").write_text("")
    (data / "binary.jsonl").write_bytes(bytes(range(256)) * 20)
    (data / "wrong_cols.jsonl").write_text('{"foo": "a", "bar": "b"}\n' * 4)
    (data / "mixed.jsonl").write_text('{"text": "a"}\n{"text": 3}\n{"text": ["x"]}\n')
    long_text = " ".join(["word"] * 400)
    (data / "long.jsonl").write_text(json.dumps({"prompt": long_text, "completion": "x"})
                                     + "\n")
    (data / "chat.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}) + "\n")
    (data / "nolabels.jsonl").write_text('{"text": "a fine day"}\n' * 4)
    # A real adapter of the tiny llama, written by plain PEFT.
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(llama),
                                LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(root / "adapter")
    return {"models": models, "data": data, "adapter": root / "adapter", "llama": llama,
            "gpt2": Path(tiny_models["gpt2"]), "bert": Path(tiny_models["bert"])}


def run_yaml(tmp_path, corpus, model=None, adapter=None, data=None, training=None):
    cfg = {
        "model": {"source": str(corpus["llama"])} | (model or {}),
        "adapter": {"targets": GOOD_TARGETS} | (adapter or {}),
        "data": {"path": "demo:stories", "max_length": 32} | (data or {}),
        "training": {"max_steps": 2, "output_dir": str(tmp_path / "out")} | (training or {}),
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ["train", str(path)]


def D(name):  # noqa: N802 - a data file of the corpus
    return lambda c: str(c["data"] / name)


CASES = {
    # model
    "model folder missing": (lambda t, c: run_yaml(t, c, model={"source": str(t / "nope")}),
                             "does not exist"),
    "config without model_type": (lambda t, c: run_yaml(
        t, c, model={"source": str(c["models"]["no_model_type"])}), "model_type"),
    "truncated safetensors": (lambda t, c: run_yaml(
        t, c, model={"source": str(c["models"]["truncated"])}), "could not load the weights"),
    "corrupt safetensors": (lambda t, c: run_yaml(
        t, c, model={"source": str(c["models"]["corrupt"])}), "could not load the weights"),
    "only pickle weights": (lambda t, c: run_yaml(
        t, c, model={"source": str(c["models"]["pickle"])}), "allow_pickle_weights"),
    "needs remote code": (lambda t, c: run_yaml(
        t, c, model={"source": str(c["models"]["remote"])}), "trust_remote_code"),
    "a file instead of a folder": (lambda t, c: run_yaml(
        t, c, model={"source": str(c["llama"] / "model.safetensors")}), "is a file"),
    "bare config.json cannot train": (lambda t, c: run_yaml(
        t, c, model={"source": str(c["llama"] / "config.json")}), "bare config.json"),
    "unknown demo model": (lambda t, c: run_yaml(t, c, model={"source": "demo:nope"}),
                           "no demo model"),
    # data
    "data missing": (lambda t, c: run_yaml(t, c, data={"path": str(t / "none.jsonl")}),
                     "does not exist"),
    "data empty": (lambda t, c: run_yaml(t, c, data={"path": D("empty.jsonl")(c)}), "empty"),
    "data binary": (lambda t, c: run_yaml(t, c, data={"path": D("binary.jsonl")(c)}),
                    "binary"),
    "data wrong columns": (lambda t, c: run_yaml(t, c, data={"path": D("wrong_cols.jsonl")(c)}),
                           "foo"),
    "data missing named column": (lambda t, c: run_yaml(
        t, c, data={"path": D("wrong_cols.jsonl")(c), "text_column": "body"}), "body"),
    "data mixed column types": (lambda t, c: run_yaml(t, c, data={"path": D("mixed.jsonl")(c)}),
                                "text"),
    "every example too long": (lambda t, c: run_yaml(
        t, c, data={"path": D("long.jsonl")(c), "max_length": 16}), "max_length"),
    "chat without template": (lambda t, c: run_yaml(
        t, c, model={"source": str(c["models"]["no_template"])},
        data={"path": D("chat.jsonl")(c)}), "template"),
    "classification without labels": (lambda t, c: run_yaml(
        t, c, model={"source": str(c["bert"])}, data={"path": D("nolabels.jsonl")(c)},
        adapter={"targets": ["bert.encoder.layer.*.attention.self.query"]}), "label"),
    "unknown demo data": (lambda t, c: run_yaml(t, c, data={"path": "demo:nope"}),
                          "no demo dataset"),
    # adapter
    "no targets": (lambda t, c: run_yaml(t, c, adapter={"targets": []}), "no modules"),
    "glob matches nothing": (lambda t, c: run_yaml(t, c, adapter={"targets": ["*.qkv"]}),
                             "matches no module"),
    "module LoRA cannot wrap": (lambda t, c: run_yaml(
        t, c, adapter={"targets": ["model.norm"]}), "cannot carry a LoRA adapter"),
    "rank 0": (lambda t, c: run_yaml(t, c, adapter={"rank": 0}), "adapter.rank"),
    "rank negative": (lambda t, c: run_yaml(t, c, adapter={"rank": -4}), "adapter.rank"),
    "rank absurd": (lambda t, c: run_yaml(t, c, adapter={"rank": 10**6}), "adapter.rank"),
    "alpha zero": (lambda t, c: run_yaml(t, c, adapter={"alpha": 0}), "adapter.alpha"),
    "dropout one": (lambda t, c: run_yaml(t, c, adapter={"dropout": 1.0}), "adapter.dropout"),
    "unknown variant": (lambda t, c: run_yaml(t, c, adapter={"variant": "lokr"}),
                        "adapter.variant"),
    # training
    "learning rate zero": (lambda t, c: run_yaml(t, c, training={"learning_rate": 0}),
                           "learning_rate"),
    "learning rate NaN": (lambda t, c: run_yaml(t, c, training={"learning_rate": float("nan")}),
                          "learning_rate"),
    "batch 0": (lambda t, c: run_yaml(t, c, training={"batch_size": 0}), "batch_size"),
    "max_steps 0": (lambda t, c: run_yaml(t, c, training={"max_steps": 0}), "max_steps"),
    "output unwritable": (lambda t, c: run_yaml(
        t, c, training={"output_dir": "/proc/graftlab-test/run"}), "output_dir"),
    "output is a file": (lambda t, c: (t / "afile").write_text("x") and run_yaml(
        t, c, training={"output_dir": str(t / "afile")}), "is a file"),
    # yaml
    "yaml syntax": (lambda t, c: (t / "run.yaml").write_text("model: [oops\n") and
                    ["train", str(t / "run.yaml")], "YAML"),
    "unknown key": (lambda t, c: (t / "run.yaml").write_text("modle: {}\n") and
                    ["train", str(t / "run.yaml")], "modle"),
    "run file missing": (lambda t, c: ["train", str(t / "missing.yaml")], "does not exist"),
    # adapters onto the wrong base
    "adapter onto wider base": (lambda t, c: ["merge", str(c["adapter"]), "--base",
                                              str(c["models"]["wider"]), "--output",
                                              str(t / "out")], "does not fit"),
    "adapter onto shallower base": (lambda t, c: ["merge", str(c["adapter"]), "--base",
                                                  str(c["models"]["shallower"]), "--output",
                                                  str(t / "out")], "does not fit"),
    "adapter onto another architecture": (lambda t, c: ["merge", str(c["adapter"]), "--base",
                                                        str(c["gpt2"]), "--output",
                                                        str(t / "out")], "does not fit"),
    "not an adapter folder": (lambda t, c: ["merge", str(c["llama"]), "--base",
                                            str(c["llama"]), "--output", str(t / "out")],
                              "not a PEFT adapter"),
    # output paths: nothing a user owns is ever replaced
    "merge into a folder of the user's files": (lambda t, c: merge_into(t, c, "mydocs", "user"),
                                                "did not write"),
    "merge onto a file": (lambda t, c: merge_into(t, c, "afile", "file"), "is a file"),
    "merge into a symlink": (lambda t, c: merge_into(t, c, "link", "symlink"),
                             "symbolic link"),
    "merge over an earlier export without --overwrite": (
        lambda t, c: merge_into(t, c, "export", "graftlab"), "--overwrite"),
    # compatibility rules before training, hub ids
    "train --strict with a DoRA adapter": (lambda t, c: run_yaml(
        t, c, adapter={"variant": "dora"}) + ["--strict"], "llama.cpp"),
    "hub id while offline": (lambda t, c: run_yaml(t, c, model={"source": "someorg/some-model"}),
                             "offline"),
}


def merge_into(tmp_path, corpus, name, kind):
    """A merge whose --output already holds something: files, a file, a link, an export."""
    out = tmp_path / name
    if kind == "file":
        out.write_text("my notes")
    elif kind == "symlink":
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "keep.txt").write_text("keep")
        out.symlink_to(tmp_path / "elsewhere")
    else:
        out.mkdir()
        (out / "thesis.tex").write_text("years of work")
        if kind == "graftlab":
            (out / "graftlab-output.json").write_text('{"app": "graftlab"}')
    return ["merge", str(corpus["adapter"]), "--base", str(corpus["llama"]), "--output",
            str(out)]


def contents(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink()
                                       else None) for p in root.rglob("*")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, corpus, tmp_path, capsys):
    make_argv, needle = CASES[case]
    argv = make_argv(tmp_path, corpus)
    before = contents(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if line.startswith("error: ")] or err
    assert code == 2, (case, err)
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert needle.lower() in err[0].lower(), err[0]
    assert "Traceback" not in err[0]
    assert not (tmp_path / "out").exists(), "nothing is written for bad input"
    assert contents(tmp_path) == before, "nothing already on disk changed"


def test_existing_run_is_never_damaged(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.yaml").write_text("earlier run\n")
    (out / "adapter").mkdir()
    (out / "adapter" / "adapter_model.safetensors").write_bytes(b"precious")
    code = main(run_yaml(tmp_path, corpus))
    assert code == 2 and "already holds a run" in capsys.readouterr().err
    assert (out / "run.yaml").read_text() == "earlier run\n"
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == b"precious"


@pytest.mark.slow
def test_full_disk_during_merge_keeps_the_earlier_export(corpus, tmp_path, capsys, monkeypatch):
    import errno

    from transformers import PreTrainedModel

    out = tmp_path / "merged"
    argv = ["merge", str(corpus["adapter"]), "--base", str(corpus["llama"]), "--output",
            str(out)]
    assert main(argv) == 0
    before = contents(tmp_path)

    def full_disk(self, folder, **kwargs):
        (Path(folder) / "model.safetensors").write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full_disk)
    assert main(argv + ["--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is full" in err[0] and "nothing at" in err[0], err
    assert contents(tmp_path) == before


@pytest.mark.slow
def test_train_prints_compatibility_findings_naming_the_runtime(corpus, tmp_path, capsys):
    argv = run_yaml(tmp_path, corpus, adapter={"variant": "dora"})
    assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    findings = [line for line in err if line.startswith("warning: ")]
    assert any(line.startswith("warning: llama.cpp: ") for line in findings), err
    assert any(line.startswith("warning: vLLM: ") for line in findings), err


def test_corpus_size():
    assert len(CASES) >= 45
