"""fill_mask reads the predictions at every [MASK], best first; side_by_side lines models up."""
import pytest
import torch

from bertbook.bert import BertConfig, BertForPreTraining
from bertbook.distilbert import student_from_teacher
from bertbook.fill_mask import fill_mask, format_table, side_by_side
from bertbook.hf import load_minilm


@pytest.fixture(scope="module")
def tok():
    return load_minilm()[1]


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    m = BertForPreTraining(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=32))
    with torch.no_grad():
        m.mlm.bias[tok.convert_tokens_to_ids("paris")] = 50.0  # this model always says "paris"
    return m.eval()


def test_fill_mask_reads_every_mask_best_first(model, tok):
    preds = fill_mask(model, tok, "the capital of [MASK] is [MASK].", k=4)
    assert len(preds) == 2 and all(len(p) == 4 for p in preds)
    for p in preds:
        assert p[0][0] == "paris" and p[0][1] > 0.99
        assert [q for _, q in p] == sorted((q for _, q in p), reverse=True)


def test_side_by_side_and_bad_input(model, tok):
    student = student_from_teacher(model, [1]).eval()
    rows = side_by_side({"teacher": (model, tok), "student": (student, tok)}, ["a [MASK] day."], k=2)
    assert set(rows[0]) == {"sentence", "teacher", "student"} and rows[0]["teacher"].startswith("paris")
    assert "teacher" in format_table(rows)
    with pytest.raises(ValueError, match="MASK"):
        fill_mask(model, tok, "no mask here")


def test_fill_mask_leaves_the_model_in_its_mode(model, tok):
    model.train()
    try:
        assert fill_mask(model, tok, "a [MASK] day.", k=1)[0][0][0] == "paris"
        assert model.training
    finally:
        model.eval()


def test_fill_mask_names_a_bad_text_or_k(model, tok):
    with pytest.raises(TypeError, match="text must be a string"):
        fill_mask(model, tok, None)
    for k in (0, 10 ** 6, 2.0):
        with pytest.raises(ValueError, match=f"k must be an int from 1 to the vocabulary size {len(tok)}"):
            fill_mask(model, tok, "a [MASK] day.", k=k)
