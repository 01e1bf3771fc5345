"""A loop called with its defaults trains by the book's recipe: each default that is also a field
of the stage's settings has the settings' value."""
import inspect
from dataclasses import fields

import pytest

from bertbook import configs
from bertbook.bert import BertConfig
from bertbook.distill import classification_kd_loss, distill, soft_target_loss, triple_loss
from bertbook.finetune import batch_loss, finetune
from bertbook.pretrain import pretrain

NOT_RECIPE = {"eval_every"}  # when to evaluate changes no weight


@pytest.mark.parametrize("function, settings", [
    (pretrain, configs.PretrainSettings), (distill, configs.DistillSettings),
    (triple_loss, configs.DistillSettings), (soft_target_loss, configs.DistillSettings),
    (finetune, configs.FinetuneSettings), (batch_loss, configs.FinetuneSettings),
    (classification_kd_loss, configs.FinetuneSettings),
])
def test_defaults_are_the_settings(function, settings):
    defaults = {name: p.default for name, p in inspect.signature(function).parameters.items()
                if p.default is not inspect.Parameter.empty}
    shared = (defaults.keys() & {f.name for f in fields(settings)}) - NOT_RECIPE
    assert shared, function.__name__
    book = settings()
    assert {k: defaults[k] for k in shared} == {k: getattr(book, k) for k in shared}


def test_classifier_dropout_none_is_each_models_own():
    from bertbook.bert import BertForSequenceClassification
    from bertbook.distilbert import DISTILBERT_CLASSIFIER_DROPOUT, DistilBertForSequenceClassification
    from bertbook.hf import hf_config

    config = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, hidden_dropout_prob=0.1)
    assert BertForSequenceClassification(config).dropout.p == 0.1
    assert DistilBertForSequenceClassification(config).dropout.p == DISTILBERT_CLASSIFIER_DROPOUT == 0.2
    assert hf_config(config, distil=True).seq_classif_dropout == DISTILBERT_CLASSIFIER_DROPOUT
