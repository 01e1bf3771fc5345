"""MiniLM's attention transfer: the relations of a layer, the KL between them (against a hand
computation), the layer map, and `distill` with the attention-transfer terms."""
import math

import pytest
import torch

from bertbook.attention import MultiHeadAttention
from bertbook.bert import BertConfig, BertForPreTraining
from bertbook.distill import (attention_transfer_loss, distill, relation_kl, relation_layer_map,
                              soft_target_loss)
from bertbook.distilbert import DistilBertForMaskedLM, student_from_teacher


def _tiny(**kw):
    cfg = dict(vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
               intermediate_size=32, max_position_embeddings=16)
    cfg.update(kw)
    return BertConfig(**cfg)


def _batch(seed=0, pad=2):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7 - pad:] = 0
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "labels": labels}


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def _softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def test_relation_kl_by_hand_skips_padded_keys_and_queries():
    # one sequence, one head, three tokens of which the last is padding
    s_scores = torch.tensor([[[[1.0, 0.0, 9.0], [0.5, 2.0, 9.0], [3.0, 3.0, 3.0]]]])
    t_scores = torch.tensor([[[[0.0, 1.0, -9.0], [2.0, 0.0, -9.0], [1.0, 1.0, 1.0]]]])
    mask = torch.tensor([[1, 1, 0]])
    keep = mask.bool()[:, None, None, :]
    fill = torch.finfo(torch.float32).min
    s_log = s_scores.masked_fill(~keep, fill).log_softmax(-1)
    t_log = t_scores.masked_fill(~keep, fill).log_softmax(-1)
    rows = [_kl(_softmax(t[:2]), _softmax(s[:2])) for s, t in zip(s_scores[0, 0, :2].tolist(),
                                                                    t_scores[0, 0, :2].tolist())]
    expected = sum(rows) / 2  # two real queries, one head: the padded query and key do not count
    assert relation_kl(s_log, t_log, mask).item() == pytest.approx(expected, rel=1e-6)
    # without a mask every row and key counts
    full = [_kl(_softmax(t), _softmax(s)) for s, t in zip(s_scores[0, 0].tolist(), t_scores[0, 0].tolist())]
    assert relation_kl(s_scores.log_softmax(-1), t_scores.log_softmax(-1)).item() == \
        pytest.approx(sum(full) / 3, rel=1e-6)


def test_relation_kl_zero_when_equal_and_no_teacher_gradient():
    x = torch.randn(2, 3, 5, 5).log_softmax(-1)
    s, t = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    assert relation_kl(s, t).item() == pytest.approx(0.0, abs=1e-7)
    relation_kl(s, (x + torch.randn_like(x)).log_softmax(-1).requires_grad_(True)).backward()
    assert s.grad is not None and t.grad is None
    with pytest.raises(ValueError, match="differ"):
        relation_kl(s, t[:, :2])


def test_relations_are_the_attention_weights_and_the_value_relation():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, dropout=0.5).train()  # relations never use dropout
    x, mask = torch.randn(2, 5, 8), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    att, val = mha.relations(x, mask)
    mha.eval()
    _, weights = mha(x, mask, output_attentions=True)
    assert torch.allclose(att.exp(), weights, atol=1e-6)
    v = mha.split_heads(mha.qkv(x).chunk(3, dim=-1)[2])  # (B, H, L, d)
    # the value relation of sequence 1, head 1, query 0, by hand over the three real keys
    row = [float(v[1, 1, 0].detach() @ v[1, 1, j].detach()) / math.sqrt(4) for j in range(3)]
    assert val[1, 1, 0, :3].exp().tolist() == pytest.approx(_softmax(row), rel=1e-5)
    assert val[1, 1, 0, 3:].exp().tolist() == [0.0, 0.0]


def test_relation_layer_map():
    assert relation_layer_map(3, 6) == [(0, 1), (1, 3), (2, 5)]
    assert relation_layer_map(6, 12) == [(0, 1), (1, 3), (2, 5), (3, 7), (4, 9), (5, 11)]
    assert relation_layer_map(1, 6) == [(0, 5)]  # the last layer: MiniLM's choice
    assert relation_layer_map(4, 4) == [(0, 0), (1, 1), (2, 2), (3, 3)]


def test_a_student_equal_to_its_teacher_has_zero_attention_transfer_loss():
    torch.manual_seed(0)
    teacher = BertForPreTraining(_tiny()).eval()
    with torch.no_grad():  # larger weights than BERT's init: attention far from uniform
        for p in teacher.parameters():
            p.normal_(0.0, 0.5)
    student = student_from_teacher(teacher, [0, 1, 2, 3]).eval()  # every layer: the same model
    b = _batch()
    t = teacher(b["input_ids"], b["attention_mask"], b["token_type_ids"], output_hidden_states=True)
    s = student(b["input_ids"], b["attention_mask"], output_hidden_states=True)
    parts = attention_transfer_loss(student, teacher, s.hidden_states, t.hidden_states, b["attention_mask"],
                                    relation_layer_map(4, 4))
    assert parts["att"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["val"].item() == pytest.approx(0.0, abs=1e-6)
    # a different pairing of the same layers is not zero
    other = attention_transfer_loss(student, teacher, s.hidden_states, t.hidden_states, b["attention_mask"],
                                    [(0, 3)])
    assert other["att"].item() > 1e-2 and other["val"].item() > 1e-2


def test_distill_with_attention_transfer_alone_trains_the_student_only():
    torch.manual_seed(0)
    teacher = BertForPreTraining(_tiny())
    torch.manual_seed(1)
    student = DistilBertForMaskedLM(_tiny(num_hidden_layers=2))  # random init, not a copy
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_before = {k: v.clone() for k, v in student.state_dict().items()}
    hist = distill(teacher, student, [_batch(i) for i in range(4)], steps=8, lr=1e-2, alpha_ce=0.0,
                   alpha_mlm=0.0, alpha_cos=0.0, alpha_att=1.0, alpha_val=1.0, log_every=1, progress=False)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in t_before.items())
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in s_before.items())
    # only the relations are trained on, but every term the teacher allows is logged
    assert hist["loss"][0] == pytest.approx(hist["att"][0] + hist["val"][0], rel=1e-5)
    assert hist["ce"][0] > 0 and hist["cos"][0] > 0
    assert hist["att"][-1] < hist["att"][0] and hist["val"][-1] < hist["val"][0]


def test_distill_mlm_alone_logs_zero_relations_and_the_triple_loss_is_unchanged():
    torch.manual_seed(0)
    teacher = BertForPreTraining(_tiny())
    batches = [_batch(i) for i in range(2)]
    hist = distill(teacher, student_from_teacher(teacher), batches, steps=2, alpha_ce=0.0, alpha_cos=0.0,
                   log_every=1, progress=False)
    assert hist["att"] == [0.0, 0.0] and hist["val"] == [0.0, 0.0] and hist["ce"] == [0.0, 0.0]
    # the triple loss logs what it trains on: loss = 5 ce + 2 mlm + 1 cos
    hist = distill(teacher, student_from_teacher(teacher), batches, steps=1, log_every=1, progress=False)
    assert hist["loss"][0] == pytest.approx(5 * hist["ce"][0] + 2 * hist["mlm"][0] + hist["cos"][0], rel=1e-5)


def test_distill_refuses_attention_transfer_it_cannot_do():
    teacher = BertForPreTraining(_tiny())
    batch = [_batch()]
    with pytest.raises(ValueError, match="heads"):
        distill(teacher, DistilBertForMaskedLM(_tiny(num_attention_heads=4)), batch, steps=1, alpha_att=1.0,
                progress=False)
    student = DistilBertForMaskedLM(_tiny(num_hidden_layers=2))
    with pytest.raises(ValueError, match="out of range"):
        distill(teacher, student, batch, steps=1, alpha_att=1.0, attention_layers=[(2, 3)], progress=False)
    with pytest.raises(ValueError, match="pairs of ints"):
        distill(teacher, student, batch, steps=1, alpha_att=1.0, attention_layers=[(0.5, 1)], progress=False)
    with pytest.raises(ValueError, match="empty"):
        distill(teacher, student, batch, steps=1, alpha_att=1.0, attention_layers=[], progress=False)
    with pytest.raises(ValueError, match="alpha_att must be >= 0"):
        distill(teacher, student, batch, steps=1, alpha_att=-1.0, progress=False)
    # unused (no relation term): the map is not read
    distill(teacher, student, batch, steps=1, attention_layers=[(9, 9)], progress=False)


def test_distill_logs_the_accuracy_at_mask_positions_only():
    torch.manual_seed(0)
    teacher = BertForPreTraining(_tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    student = student_from_teacher(teacher, [0, 2])
    ids = torch.tensor([[2, 7, 4, 9, 4, 11, 3]])  # 4 plays [MASK]; positions 3 and 5 are selected but shown
    labels = torch.tensor([[-100, -100, 8, 9, 12, 11, -100]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    with torch.no_grad():
        top = student.eval()(ids, batch["attention_mask"], labels=labels).logits.argmax(-1)  # (4,) in order
    hit = (top == labels[labels != -100]).float()
    hist = distill(teacher, student, [batch], steps=1, mask_token_id=4, log_every=1, progress=False)
    assert hist["mask_accuracy"] == [pytest.approx(float(hit[[0, 2]].mean()))]
    assert hist["mlm_accuracy"] == [pytest.approx(float(hit.mean()))]
    assert "mask_accuracy" not in distill(teacher, student, [batch], steps=1, progress=False)
