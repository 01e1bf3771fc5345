"""DistilBERT (chapter 6): BERT at half depth, without segment embeddings or pooler
(Sanh et al., 2019), and a student initialised from its teacher's layers.
"""
from __future__ import annotations

import dataclasses
import math
import operator
from typing import List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .attention import keep_mask
from .bert import (BertConfig, BertEmbeddings, BertForPreTraining, BertForSequenceClassification,
                   BertModel, MLMHead, ModelOutput, PreTrainedModel, build_encoder, check_mask,
                   classification_loss, mlm_logits_and_loss, pool)


# DistilBERT's classifier dropout when the config leaves it None (transformers' seq_classif_dropout);
# BERT's is then hidden_dropout_prob.
DISTILBERT_CLASSIFIER_DROPOUT = 0.2


class DistilBertModel(PreTrainedModel):
    """Embeddings (word + position) + encoder. last_hidden_state: (B, L, D)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config, segments=False)
        self.encoder = build_encoder(config)
        self.init_weights()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> ModelOutput:
        check_mask(attention_mask, input_ids, "attention_mask")
        if attention_mask is not None:
            attention_mask = keep_mask(attention_mask)  # checked once here, not in every layer
        x = self.embeddings(input_ids)
        x, hs, att = self.encoder(x, attention_mask, output_hidden_states, output_attentions)
        return ModelOutput(last_hidden_state=x, hidden_states=hs, attentions=att)


class DistilBertForMaskedLM(PreTrainedModel):
    """DistilBERT with the MLM head (tied decoder). logits: (B, L, V), or (N, V) over the labelled
    positions when `labels` are given and `masked_positions_only`."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.distilbert = DistilBertModel(config)
        self.mlm = MLMHead(config, self.distilbert.embeddings.word_embeddings)
        self.init_weights()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.distilbert.embeddings.word_embeddings

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        labels: Optional[Tensor] = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        masked_positions_only: bool = True,
    ) -> ModelOutput:
        out = self.distilbert(input_ids, attention_mask, output_hidden_states, output_attentions)
        out.logits, out.mlm_loss = mlm_logits_and_loss(self.mlm, out.last_hidden_state, labels,
                                                       masked_positions_only)
        out.loss = out.mlm_loss
        return out


class DistilBertForSequenceClassification(PreTrainedModel):
    """pooled vector -> Linear(D, D) -> ReLU -> dropout -> Linear(D, num_labels). logits: (B, num_labels)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.distilbert = DistilBertModel(config)
        self.pre_classifier = nn.Linear(config.hidden_size, config.hidden_size)
        p = DISTILBERT_CLASSIFIER_DROPOUT if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.distilbert.embeddings.word_embeddings

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        labels: Optional[Tensor] = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> ModelOutput:
        out = self.distilbert(input_ids, attention_mask, output_hidden_states, output_attentions)
        pooled = pool(out.last_hidden_state, attention_mask, self.config.classifier_pooling)
        h = torch.relu(self.pre_classifier(pooled))
        out.logits = self.classifier(self.dropout(h))
        out.loss = classification_loss(out.logits, labels)
        return out


def default_student_layers(num_teacher_layers: int) -> List[int]:
    """Half as many layers, spread evenly from the first to the last teacher layer.
    For 12 layers this is DistilBERT's choice, [0, 2, 4, 7, 9, 11]."""
    k = math.ceil(num_teacher_layers / 2)
    if k == 1:
        return [0]
    step = (num_teacher_layers - 1) / (k - 1)
    return [round(i * step) for i in range(k)]


def student_layers(layers: Optional[Sequence[int]], num_teacher_layers: int) -> List[int]:
    """The teacher layers a student copies: `layers` checked (int indices in range, strictly
    increasing, no more than the teacher has), or for None `default_student_layers`."""
    n = num_teacher_layers
    if layers is None:
        return default_student_layers(n)
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise TypeError(f"layers must be a sequence of teacher layer indices (ints), got {layers!r}")
    given, out = list(layers), []
    for i in given:
        try:
            if isinstance(i, bool):
                raise TypeError
            out.append(operator.index(i))  # an int, a NumPy int: yes; 1.7 or "1": no
        except TypeError:
            raise TypeError(f"layers must be teacher layer indices (ints), got {i!r} in {given!r}") from None
    if not out:
        raise ValueError("the student needs at least one layer")
    if len(out) > n:
        raise ValueError(f"a student of {len(out)} layers is deeper than its {n}-layer teacher")
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"teacher layer index {bad} out of range: the teacher has layers 0..{n - 1}")
    if sorted(set(out)) != out:
        raise ValueError(f"layers must be strictly increasing without repeats, got {out}")
    return out


Teacher = Union[BertModel, BertForPreTraining, BertForSequenceClassification]


def student_from_teacher(
    teacher: Teacher, layers: Optional[Sequence[int]] = None
) -> Union[DistilBertForMaskedLM, DistilBertForSequenceClassification]:
    """A DistilBERT student initialised from a BERT teacher.

    Copies the word and position embeddings, the embedding LayerNorm, the chosen encoder layers
    and, for a pretraining teacher, the MLM head. The teacher's segment-0 embedding is folded into
    the position table, so for single-segment input the student's embeddings equal the teacher's.
    A classification teacher gives a classification student with a freshly initialised head.
    """
    if isinstance(teacher, BertForPreTraining):
        bert, student_cls = teacher.bert, DistilBertForMaskedLM
    elif isinstance(teacher, BertForSequenceClassification):
        bert, student_cls = teacher.bert, DistilBertForSequenceClassification
    elif isinstance(teacher, BertModel):
        bert, student_cls = teacher, DistilBertForMaskedLM
    else:
        raise TypeError(f"teacher must be a bertbook BERT model, got {type(teacher).__name__}")
    layers = student_layers(layers, teacher.config.num_hidden_layers)
    student = student_cls(dataclasses.replace(teacher.config, num_hidden_layers=len(layers)))
    se, te = student.distilbert.embeddings, bert.embeddings
    with torch.no_grad():
        se.word_embeddings.weight.copy_(te.word_embeddings.weight)
        se.position_embeddings.weight.copy_(te.position_embeddings.weight + te.token_type_embeddings.weight[0])
        se.LayerNorm.load_state_dict(te.LayerNorm.state_dict())
        for s_layer, t in zip(student.distilbert.encoder.layers, layers):
            s_layer.load_state_dict(bert.encoder.layers[t].state_dict())
        if bert.encoder.final_norm is not None:
            student.distilbert.encoder.final_norm.load_state_dict(bert.encoder.final_norm.state_dict())
        if isinstance(teacher, BertForPreTraining):
            student.mlm.load_state_dict(teacher.mlm.state_dict())
    return student
