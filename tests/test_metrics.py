"""The pretraining metrics cannot hide copying: accuracy per kind of position ([MASK], random,
unchanged) and the unigram baseline at the same positions, on hand-built batches."""
import pytest
import torch
import torch.nn.functional as F

from bertbook.bert import ModelOutput
from bertbook.masking import PretrainingCollator
from bertbook.pretrain import constant_guess_accuracy, evaluate_pretraining, position_kinds, unigram_baseline

PAD, UNK, CLS, SEP, MASK = range(5)
THE = 7
V = 50


class CopyOrThe(torch.nn.Module):
    """Predicts the token it sees, and "the" wherever it sees [MASK]: learned nothing but copying."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # evaluate_pretraining reads the device off it

    def forward(self, input_ids, attention_mask=None, labels=None):
        selected = labels != -100
        guess = input_ids[selected].clone()
        guess[guess == MASK] = THE
        logits = F.one_hot(guess, V).float() * 10.0  # (N, V)
        return ModelOutput(logits=logits, mlm_loss=F.cross_entropy(logits, labels[selected]))


def hand_batch():
    # Row 0: [MASK] over "the" (right by luck), [MASK] over 9, unchanged 11, random 12 -> 13.
    # Row 1: [MASK] over 20, [MASK] over "the", unchanged "the", random 21 -> 22, padding.
    input_ids = torch.tensor([[CLS, MASK, MASK, 11, 13, SEP],
                              [CLS, MASK, MASK, THE, 22, PAD]])
    labels = torch.tensor([[-100, THE, 9, 11, 12, -100],
                           [-100, 20, THE, THE, 21, -100]])
    return {"input_ids": input_ids, "attention_mask": (input_ids != PAD).long(), "labels": labels}


def test_position_kinds_split_the_labelled_positions():
    kinds = position_kinds(hand_batch(), MASK)
    assert kinds["mask"].tolist() == [True, True, False, False, True, True, False, False]
    assert kinds["unchanged"].tolist() == [False, False, True, False, False, False, True, False]
    assert kinds["random"].tolist() == [False, False, False, True, False, False, False, True]


def test_a_copying_model_scores_the_unigram_rate_at_mask_and_everything_where_it_can_copy():
    batch = hand_batch()
    ev = evaluate_pretraining(CopyOrThe(), [batch], mask_token_id=MASK)
    unigram = constant_guess_accuracy(THE, [batch], MASK)
    assert ev["mask_n"] == 4 and ev["unchanged_n"] == 2 and ev["random_n"] == 2
    assert ev["mask_accuracy"] == unigram["mask"] == 0.5  # "the" is the answer at 2 of 4 [MASK]s
    assert ev["unchanged_accuracy"] == 1.0  # copies
    assert ev["random_accuracy"] == 0.0  # copies the wrong token
    assert ev["mlm_accuracy"] == 4 / 8  # the old headline, flattered by copying
    assert unigram["all"] == 3 / 8  # "always the" at every selected position
    top, acc = unigram_baseline([[THE, THE, 9], [THE, 11]], [batch], special_ids=[CLS, SEP],
                                mask_token_id=MASK)
    assert (top, acc) == (THE, 0.5)
    assert unigram_baseline([[THE, THE, 9]], [batch])[1] == 3 / 8
    # The losses per kind add up to the overall loss (weighted by positions).
    total = sum(ev[f"{k}_loss"] * ev[f"{k}_n"] for k in ("mask", "random", "unchanged"))
    assert total / 8 == pytest.approx(ev["mlm_loss"])


def test_without_mask_token_id_only_the_overall_metrics():
    ev = evaluate_pretraining(CopyOrThe(), [hand_batch()])
    assert set(ev) == {"mlm_accuracy", "mlm_loss"}


def test_the_collator_s_positions_split_80_10_10():
    torch.manual_seed(0)
    examples = [{"input_ids": [CLS] + torch.randint(5, V, (60,)).tolist() + [SEP],
                 "token_type_ids": [0] * 62, "next_sentence_label": 0} for _ in range(200)]
    batch = PretrainingCollator(V, PAD, MASK, [PAD, UNK, CLS, SEP, MASK], seed=3)(examples)
    kinds = position_kinds(batch, MASK)
    n = int((batch["labels"] != -100).sum())
    assert abs(kinds["mask"].sum().item() / n - 0.8) < 0.03
    assert abs(kinds["random"].sum().item() / n - 0.1) < 0.02
    assert abs(kinds["unchanged"].sum().item() / n - 0.1) < 0.02


def test_measure_latency_leaves_the_models_as_they_were():
    from bertbook.bert import BertConfig, BertForSequenceClassification
    from bertbook.report import measure_latency

    cfg = BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=8)
    training, evaluating = BertForSequenceClassification(cfg).train(), BertForSequenceClassification(cfg).eval()
    lat = measure_latency({"a": training, "b": evaluating}, batch_size=2, seq_len=4, min_run_time=0.01, rounds=2)
    assert set(lat) == {"a", "b"} and all(t > 0 for t in lat.values())
    assert training.training and not evaluating.training  # timed in eval mode, then given back in its own
    with pytest.raises(ValueError, match="no models"):
        measure_latency({})
    with pytest.raises(ValueError, match="rounds"):
        measure_latency({"b": evaluating}, rounds=0)
