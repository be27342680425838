"""Task metrics and `graftlab eval`: scores equal a hand computation, base means adapters off,
class names travel with the adapter, bad input is one sentence."""

from __future__ import annotations

import json
import math
import warnings

import pytest
from graftlab.core.cli import main
from graftlab.core.train.scoring import classification_metrics


def test_classification_metrics_by_hand():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 1, 0, 1, 2, 2]
    m = classification_metrics(y_true, y_pred, 4)  # class 3 never occurs: not averaged
    assert m["accuracy"] == pytest.approx(4 / 6)
    # F1 per class: 0: tp2 fp0 fn1 -> 4/5; 1: tp1 fp1 fn1 -> 1/2; 2: tp1 fp1 fn0 -> 2/3
    assert m["f1_macro"] == pytest.approx((4 / 5 + 1 / 2 + 2 / 3) / 3)
    assert m["counts"] == [3, 2, 1, 0]
    assert m["confusion"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


def _quiet():
    warnings.simplefilter("ignore")


@pytest.fixture(scope="module")
def classifier(tiny_models, tmp_path_factory):
    """A BERT classifier adapter with class names bad/good, its data and its base folder."""
    import torch
    from graftlab.core.adapter.export import save_adapter
    from graftlab.core.model.loading import load_base_model
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("classifier")
    base_dir = str(tiny_models["bert"])
    with warnings.catch_warnings():
        _quiet()
        model, _tok, _task = load_base_model(base_dir, "sequence-classification",
                                             label_names=["bad", "good"])
        torch.manual_seed(3)
        pm = get_peft_model(model, LoraConfig(
            task_type="SEQ_CLS", target_modules=["query", "value"], init_lora_weights=False,
            modules_to_save=["classifier"]))
        with torch.no_grad():  # a head of its own, so adapted and base predictions differ
            head = pm.base_model.model.classifier.modules_to_save["default"]
            head.weight.normal_(0, 2.0)
        save_adapter(pm, root / "adapter", base_dir)
    words = ["great", "awful", "fine", "bad", "happy", "sad", "ok", "broken", "nice", "dull"]
    rows = [{"text": f"the {w} day number {i}", "label": "good" if i % 3 else "bad"}
            for i, w in enumerate(words * 2)]
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "adapter", data, base_dir


def _hand_predictions(model, ids_rows):
    import torch

    model.eval()
    preds = []
    with torch.no_grad():
        for ids in ids_rows:
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            preds.append(int(logits.argmax()))
    return preds


def _hand_scores(y_true, y_pred):
    classes = sorted(set(y_true) | set(y_pred))
    f1 = []
    for c in classes:
        tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == c and p == c)
        precision = tp / max(1, sum(1 for p in y_pred if p == c))
        recall = tp / max(1, sum(1 for t in y_true if t == c))
        f1.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    accuracy = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == p) / len(y_true)
    return accuracy, sum(f1) / len(f1)


def test_eval_accuracy_and_f1_equal_a_hand_computation(classifier, capsys):
    from graftlab.core.config import DataConfig
    from graftlab.core.data.dataset import prepare
    from graftlab.core.model.loading import load_tokenizer
    from graftlab.core.model.sources import resolve_source
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    adapter, data, base_dir = classifier
    assert main(["eval", str(adapter), "--data", str(data), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "sequence-classification" and out["n"] == 20
    assert out["labels"] == ["bad", "good"]  # names, not ids, from the adapter folder

    tok = load_tokenizer(resolve_source(base_dir))
    prepared = prepare(DataConfig(path=str(data)), tok, "sequence-classification",
                       label_names=["bad", "good"])
    ids = prepared.train["input_ids"]
    y_true = prepared.train["labels"]
    with warnings.catch_warnings():
        _quiet()
        plain = AutoModelForSequenceClassification.from_pretrained(base_dir)
        base_pred = _hand_predictions(plain, ids)
        adapted = PeftModel.from_pretrained(
            AutoModelForSequenceClassification.from_pretrained(base_dir), str(adapter))
        adapted_pred = _hand_predictions(adapted, ids)
    acc, f1 = _hand_scores(y_true, adapted_pred)
    assert out["accuracy"] == pytest.approx(acc) and out["f1_macro"] == pytest.approx(f1)
    assert out["counts"] == [y_true.count(0), y_true.count(1)]
    assert sum(map(sum, out["confusion"])) == 20
    assert out["confusion"][1][1] == sum(1 for t, p in zip(y_true, adapted_pred, strict=True)
                                         if t == p == 1)
    base_acc, base_f1 = _hand_scores(y_true, base_pred)  # base = the plain model, no adapter
    assert out["base"]["accuracy"] == pytest.approx(base_acc)
    assert out["base"]["f1_macro"] == pytest.approx(base_f1)
    assert adapted_pred != base_pred  # the check above would not tell the two apart otherwise


def test_id2label_round_trip(classifier):
    from graftlab.core.adapter.export import LABELS_FILE, load_peft_model, read_label_names

    adapter, _data, base_dir = classifier
    assert json.loads((adapter / LABELS_FILE).read_text()) == {"0": "bad", "1": "good"}
    assert read_label_names(adapter) == ["bad", "good"]
    with warnings.catch_warnings():
        _quiet()
        model = load_peft_model(base_dir, adapter, "sequence-classification")
    assert model.config.id2label == {0: "bad", 1: "good"}


@pytest.fixture(scope="module")
def lm_adapter(tiny_models, tmp_path_factory):
    import torch
    from graftlab.core.adapter.export import save_adapter
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("lm")
    base_dir = str(tiny_models["llama"])
    with warnings.catch_warnings():
        _quiet()
        torch.manual_seed(5)
        pm = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(
            task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj"],
            init_lora_weights=False))
        save_adapter(pm, root / "adapter", base_dir)
    rows = [{"prompt": f"What is {a} plus {a + 1}? Answer:", "completion": f" {2 * a + 1}."}
            for a in range(7)]
    data = root / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "adapter", data, base_dir


def _hand_loss(model, ids_rows, label_rows):
    """Mean next-token cross-entropy over every trained token, one example at a time."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in zip(ids_rows, label_rows, strict=True):
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
            for t in range(len(ids) - 1):
                if labels[t + 1] != -100:
                    total -= float(logp[t, labels[t + 1]])
                    count += 1
    return total / count, count


def test_causal_lm_loss_equals_a_hand_computation_over_trained_tokens(lm_adapter, capsys):
    from graftlab.core.config import DataConfig
    from graftlab.core.data.dataset import prepare
    from graftlab.core.model.loading import load_tokenizer
    from graftlab.core.model.sources import resolve_source
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter, data, base_dir = lm_adapter
    assert main(["eval", str(adapter), "--data", str(data), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "causal-lm" and out["n"] == 7
    tok = load_tokenizer(resolve_source(base_dir))
    prepared = prepare(DataConfig(path=str(data)), tok, "causal-lm")
    ids, labels = prepared.train["input_ids"], prepared.train["labels"]
    with warnings.catch_warnings():
        _quiet()
        base_loss, count = _hand_loss(AutoModelForCausalLM.from_pretrained(base_dir), ids,
                                      labels)
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir),
                                            str(adapter))
        loss, _ = _hand_loss(adapted, ids, labels)
    assert count < sum(map(len, ids))  # the prompts are not trained tokens
    assert out["loss"] == pytest.approx(loss, rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(out["loss"]))
    assert out["base"]["loss"] == pytest.approx(base_loss, rel=1e-5)
    assert out["base"]["perplexity"] == pytest.approx(math.exp(base_loss), rel=1e-5)
    assert abs(loss - base_loss) > 1e-3


@pytest.mark.parametrize("case", ["missing", "other-base", "no-label-column", "no-adapter",
                                  "max-examples"])
def test_eval_bad_input_is_one_sentence(case, classifier, lm_adapter, tiny_models, tmp_path,
                                        capsys):
    cls_adapter, cls_data, _ = classifier
    lm, lm_data, _ = lm_adapter
    text_only = tmp_path / "text.jsonl"
    text_only.write_text('{"text": "just text"}\n{"text": "more text"}\n')
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.yaml").write_text(f"model: {{source: {tiny_models['llama']}}}\n")
    argv, needle = {
        "missing": (["eval", str(tmp_path / "nope"), "--data", str(lm_data)], "does not exist"),
        "other-base": (["eval", str(lm), "--data", str(lm_data), "--base",
                        str(tiny_models["bert"])], "does not fit"),
        "no-label-column": (["eval", str(cls_adapter), "--data", str(text_only)],
                            "no label column"),
        "no-adapter": (["eval", str(run_dir), "--data", str(lm_data)], "no trained adapter"),
        "max-examples": (["eval", str(lm), "--data", str(lm_data), "--max-examples", "0"],
                         "--max-examples"),
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("Failed to load CPU gemm_4bit")]
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert "Traceback" not in err[0]


def test_bare_bert_checkpoint_defaults_to_sequence_classification(tmp_path, capsys):
    from graftlab.core.model.demo import build_config
    from graftlab.core.model.module_tree import infer_task
    from transformers import BertModel, GPT2Config, LlamaConfig

    config = build_config("bert", 128)
    for archs in (["BertModel"], ["BertForMaskedLM"], None):
        config.architectures = archs
        assert infer_task(config) == "sequence-classification", archs
    assert infer_task(LlamaConfig(architectures=["LlamaForCausalLM"])) == "causal-lm"
    assert infer_task(LlamaConfig(architectures=["LlamaModel"])) == "causal-lm"
    assert infer_task(GPT2Config(architectures=["GPT2LMHeadModel"])) == "causal-lm"
    config.architectures = None
    BertModel(config).save_pretrained(tmp_path / "st-model")  # like a sentence-transformers one
    assert json.loads((tmp_path / "st-model" / "config.json").read_text())["architectures"] \
        == ["BertModel"]
    assert main(["inspect", str(tmp_path / "st-model")]) == 0
    assert "(sequence-classification)" in capsys.readouterr().out.splitlines()[0]


def test_eval_summary_names_the_classes(classifier, capsys):
    adapter, data, _ = classifier
    assert main(["eval", str(adapter), "--data", str(data), "--max-examples", "6"]) == 0
    out = capsys.readouterr().out
    assert "6 examples" in out and "bad" in out and "base:" in out and "macro-F1" in out
