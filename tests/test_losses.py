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


def _batch_without_masked_position():
    ids = torch.tensor([[2, 7, 8, 3, 9, 10, 3]])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
            "labels": torch.full_like(ids, -100), "next_sentence_label": torch.tensor([0])}


@pytest.mark.parametrize("masked_positions_only", [True, False])
def test_batch_without_masked_position_has_zero_mlm_loss(masked_positions_only):
    # Dynamic masking can draw no position at all: the MLM loss is 0 there, not a NaN that stops training.
    model = BertForPreTraining(_tiny())
    b = _batch_without_masked_position()
    out = model(**b, masked_positions_only=masked_positions_only)
    assert out.mlm_loss.item() == 0.0 and torch.equal(out.loss, out.nsp_loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # with a labelled position the loss is the cross-entropy's, bit for bit
    b["labels"][0, 1] = 7
    out = model(**b, masked_positions_only=masked_positions_only)
    logits = out.logits if masked_positions_only else out.logits[0, 1:2]
    assert torch.equal(out.mlm_loss, torch.nn.functional.cross_entropy(logits, torch.tensor([7])))


def test_training_steps_on_a_batch_without_masked_position():
    from bertbook.pretrain import pretrain

    teacher = BertForPreTraining(_tiny())
    pretrain(teacher, [_batch_without_masked_position()], steps=2, progress=False)  # no FloatingPointError
    hist = distill(teacher, student_from_teacher(teacher), [_batch_without_masked_position()], steps=2,
                   log_every=1, progress=False)
    assert hist["mlm"] == [0.0, 0.0] and hist["ce"] == [0.0, 0.0]


def test_distill_leaves_the_callers_teacher_trainable():
    teacher = BertForPreTraining(_tiny())
    teacher.nsp.requires_grad_(False)  # a caller's own choice, kept as it was
    before = {name: p.requires_grad for name, p in teacher.named_parameters()}
    batch = [{"input_ids": torch.tensor([[2, 7, 4, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
              "labels": torch.tensor([[-100, -100, 8, -100]])}]
    distill(teacher, student_from_teacher(teacher), batch, steps=1, progress=False)
    assert {name: p.requires_grad for name, p in teacher.named_parameters()} == before
    assert not teacher.training  # evaluated in eval mode, as the teacher was run


def test_a_broken_teacher_stops_distillation_at_its_step():
    teacher = BertForPreTraining(_tiny())
    student = student_from_teacher(teacher)
    with torch.no_grad():
        teacher.mlm.bias[9] = float("nan")
    batch = [{"input_ids": torch.tensor([[2, 7, 4, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
              "labels": torch.tensor([[-100, -100, 8, -100]])}]
    # with alpha_ce = 0 its NaN went only into the logged soft-target term; with it, into the loss
    for alpha_ce in (0.0, 5.0):
        with pytest.raises(FloatingPointError, match="the teacher's outputs hold NaN or inf at step 1"):
            distill(teacher, student, batch, steps=2, alpha_ce=alpha_ce, progress=False)


def test_nan_teacher_logits_stop_finetuning_before_it_starts():
    from bertbook.bert import BertForSequenceClassification
    from bertbook.finetune import finetune, make_batches

    model = BertForSequenceClassification(_tiny())
    batches = make_batches([[2, 5, 3], [2, 6, 7, 3]], [0, 1], batch_size=2)
    logits = torch.zeros(2, 2)
    logits[1, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"teacher_logits hold NaN or inf for 1 examples \(first: \[1\]\)"):
        finetune(model, batches, teacher_logits=logits, progress=False)


def test_a_nan_loss_names_its_step():
    from bertbook.training import TrainStep

    model = torch.nn.Linear(2, 1)
    opt = TrainStep(model, steps=3, lr=1e-3)
    opt.step(model(torch.ones(1, 2)).sum())
    with pytest.raises(FloatingPointError, match="the loss is nan at step 2"):
        opt.step(model(torch.ones(1, 2)).sum() * float("nan"))
