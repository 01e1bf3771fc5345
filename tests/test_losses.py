"""Distillation losses against values computed by hand, and the errors for bad inputs."""
import math

import pytest
import torch

from bertbook.bert import BertConfig, BertForPreTraining
from bertbook.distill import (classification_kd_loss, cosine_hidden_loss, distill, soft_target_loss,
                              triple_loss)
from bertbook.distilbert import DistilBertForMaskedLM, student_from_teacher


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def test_soft_target_loss_by_hand_including_t_squared():
    s = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    t = torch.tensor([[3.0, 1.0, 0.0], [1.0, 0.0, -1.0]])
    for T in (1.0, 2.0, 4.0):
        rows = [_kl(_softmax([x / T for x in tr]), _softmax([x / T for x in sr]))
                for sr, tr in zip(s.tolist(), t.tolist())]
        expected = T * T * sum(rows) / 2  # T² · KL(teacher ‖ student), mean over rows
        assert soft_target_loss(s, t, T).item() == pytest.approx(expected, rel=1e-5)


def test_soft_target_loss_zero_when_equal_and_no_teacher_gradient():
    s = torch.randn(4, 7, requires_grad=True)
    t = s.detach().clone().requires_grad_(True)
    loss = soft_target_loss(s, t, 2.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    (soft_target_loss(s, t + 1.0 * torch.randn(4, 7), 2.0)).backward()
    assert s.grad is not None and t.grad is None


def test_cosine_loss_by_hand_ignores_padding():
    s = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    t = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding and must not count
    expected = ((1 - 1.0) + (1 - 1 / math.sqrt(2))) / 2
    assert cosine_hidden_loss(s, t, mask).item() == pytest.approx(expected, rel=1e-6)


def test_triple_loss_weights_parts():
    torch.manual_seed(0)
    s, t = torch.randn(5, 11), torch.randn(5, 11)
    hs, ht = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    mask = torch.ones(2, 4, dtype=torch.long)
    mlm = torch.tensor(3.0)
    out = triple_loss(s, t, mlm, hs, ht, mask, temperature=2.0, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0)
    expected = 5 * soft_target_loss(s, t, 2.0) + 2 * 3.0 + cosine_hidden_loss(hs, ht, mask)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_classification_kd_loss_by_hand():
    logits, teacher = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    labels = torch.tensor([0])
    ce = -math.log(_softmax([2.0, 0.0])[0])
    kl = _kl(_softmax([0.0, 0.5]), _softmax([1.0, 0.0]))
    expected = 0.3 * ce + 0.7 * 4 * kl
    got = classification_kd_loss(logits, teacher, labels, alpha=0.3, temperature=2.0)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert classification_kd_loss(logits, teacher, labels, alpha=1.0).item() == pytest.approx(ce, rel=1e-6)


@pytest.mark.parametrize("T", [0.0, -1.0])
def test_temperature_must_be_positive(T):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="temperature"):
        soft_target_loss(x, x, T)
    with pytest.raises(ValueError, match="temperature"):
        classification_kd_loss(x, x, torch.zeros(2, dtype=torch.long), temperature=T)


def test_all_zero_alphas_refused():
    x, h = torch.zeros(2, 3), torch.zeros(1, 2, 4)
    with pytest.raises(ValueError, match="all zero"):
        triple_loss(x, x, torch.tensor(0.0), h, h, None, alpha_ce=0.0, alpha_mlm=0.0, alpha_cos=0.0)
    with pytest.raises(ValueError, match="alpha_ce must be >= 0"):
        triple_loss(x, x, torch.tensor(0.0), h, h, None, alpha_ce=-1.0)


def _tiny(**kw):
    cfg = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=32, max_position_embeddings=16)
    cfg.update(kw)
    return BertConfig(**cfg)


def test_distill_rejects_mismatched_models_and_bad_settings():
    teacher = BertForPreTraining(_tiny())
    batch = [{"input_ids": torch.ones(1, 4, dtype=torch.long), "attention_mask": torch.ones(1, 4),
              "labels": torch.ones(1, 4, dtype=torch.long)}]
    with pytest.raises(ValueError, match="vocab_size"):
        distill(teacher, DistilBertForMaskedLM(_tiny(vocab_size=60)), batch, steps=1, progress=False)
    with pytest.raises(ValueError, match="hidden_size"):
        distill(teacher, DistilBertForMaskedLM(_tiny(hidden_size=8)), batch, steps=1, progress=False)
    student = student_from_teacher(teacher)
    with pytest.raises(ValueError, match="temperature"):
        distill(teacher, student, batch, steps=1, temperature=0, progress=False)
    with pytest.raises(ValueError, match="all zero"):
        distill(teacher, student, batch, steps=1, alpha_ce=0, alpha_mlm=0, alpha_cos=0, progress=False)
    with pytest.raises(ValueError, match="empty"):
        distill(teacher, student, [], steps=1, progress=False)
    with pytest.raises(TypeError, match="teacher"):
        distill(student, student, batch, steps=1, progress=False)
