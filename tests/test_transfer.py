"""The transfer set (chapter 7): unlabelled training reviews on which the student learns
the teacher's soft labels alone. Their labels are never read, they overlap no other set, an
unlabelled batch's loss is the KL term alone, and bad sizes are refused."""
import math

import pytest
import torch

import bertbook.data
from bertbook import pipeline, pipeline_data
from bertbook.configs import FinetuneSettings, get_scale_config
from bertbook.distill import classification_kd_loss, soft_target_loss
from bertbook.finetune import batch_loss, encode_texts, finetune, make_batches


def test_unlabelled_batch_loss_is_the_kl_term_alone():
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]])
    t = torch.tensor([[2.0, 0.0], [1.0, 3.0], [0.5, 0.5]])
    T = 2.0
    by_hand = 0.0
    for si, ti in zip(s.tolist(), t.tolist()):  # T² · KL(softmax(t/T) ‖ softmax(s/T)), row mean
        zs = math.log(sum(math.exp(x / T) for x in si))
        zt = math.log(sum(math.exp(x / T) for x in ti))
        by_hand += sum(math.exp(b / T - zt) * ((b / T - zt) - (a / T - zs)) for a, b in zip(si, ti))
    by_hand *= T ** 2 / len(s)
    unlabelled = {"input_ids": torch.ones(3, 4, dtype=torch.long), "index": torch.arange(3)}
    loss = batch_loss(s, unlabelled, t, alpha=0.1, temperature=T)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert torch.equal(loss, soft_target_loss(s, t, T))  # no CE, no (1 − α) weight: nothing to share it with
    # pseudo-labels: cross-entropy on the teacher's argmax [0, 1, 0]
    ce = -sum(row[k] - math.log(sum(math.exp(x) for x in row)) for row, k in zip(s.tolist(), (0, 1, 0))) / 3
    assert batch_loss(s, unlabelled, t, 0.1, T, pseudo_labels=True).item() == pytest.approx(ce, rel=1e-6)
    # a labelled batch keeps today's loss
    labelled = {**unlabelled, "labels": torch.tensor([1, 0, 0])}
    assert torch.equal(batch_loss(s, labelled, t, 0.1, T), classification_kd_loss(s, t, labelled["labels"], 0.1, T))
    with pytest.raises(ValueError, match="teacher's logits"):
        batch_loss(s, unlabelled)


def test_finetune_refuses_labelled_transfer_batches_and_a_transfer_set_without_teacher():
    from bertbook.bert import BertConfig
    from bertbook.distilbert import DistilBertForSequenceClassification

    model = DistilBertForSequenceClassification(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1,
                                                           num_attention_heads=2, intermediate_size=16,
                                                           max_position_embeddings=8, num_labels=2))
    ids = [[1, 5, 2], [1, 6, 7, 2], [1, 8, 2], [1, 9, 9, 2]]
    train = make_batches(ids, [0, 1, 0, 1], batch_size=2)
    with pytest.raises(ValueError, match="must not carry labels"):
        finetune(model, train, transfer_batches=make_batches(ids, [0, 1, 0, 1], batch_size=2), progress=False)
    transfer = make_batches(ids, None, batch_size=2)
    with pytest.raises(ValueError, match="need a teacher"):
        finetune(model, train, transfer_batches=transfer, progress=False)
    with pytest.raises(ValueError, match=r"transfer_logits \(3, 2\) do not cover 4"):
        finetune(model, train, teacher_logits=torch.zeros(4, 2), transfer_batches=transfer,
                 transfer_logits=torch.zeros(3, 2), progress=False)
    # the mixed stream: 2 labelled + 2 transfer batches per epoch
    hist = finetune(model, train, epochs=2, teacher_logits=torch.randn(4, 2), transfer_batches=transfer,
                    transfer_logits=torch.randn(4, 2), log_every=1, progress=False)
    assert hist["step"] == list(range(1, 9))
    assert sum(math.isnan(a) for a in hist["accuracy"]) == 4  # steps on a transfer batch have no labels


def test_transfer_size_and_bad_sizes():
    size = pipeline_data.transfer_size
    assert size(FinetuneSettings(), 10202) == 6202  # cpu: None is every review after the 4,000 labelled ones
    assert size(FinetuneSettings(transfer_examples=0), 10202) == 0
    assert size(FinetuneSettings(transfer_examples=6202), 10202) == 6202
    assert size(FinetuneSettings(train_examples=None), 10202) == 0  # gpu: every review is labelled
    with pytest.raises(ValueError, match="got -1"):
        size(FinetuneSettings(transfer_examples=-1), 10202)
    with pytest.raises(ValueError, match="transfer_examples=6203, but only 6202"):
        size(FinetuneSettings(transfer_examples=6203), 10202)
    with pytest.raises(ValueError, match="transfer_examples=1, but only 0"):
        size(FinetuneSettings(train_examples=None, transfer_examples=1), 10202)
    with pytest.raises(TypeError, match="int or None"):
        size(FinetuneSettings(transfer_examples=1.5), 10202)
    with pytest.raises(ValueError, match="got -3"):  # through the pipeline, before anything is trained
        pipeline.transfer_data(get_scale_config("tiny", finetune__transfer_examples=-3))
    with pytest.raises(ValueError, match="transfer_examples=20000"):
        pipeline.transfer_student(get_scale_config("tiny", finetune__transfer_examples=20000), "/nonexistent")


@pytest.mark.parametrize("scale", ["tiny", "cpu"])
def test_transfer_set_overlaps_no_other_set(scale):
    cfg = get_scale_config(scale)
    f = cfg.finetune
    rt = bertbook.data.load_rotten_tomatoes()
    transfer = pipeline.transfer_data(cfg)
    n = pipeline_data.transfer_size(f, len(rt["train"]))
    assert len(transfer.texts) == n == (48 if scale == "tiny" else 6202)
    assert transfer.texts == list(rt["train"]["text"])[f.train_examples:f.train_examples + n]
    others = {"labelled": rt["train"]["text"][:f.train_examples], "validation": rt["validation"]["text"],
              "test": rt["test"]["text"]}
    for name, texts in others.items():
        assert not set(transfer.texts) & set(texts), name
    assert len(set(transfer.texts)) == n
    # the batches are the encoded texts, every one once, and carry no labels
    assert all(set(b) == {"input_ids", "attention_mask", "index"} for b in transfer.batches)
    index = torch.cat([b["index"] for b in transfer.batches])
    assert sorted(index.tolist()) == list(range(n))
    if scale == "tiny":
        tok = pipeline.classification_data(cfg).tokenizer
        ids = encode_texts(transfer.texts, tok, f.max_length)
        for b in transfer.batches:
            for row, i, m in zip(b["input_ids"], b["index"].tolist(), b["attention_mask"]):
                assert row[m.bool()].tolist() == ids[i]
    smaller = pipeline.transfer_data(get_scale_config(scale, finetune__transfer_examples=n // 2))
    assert smaller.texts == transfer.texts[:n // 2]  # a curve's smaller sets are nested in the larger


def test_transfer_labels_are_never_read(tmp_path, monkeypatch):
    """Flip the label of every transfer review in the source data and train everything again from
    an empty cache: the teacher, its logits and both transfer students come out bit-identical."""
    cfg = get_scale_config("tiny")
    n_labelled = cfg.finetune.train_examples

    def train_all(cache_dir):
        teacher, _ = pipeline.finetuned_teacher(cfg, cache_dir, progress=False)
        logits, _ = pipeline.teacher_logits(cfg, cache_dir, progress=False)
        soft, soft_info = pipeline.transfer_student(cfg, cache_dir, progress=False)
        hard, hard_info = pipeline.transfer_student(cfg, cache_dir, pseudo_labels=True, progress=False)
        assert not soft_info["cached"] and not hard_info["cached"]
        return {"teacher": teacher.state_dict(), "logits": logits, "transfer": soft.state_dict(),
                "pseudo": hard.state_dict()}, soft_info["key"]

    original, key = train_all(str(tmp_path / "original"))
    real = bertbook.data.load_rotten_tomatoes
    flipped = {}

    def scrambled(*args, **kwargs):
        rt = real(*args, **kwargs)
        rt["train"] = rt["train"].map(lambda row, i: {"label": row["label"] if i < n_labelled else 1 - row["label"]},
                                      with_indices=True)
        flipped["rows"] = sum(a != b for a, b in zip(real(*args, **kwargs)["train"]["label"], rt["train"]["label"]))
        return rt

    monkeypatch.setattr(bertbook.data, "load_rotten_tomatoes", scrambled)
    monkeypatch.setattr(pipeline_data, "_MEMO", {"minilm": pipeline_data.minilm()})  # the data is read again
    again, scrambled_key = train_all(str(tmp_path / "scrambled"))
    assert flipped["rows"] == 10202 - n_labelled  # every transfer review's label (and the unused rest) flipped
    assert scrambled_key != key  # the data's fingerprint changed, so nothing came from a cache
    for stage in original:
        for name, tensor in original[stage].items():
            assert torch.equal(tensor, again[stage][name]), (stage, name)


def test_no_transfer_set_when_every_review_is_labelled():
    # gpu scale (train_examples=None): no review is left; datasets' select() raised an IndexError there.
    transfer = pipeline.transfer_data(get_scale_config("tiny", finetune__train_examples=None,
                                                 finetune__transfer_examples=None))
    assert (transfer.texts, transfer.batches, transfer.start) == ([], [], 10202)
