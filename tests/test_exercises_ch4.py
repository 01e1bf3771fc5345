"""The chapter-4 checks of bertbook.exercises (masking and NSP pairs): right answers pass, typical
wrong answers fail with a message that says what went wrong and how to fix it."""
import random

import pytest
import torch

from bertbook import exercises as ex


# --- right answers, written independently of the package ----------------------------------------

def mask_tokens(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability=0.15):
    special = torch.tensor(special_token_ids)
    selected = (torch.rand(input_ids.shape) < mlm_probability) & ~torch.isin(input_ids, special)
    labels = input_ids.masked_fill(~selected, -100)
    action = torch.rand(input_ids.shape)
    ordinary = torch.tensor([t for t in range(vocab_size) if t not in set(special_token_ids)])
    random_ids = ordinary[torch.randint(len(ordinary), input_ids.shape)]
    masked = input_ids.clone()
    masked[selected & (action < 0.8)] = mask_token_id
    swap = selected & (action >= 0.8) & (action < 0.9)
    masked[swap] = random_ids[swap]
    return masked, labels


def sample_nsp_pair(documents, d, i, rng):
    if rng.random() < 0.5:
        j = rng.choice([k for k in range(len(documents)) if k != d])
        return documents[d][i], rng.choice(documents[j]), 1
    return documents[d][i], documents[d][i + 1], 0


# --- typical mistakes ---------------------------------------------------------------------------

def mask_all(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability=0.15):
    """One random number for both decisions: every selected token becomes [MASK]."""
    u = torch.rand(input_ids.shape)
    selected = (u < mlm_probability) & ~torch.isin(input_ids, torch.tensor(special_token_ids))
    masked = input_ids.masked_fill(selected & (u < 0.8), mask_token_id)
    return masked, input_ids.masked_fill(~selected, -100)


def mask_with_specials(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability=0.15):
    """Forgets that [CLS], [SEP] and [PAD] must never be selected."""
    return mask_tokens(input_ids, vocab_size, mask_token_id, [], mlm_probability)


def mask_labels_masked(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability=0.15):
    masked, labels = mask_tokens(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability)
    return masked, torch.where(labels != -100, masked, labels)


def mask_labels_zero(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability=0.15):
    masked, labels = mask_tokens(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability)
    return masked, labels.clamp(min=0)


def mask_specials_0_to_4(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability=0.15):
    """Hard-codes our tokenizer's special ids 0-4."""
    return mask_tokens(input_ids, vocab_size, mask_token_id, [0, 1, 2, 3, 4], mlm_probability)


def mask_random_any(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability=0.15):
    """Random replacements drawn from the whole vocabulary, special tokens included."""
    masked, labels = mask_tokens(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability)
    swap = (labels != -100) & (masked != mask_token_id) & (masked != input_ids)
    masked[swap] = torch.randint(vocab_size, input_ids.shape)[swap]
    return masked, labels


def mask_in_place(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability=0.15):
    masked, labels = mask_tokens(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability)
    input_ids.copy_(masked)
    return masked, labels


def mask_seeded(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability=0.15):
    torch.manual_seed(0)
    return mask_tokens(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability)


def mask_fixed_p(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability=0.15):
    return mask_tokens(input_ids, vocab_size, mask_token_id, special_token_ids, 0.15)


def mask_only_masked_labelled(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability=0.15):
    masked, labels = mask_tokens(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability)
    return masked, labels.masked_fill(masked != mask_token_id, -100)


def mask_everything_8010(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability=0.15):
    """80/10/10 applied to every non-special token, not only the selected ones."""
    masked, labels = mask_tokens(input_ids, vocab_size, mask_token_id, special_token_ids, 0.999)
    return masked, mask_tokens(input_ids, vocab_size, mask_token_id, special_token_ids, mlm_probability)[1]


def nsp_swapped(documents, d, i, rng):
    a, b, label = sample_nsp_pair(documents, d, i, rng)
    return a, b, 1 - label


def nsp_same_doc(documents, d, i, rng):
    if rng.random() < 0.5:
        return documents[d][i], rng.choice(rng.choice(documents)), 1
    return documents[d][i], documents[d][i + 1], 0


def nsp_global_random(documents, d, i, rng):
    return sample_nsp_pair(documents, d, i, random)


def nsp_mostly_random(documents, d, i, rng):
    if rng.random() < 0.8:
        j = rng.choice([k for k in range(len(documents)) if k != d])
        return documents[d][i], rng.choice(documents[j]), 1
    return documents[d][i], documents[d][i + 1], 0


def nsp_first_sentence(documents, d, i, rng):
    if rng.random() < 0.5:
        j = rng.choice([k for k in range(len(documents)) if k != d])
        return documents[d][i], documents[j][0], 1
    return documents[d][i], documents[d][i + 1], 0


def nsp_next_doc(documents, d, i, rng):
    if rng.random() < 0.5:
        j = (d + 1) % len(documents)
        return documents[d][i], rng.choice(documents[j]), 1
    return documents[d][i], documents[d][i + 1], 0


def nsp_swapped_by_hand(documents, d, i, rng):
    """Labels written the other way round (1 = continuation), random B drawn first."""
    if rng.random() < 0.5:
        return documents[d][i], documents[d][i + 1], 1
    j = rng.choice([k for k in range(len(documents)) if k != d])
    return documents[d][i], rng.choice(documents[j]), 0


def nsp_label0_random(documents, d, i, rng):
    """Label 0 with a random B half of the time: not a consistent swap."""
    a, b, label = sample_nsp_pair(documents, d, i, rng)
    return a, b, 0


def nsp_bool_label(documents, d, i, rng):
    a, b, label = sample_nsp_pair(documents, d, i, rng)
    return a, b, bool(label)


def not_yet(*args):
    raise NotImplementedError()


# --- tests --------------------------------------------------------------------------------------

def test_right_answers_pass(capsys):
    ex.check_mask_tokens(mask_tokens)
    ex.check_nsp_pair(sample_nsp_pair)
    out = capsys.readouterr().out
    assert "✓ check_mask_tokens: 5 cases passed" in out
    assert "✓ check_nsp_pair: 3 cases passed" in out


def test_the_package_passes_its_own_check(capsys):
    from bertbook.masking import mask_tokens as reference
    ex.check_mask_tokens(lambda ids, v, m, s, p=0.15: reference(ids, v, m, s, p))


def test_checks_do_not_touch_the_notebooks_random_stream():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ex.check_mask_tokens(mask_tokens)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("wrong, words", [
    (mask_all, ["share of the selected tokens replaced by [MASK]", "second, independent random number"]),
    (mask_with_specials, ["special token", "torch.isin"]),
    (mask_labels_masked, ["labels hold [MASK]", "ORIGINAL id"]),
    (mask_labels_zero, ["-100 (cross-entropy's ignore_index), not 0"]),
    (mask_specials_0_to_4, ["case 2 of 5", "do not assume the special ids are 0-4"]),
    (mask_random_any, ["random replacement is a special token"]),
    (mask_in_place, ["modified its input", "clone()"]),
    (mask_seeded, ["same mask twice", "do not set a seed"]),
    (mask_fixed_p, ["case 2 of 5", "probability mlm_probability"]),
    (mask_only_masked_labelled, ["only the [MASK]ed tokens were labelled"]),
    (mask_everything_8010, ["not selected (label -100) was changed", "applied to every token"]),
    (not_yet, ["not implemented yet"]),
])
def test_wrong_masking_fails_with_advice(wrong, words):
    with pytest.raises(ex.ExerciseFailed) as err:
        ex.check_mask_tokens(wrong)
    message = str(err.value)
    for w in words:
        assert w in message, message


@pytest.mark.parametrize("wrong, words", [
    (nsp_swapped, ["labels are swapped", "0 = B really follows A"]),
    (nsp_swapped_by_hand, ["labels are swapped", "wrong way round"]),
    (nsp_label0_random, ["label 0 means B is the sentence right after A"]),
    (nsp_same_doc, ["A's own document", "j != d"]),
    (nsp_global_random, ["same rng seed", "from the rng argument"]),
    (nsp_mostly_random, ["about half", "rng.random() < 0.5"]),
    (nsp_first_sentence, ["always the same sentence", "rng.choice(documents[j])"]),
    (nsp_next_doc, ["never gave a random B"]),
    (nsp_bool_label, ["a Python int"]),
    (not_yet, ["not implemented yet"]),
])
def test_wrong_nsp_fails_with_advice(wrong, words):
    with pytest.raises(ex.ExerciseFailed) as err:
        ex.check_nsp_pair(wrong)
    message = str(err.value)
    for w in words:
        assert w in message, message
