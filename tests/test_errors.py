"""Bad input gets a clear error that names the problem."""
import pytest
import torch

import bertbook as bb


def config(**kw):
    base = dict(vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                intermediate_size=32, max_position_embeddings=8)
    base.update(kw)
    return bb.BertConfig(**base)


def test_hidden_not_divisible_by_heads():
    with pytest.raises(ValueError, match="divisible"):
        config(hidden_size=18, num_attention_heads=4)


def test_config_types():
    with pytest.raises(TypeError, match="num_hidden_layers must be an int"):
        config(num_hidden_layers=2.5)
    with pytest.raises(ValueError, match="vocab_size must be positive"):
        config(vocab_size=0)


def test_sequence_longer_than_max_positions():
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        bb.BertModel(config())(torch.ones(1, 9, dtype=torch.long))


def test_token_id_out_of_vocab():
    with pytest.raises(ValueError, match="vocab_size=50"):
        bb.BertModel(config())(torch.tensor([[1, 2, 50]]))
    with pytest.raises(TypeError, match="integer token ids"):
        bb.BertModel(config())(torch.rand(1, 3))


def test_mask_shape_mismatch():
    model = bb.BertForPreTraining(config())
    ids = torch.ones(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(ids, attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="token_type_ids has shape"):
        model(ids, token_type_ids=torch.zeros(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="labels have shape"):
        model(ids, labels=torch.zeros(2, 4, dtype=torch.long))


def test_state_dict_from_another_config():
    small, wide = bb.BertForPreTraining(config()), bb.BertForPreTraining(config(hidden_size=32))
    with pytest.raises(ValueError, match="another config"):
        small.load_state_dict(wide.state_dict())
    deeper = bb.BertForPreTraining(config(num_hidden_layers=5))
    with pytest.raises(ValueError, match="unexpected keys"):
        small.load_state_dict(deeper.state_dict())


def test_student_from_teacher_bad_layers():
    teacher = bb.BertForPreTraining(config())
    with pytest.raises(ValueError, match="out of range"):
        bb.student_from_teacher(teacher, layers=[0, 4])
    with pytest.raises(ValueError, match="deeper than"):
        bb.student_from_teacher(teacher, layers=[0, 1, 2, 3, 3])
    with pytest.raises(ValueError, match="strictly increasing"):
        bb.student_from_teacher(teacher, layers=[2, 1])
    with pytest.raises(TypeError, match="teacher must be"):
        bb.student_from_teacher(torch.nn.Linear(2, 2))


def test_pre_norm_has_no_transformers_twin():
    with pytest.raises(ValueError, match="pre-LN"):
        bb.to_transformers(bb.BertModel(config(pre_norm=True)))


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.uint8])
def test_narrow_integer_ids_are_refused_clearly(dtype):
    # nn.Embedding takes int64/int32 only: narrower ids must fail in the check, not inside it.
    with pytest.raises(TypeError, match="torch.long or torch.int.*convert with .long()"):
        bb.BertModel(config())(torch.tensor([[1, 2, 3]], dtype=dtype))
    bb.BertModel(config())(torch.tensor([[1, 2, 3]], dtype=torch.int))  # int32 works


def test_empty_batch_says_so():
    for model in (bb.BertModel(config()), bb.DistilBertModel(config())):
        with pytest.raises(ValueError, match="empty batch"):
            model(torch.zeros(0, 5, dtype=torch.long))


def test_token_type_id_out_of_range():
    with pytest.raises(ValueError, match=r"token_type_ids must lie in \[0, type_vocab_size=2\); got min 0, max 2"):
        bb.BertModel(config())(torch.tensor([[1, 2, 3]]), token_type_ids=torch.tensor([[0, 1, 2]]))


def test_forward_reads_no_value_back_under_compile():
    # int(ids.max()) in the input check would be a graph break (and a GPU sync on every forward):
    # fullgraph=True makes a graph break an error. backend="eager" traces without compiling code.
    model = bb.BertModel(config(num_hidden_layers=1)).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        out = compiled(ids, torch.ones_like(ids), torch.zeros_like(ids))
        assert torch.allclose(out.last_hidden_state, model(ids, torch.ones_like(ids)).last_hidden_state)


def test_distilbert_with_another_activation_does_not_convert():
    import transformers

    relu = transformers.DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32,
                                         max_position_embeddings=8, activation="relu")
    with pytest.raises(ValueError, match="exact GELU.*'relu'"):
        bb.from_transformers(transformers.DistilBertModel(relu))


@pytest.mark.parametrize("distil", [False, True])
def test_attn_implementation_through_the_public_argument(distil):
    assert bb.hf.hf_config(config(), distil, attn_implementation="eager")._attn_implementation == "eager"
    model = bb.DistilBertModel(config()) if distil else bb.BertModel(config())
    assert bb.to_transformers(model, attn_implementation="eager").config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="nonsense"):  # transformers' own check, at conversion time
        bb.to_transformers(model, attn_implementation="nonsense")


def test_prediction_logits_shape_is_documented_and_true():
    # Not Hugging Face's (B, L, V) by default: (N, V) with labels. A doc fix (the name is kept for the
    # notebooks), so this test states the documented shapes; it passed before the docs said so.
    assert "(N, V)" in bb.ModelOutput.prediction_logits.__doc__ and "(N, V)" in bb.ModelOutput.__doc__
    model = bb.BertForPreTraining(config()).eval()
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    labels = torch.full_like(ids, -100)
    labels[0, 1], labels[0, 3] = 5, 7
    assert model(ids, labels=labels).prediction_logits.shape == (2, 50)  # (N, V)
    assert model(ids, labels=labels, masked_positions_only=False).prediction_logits.shape == (1, 5, 50)
    assert model(ids).prediction_logits.shape == (1, 5, 50)


def test_student_layers_must_be_ints():
    teacher = bb.BertForPreTraining(config())
    for layers in ([0.5, 1.7], [0, 2.0], ["0"], [True, 2], 2):
        with pytest.raises(TypeError, match="layers must be"):
            bb.student_from_teacher(teacher, layers)
    import numpy as np
    assert bb.student_from_teacher(teacher, np.array([0, 3])).config.num_hidden_layers == 2


def test_config_overrides_are_type_checked():
    from bertbook.configs import get_scale_config

    for key, value in (("compile", "no"), ("pretrain__steps", "100"), ("finetune__alpha", True),
                       ("distill__layers", (0, 1.5)), ("latency_batch", (32,)), ("grad_accum", 2.0)):
        with pytest.raises(TypeError, match=f"config override {key} must be"):
            get_scale_config("tiny", **{key: value})
    with pytest.raises(ValueError, match="'name' is not an override"):
        get_scale_config("tiny", name="gpu")
    cfg = get_scale_config("tiny", distill__layers=None, finetune__alpha=1, scratch__attention_layers=[[0, 1]],
                           finetune__train_examples=None, compile=True)
    assert cfg.distill.layers is None and cfg.finetune.alpha == 1 and cfg.compile is True


def test_classification_labels_say_what_is_wrong():
    from bertbook.finetune import batch_loss, make_batches

    model = bb.BertForSequenceClassification(config())
    ids = torch.tensor([[2, 5, 3], [2, 6, 3]])
    with pytest.raises(TypeError, match="labels must be class indices of dtype torch.long"):
        model(ids, labels=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, num_labels=2\); got min 0, max 5"):
        model(ids, labels=torch.tensor([0, 5]))
    batch = {"input_ids": ids, "labels": torch.tensor([1, 2])}
    with pytest.raises(ValueError, match="num_labels=2"):
        batch_loss(torch.randn(2, 2), batch)
    with pytest.raises(ValueError, match="num_labels=2"):
        batch_loss(torch.randn(2, 2), batch, torch.randn(2, 2))
    with pytest.raises(TypeError, match=r"labels must be class indices \(ints\), got 0.7"):
        make_batches([[2, 5, 3], [2, 6, 3]], [0.7, 1])


def test_make_batches_batch_size_must_be_an_int():
    from bertbook.finetune import make_batches

    for size in (2.5, 0, True):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            make_batches([[2, 5, 3], [2, 6, 3]], [0, 1], batch_size=size)


def test_cli_grad_accum_that_is_no_number(capsys):
    from bertbook.__main__ import main

    with pytest.raises(SystemExit):
        main(["pretrain", "--grad-accum", "abc"])
    err = capsys.readouterr().err
    assert "--grad-accum: must be a positive integer, got 'abc'" in err and "_positive_int" not in err
