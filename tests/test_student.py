import torch

import bertbook as bb
from bertbook.distilbert import default_student_layers


def test_default_layers():
    assert default_student_layers(12) == [0, 2, 4, 7, 9, 11]  # DistilBERT's choice
    assert len(default_student_layers(6)) == 3 and default_student_layers(6)[0] == 0
    assert default_student_layers(1) == [0]


def test_student_copies_the_teacher():
    cfg = bb.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    teacher = bb.BertForPreTraining(cfg).eval()
    student = bb.student_from_teacher(teacher, layers=[1, 3]).eval()
    assert isinstance(student, bb.DistilBertForMaskedLM) and student.config.num_hidden_layers == 2
    assert torch.equal(student.distilbert.encoder.layers[1].ffn.fc1.weight, teacher.bert.encoder.layers[3].ffn.fc1.weight)
    assert torch.equal(student.mlm.bias, teacher.mlm.bias)
    # Segment 0 is folded into the positions: single-segment embeddings are identical.
    ids = torch.randint(1, 60, (2, 7))
    with torch.no_grad():
        assert torch.allclose(student.distilbert.embeddings(ids), teacher.bert.embeddings(ids), atol=1e-6)
    # A student built from all layers is the teacher itself (for single-segment input).
    full = bb.student_from_teacher(teacher, layers=[0, 1, 2, 3]).eval()
    with torch.no_grad():
        assert torch.allclose(full(ids).logits, teacher(ids).logits, atol=1e-5)
    assert student.num_parameters() < teacher.num_parameters()


def test_classification_teacher_gives_classification_student():
    cfg = bb.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, num_labels=3)
    student = bb.student_from_teacher(bb.BertForSequenceClassification(cfg))
    assert isinstance(student, bb.DistilBertForSequenceClassification)
    assert student(torch.randint(0, 60, (2, 5))).logits.shape == (2, 3)


def test_pre_norm_encoder_runs_and_trains():
    cfg = bb.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, pre_norm=True)
    model = bb.BertForPreTraining(cfg)
    ids = torch.randint(5, 60, (2, 6))
    out = model(ids, labels=ids, next_sentence_label=torch.tensor([0, 1]))
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.bert.encoder.final_norm.weight.grad is not None


def test_classifier_from_pretrained_pools_like_the_config_by_default():
    from bertbook.finetune import classifier_from_pretrained

    cfg = bb.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    for body in (bb.BertModel(cfg), bb.DistilBertModel(cfg)):
        assert classifier_from_pretrained(body).config.classifier_pooling == bb.BertConfig().classifier_pooling == "cls"
        assert body.config.num_labels == 2 and body.config.classifier_pooling == "cls"  # the source config untouched
        assert classifier_from_pretrained(body, 3, "mean").config.num_labels == 3


def test_a_changed_config_is_validated(tmp_path):
    import pytest

    from bertbook import pipeline
    from bertbook.configs import get_scale_config

    # The random-init control built its config by setting fields by hand: a bad pooling was not
    # checked, and pool() treats anything but "cls" as the mean.
    with pytest.raises(ValueError, match="classifier_pooling must be 'cls' or 'mean', got 'max'"):
        pipeline.random_init_classifier(get_scale_config("tiny", finetune__pooling="max"), str(tmp_path), progress=False)
