"""Chapter 3, BERT: the parameter count of BertForPreTraining, the embeddings."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..bert import BertConfig, BertEmbeddings, BertForPreTraining
from ._harness import Case, Hint, run_check, _seeded

__all__ = ["check_bert_num_parameters", "check_bert_embeddings"]


def _bert_count(config: BertConfig) -> int:
    with torch.device("meta"):
        model = BertForPreTraining(config)
    return model.num_parameters()  # counts the tied decoder weight once


def _bert_count_plus(extra: Callable[[BertConfig], int]):
    return lambda config: _bert_count(config) + extra(config)


def check_bert_num_parameters(count: Callable[[BertConfig], int]) -> None:
    """Exercise 3.1: ``count(config)``: the number of parameters of ``BertForPreTraining(config)``
    from a formula (the MLM decoder shares its weight with the word embeddings)."""
    cases = [
        Case("a tiny BERT", (BertConfig(vocab_size=10, hidden_size=4, num_hidden_layers=1,
                                        num_attention_heads=1, intermediate_size=8,
                                        max_position_embeddings=6),)),
        Case("a small BERT", (BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=64,
                                         max_position_embeddings=32),)),
        Case("three segment types", (BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2,
                                                num_attention_heads=2, intermediate_size=32,
                                                max_position_embeddings=16, type_vocab_size=3),)),
        Case("BERT-base", (BertConfig(),)),
        Case("BERT-large", (BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                       intermediate_size=4096),)),
    ]
    hints = [
        Hint(_bert_count_plus(lambda c: c.vocab_size * c.hidden_size),
             "you counted the MLM decoder's V×D weight, but it *is* the word-embedding matrix "
             "(tied): count it once."),
        Hint(_bert_count_plus(lambda c: -c.vocab_size),
             "the MLM head's output bias (one per vocabulary entry, V numbers) is missing: only the "
             "decoder *weight* is tied."),
        Hint(_bert_count_plus(lambda c: -(c.hidden_size ** 2 + c.hidden_size)),
             "one D×D dense layer (+ D biases) is missing: the pooler, or the MLM head's transform."),
        Hint(_bert_count_plus(lambda c: -(2 * c.hidden_size + 2)),
             "the NSP head is missing: a Linear(D, 2), 2·D weights and 2 biases."),
        Hint(_bert_count_plus(lambda c: -2 * c.hidden_size),
             "a LayerNorm (2·D) is missing: the embeddings and the MLM head each have one, and so does "
             "every encoder layer (two each)."),
        Hint(_bert_count_plus(lambda c: -c.type_vocab_size * c.hidden_size),
             "the segment (token type) embeddings are missing: type_vocab_size × D."),
        Hint(_bert_count_plus(lambda c: -c.max_position_embeddings * c.hidden_size),
             "the position embeddings are missing: max_position_embeddings × D."),
    ]
    run_check("check_bert_num_parameters", count, _bert_count, cases, hints)


def _random_embeddings(config: BertConfig) -> BertEmbeddings:
    emb = BertEmbeddings(config)
    with torch.no_grad():
        for table in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings):
            table.weight.normal_()
        emb.LayerNorm.weight.uniform_(0.5, 1.5)
        emb.LayerNorm.bias.normal_(0.0, 0.5)
    return emb.eval()


def _reference_embeddings(emb: BertEmbeddings, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
    return emb.eval()(input_ids, token_type_ids)


def _embeddings_without(part: str):
    def wrong(emb: BertEmbeddings, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1])
        x = emb.word_embeddings(input_ids)
        if part != "positions":
            x = x + emb.position_embeddings(positions)
        if part != "segments":
            x = x + emb.token_type_embeddings(token_type_ids)
        return x if part == "norm" else emb.LayerNorm(x)
    return wrong


def check_bert_embeddings(bert_embeddings: Callable[..., Tensor]) -> None:
    """Exercise 3.2: ``bert_embeddings(emb, input_ids, token_type_ids)``: BERT's input
    representation from the parts of a ``bertbook.BertEmbeddings`` (``word_embeddings``,
    ``position_embeddings``, ``token_type_embeddings``, ``LayerNorm``); dropout is off."""
    with _seeded(301):
        config = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=16, max_position_embeddings=12)
        emb = _random_embeddings(config)
        ids = torch.tensor([[2, 7, 7, 3, 9, 3], [2, 5, 3, 0, 0, 0]])
        segs = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]])
        cases = [
            Case("one segment", (emb, ids, torch.zeros_like(ids))),
            Case("two segments, padding", (emb, ids, segs)),
            Case("the same token at two positions", (emb, torch.tensor([[4, 4, 4]]), torch.tensor([[0, 0, 1]]))),
            Case("a sequence as long as max_position_embeddings",
                 (emb, torch.randint(0, 20, (1, 12)), torch.randint(0, 2, (1, 12)))),
        ]
    hints = [
        Hint(_embeddings_without("positions"), "the position embeddings are missing: without them "
             "the model cannot tell word order. Add emb.position_embeddings(torch.arange(L))."),
        Hint(_embeddings_without("segments"), "the segment embeddings are missing: add "
             "emb.token_type_embeddings(token_type_ids)."),
        Hint(_embeddings_without("norm"), "the sum must go through emb.LayerNorm."),
    ]
    run_check("check_bert_embeddings", bert_embeddings, _reference_embeddings, cases, hints)
