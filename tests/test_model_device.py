"""One device for every model the pipeline returns, trained here or loaded from the cache
(`pipeline.model_device()`), and inference helpers that move their inputs to the model's device and
leave the caller's model where it was, in its mode.

There is no second device on a CPU machine: the returned device is mocked as `meta` (training still
runs on the CPU), and a model "on another device" is a wrapper whose parameters are on `meta`, while
`Tensor.to(meta)` of a CPU tensor only marks it as moved (`moves`): the wrapper's forward checks that
every input was moved, then runs a CPU twin on the same values, so the numbers can be compared."""
import copy
import inspect

import pytest
import torch
from torch import nn

from bertbook import pipeline
from bertbook.benchmark import torch_predict
from bertbook.bert import BertConfig, BertForPreTraining, BertForSequenceClassification
from bertbook.configs import get_scale_config
from bertbook.fill_mask import fill_mask
from bertbook.finetune import evaluate_classifier, predict_logits
from bertbook.metrics import evaluate_pretraining
from bertbook.viz import attentions_for

META = torch.device("meta")


def _device(model):
    return next(model.parameters()).device


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def cfg():
    return get_scale_config("tiny")


@pytest.fixture(scope="module")
def data(cfg, cache_dir):
    return pipeline.pretraining_data(cfg, cache_dir)


@pytest.fixture
def on_meta(monkeypatch):
    monkeypatch.setattr(pipeline, "model_device", lambda: META)


def test_models_come_back_on_the_cpu_whatever_trains_them(monkeypatch):
    # Even where training would run on a GPU: the chapters' examples make their tensors on the CPU.
    from bertbook import device
    monkeypatch.setattr(device, "get_device", lambda prefer=None: torch.device("meta"))
    assert pipeline.model_device() == torch.device("cpu")


def test_a_stage_trained_and_the_same_stage_loaded_come_back_alike(cfg, cache_dir, data, on_meta):
    trained, info = pipeline.pretrained_teacher(cfg, cache_dir, progress=False)
    assert not info["cached"] and 0.0 <= info["heldout_mask_accuracy"] <= 1.0  # measured on the CPU
    loaded, again = pipeline.pretrained_teacher(cfg, cache_dir, progress=False)
    assert again["cached"] and again["key"] == info["key"]
    named, _ = pipeline.get_model("pretrained", cfg, cache_dir, progress=False)
    for model in (trained, loaded, named):
        assert _device(model) == META and not model.training
        assert all(p.device == META for p in model.parameters())
        assert all(b.device == META for b in model.buffers())


def test_the_stage_on_the_cpu_is_unchanged(cfg, cache_dir, data):
    # not mocked: on a CPU machine the device is the CPU, and the loaded weights are the saved ones
    pipeline.pretrained_teacher(cfg, cache_dir, progress=False)  # trained here if not yet cached
    model, info = pipeline.pretrained_teacher(cfg, cache_dir, progress=False)
    assert info["cached"] and _device(model).type == pipeline.model_device().type and not model.training
    if _device(model).type == "cpu":
        ev = data.evaluate(model)
        assert ev["mask_accuracy"] == info["heldout_mask_accuracy"]
        assert ev["mlm_loss"] == info["heldout_mlm_loss"]


def test_copied_student_comes_back_on_the_device(cfg, cache_dir, data, on_meta, monkeypatch):
    torch.manual_seed(0)
    teacher = BertForPreTraining(cfg.pretrain.model_config(len(data.tokenizer))).eval()
    monkeypatch.setattr(pipeline, "mlm_teacher", lambda *a, **k: (teacher, {}))
    monkeypatch.setattr(pipeline, "pretraining_data", lambda *a, **k: data)  # not MiniLM's tokenizer
    student, info = pipeline.copied_student(cfg, cache_dir, layers=[0], progress=False)
    assert _device(student) == META and not student.training
    assert info["layers"] == [0] and 0.0 <= info["heldout_mask_accuracy"] <= 1.0


@pytest.fixture
def moves(monkeypatch):
    """`Tensor.to(meta)` of a CPU tensor marks it as moved and keeps it, values and all, on the CPU:
    a second device where there is none. Every other `to` is the real one."""
    real = torch.Tensor.to

    def to(self, *args, **kwargs):
        where = kwargs.get("device", args[0] if args else None)
        if isinstance(where, str):
            where = torch.device(where)
        if isinstance(where, torch.device) and where.type == "meta" and self.device.type == "cpu":
            self._moved_to = where
            return self
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)


def on_another_device(twin: nn.Module) -> nn.Module:
    """`twin` (eval mode, CPU) as if on another device: its parameters are on `meta`; its forward
    records, for every tensor it gets, whether the caller moved it there (see `moves`), and the
    mode it runs in, then runs `twin` on the same values."""
    class Elsewhere(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = copy.deepcopy(twin).to_empty(device=META)  # not `to`: see `moves`
            self.config = twin.config
            self.arrived, self.modes = [], []

        def forward(self, *args, **kwargs):
            for t in (*args, *kwargs.values()):
                if isinstance(t, torch.Tensor):
                    self.arrived.append(t.__dict__.pop("_moved_to", t.device))
            self.modes.append(self.training)
            return twin(*args, **kwargs)

    Elsewhere.forward.__signature__ = inspect.signature(type(twin).forward)  # the keys it takes
    return Elsewhere()


def _check_elsewhere(model, training):
    assert model.arrived and all(d == META for d in model.arrived), model.arrived  # every input was moved
    assert model.modes and not any(model.modes)  # run in eval mode
    assert _device(model) == META and model.training == training  # the caller's model as it was


@pytest.fixture
def mlm(cfg, data):
    torch.manual_seed(0)
    return BertForPreTraining(cfg.pretrain.model_config(len(data.tokenizer))).eval()


@pytest.mark.parametrize("training", [False, True])
def test_mlm_helpers_move_their_inputs_and_leave_the_model(mlm, data, moves, training):
    text = f"the {data.tokenizer.mask_token} of the city ."
    expected = fill_mask(mlm, data.tokenizer, text, k=3)
    model = on_another_device(mlm).train(training)
    assert fill_mask(model, data.tokenizer, text, k=3) == expected
    _check_elsewhere(model, training)

    expected = data.evaluate(mlm)
    model = on_another_device(mlm).train(training)
    assert data.evaluate(model) == expected
    _check_elsewhere(model, training)

    model = on_another_device(mlm).train(training)
    assert evaluate_pretraining(model, data.eval_batches) == evaluate_pretraining(mlm, data.eval_batches)
    _check_elsewhere(model, training)

    texts = ["the city of the river .", "a river ."]
    enc, expected = attentions_for(mlm, data.tokenizer, texts, max_length=16)
    model = on_another_device(mlm).train(training)
    enc2, att = attentions_for(model, data.tokenizer, texts, max_length=16)
    assert torch.equal(enc["input_ids"], enc2["input_ids"]) and all(map(torch.equal, att, expected))
    _check_elsewhere(model, training)


def _classification_batches(vocab_size, n_batches=3, batch_size=4, length=10):
    g = torch.Generator().manual_seed(0)
    batches = []
    for i in range(n_batches):
        mask = torch.ones(batch_size, length, dtype=torch.long)
        mask[0, length // 2:] = 0
        batches.append({"input_ids": torch.randint(5, vocab_size, (batch_size, length), generator=g),
                        "attention_mask": mask, "labels": torch.randint(0, 2, (batch_size,), generator=g),
                        "index": torch.arange(i * batch_size, (i + 1) * batch_size).flip(0)})
    return batches


@pytest.mark.parametrize("training", [False, True])
def test_classifier_helpers_move_their_inputs_and_leave_the_model(moves, training):
    torch.manual_seed(0)
    clf = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                                   num_attention_heads=2, intermediate_size=32,
                                                   num_labels=2)).eval()
    batches = _classification_batches(50)
    model = on_another_device(clf).train(training)
    assert torch.equal(predict_logits(model, batches), predict_logits(clf, batches))
    _check_elsewhere(model, training)
    model = on_another_device(clf).train(training)
    assert evaluate_classifier(model, batches) == evaluate_classifier(clf, batches)
    _check_elsewhere(model, training)


def test_on_the_cpu_the_helpers_give_what_a_direct_call_gives_and_keep_the_mode():
    torch.manual_seed(0)
    clf = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                                   num_attention_heads=2, intermediate_size=32, num_labels=2))
    batches = _classification_batches(50)
    with torch.no_grad():
        direct = torch.cat([clf.eval()(b["input_ids"], b["attention_mask"]).logits for b in batches])
    order = torch.cat([b["index"] for b in batches])
    clf.train()
    logits = predict_logits(clf, batches)
    assert torch.equal(logits[order], direct) and clf.training and _device(clf).type == "cpu"
    assert evaluate_classifier(clf, batches) == float((direct.argmax(-1) == torch.cat(
        [b["labels"] for b in batches])).float().mean()) and clf.training


def test_torch_predict_runs_a_cpu_model_itself():
    torch.manual_seed(0)
    clf = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=32, num_labels=2)).eval()
    b = _classification_batches(50, 1)[0]
    predict = torch_predict(clf)
    with torch.no_grad():
        clf.classifier.bias += 1.0  # a change to the caller's model shows: no copy on the CPU
        assert torch.equal(predict(b), clf(b["input_ids"], b["attention_mask"]).logits)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_torch_predict_runs_a_gpu_model_on_the_cpu_and_leaves_it_there():
    torch.manual_seed(0)
    clf = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=32, num_labels=2)).eval()
    b = _classification_batches(50, 1)[0]
    with torch.no_grad():
        expected = clf(b["input_ids"], b["attention_mask"]).logits
    clf.cuda()
    out = torch_predict(clf)(b)
    assert out.device.type == "cpu" and torch.equal(out, expected) and _device(clf).type == "cuda"
