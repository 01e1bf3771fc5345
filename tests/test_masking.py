"""MLM masking statistics, NSP pair sampling and the pretraining collator."""

import statistics

import pytest
import torch

from bertbook.data import load_wiki_corpus
from bertbook.masking import (
    IGNORE_INDEX,
    PretrainingCollator,
    PretrainingDataset,
    make_nsp_pairs,
    mask_tokens,
    tokenize_documents,
)
from bertbook.tokenizer import train_wordpiece

PAD, UNK, CLS, SEP, MASK = range(5)
SPECIAL = [PAD, UNK, CLS, SEP, MASK]
V = 8192


@pytest.fixture(scope="session")
def wiki():
    return load_wiki_corpus()


@pytest.fixture(scope="session")
def tok(wiki):
    return train_wordpiece(wiki["train"]["text"], vocab_size=V)


@pytest.fixture(scope="session")
def docs(wiki, tok):
    return tokenize_documents(list(wiki["train"]["sentences"]), tok)


@pytest.fixture(scope="session")
def pairs(docs):
    return make_nsp_pairs(docs, max_seq_len=128, seed=0)


def _fake_batch(B=1500, L=128, seed=0):
    """(B, L) ids with [CLS] ... [SEP] ... [SEP] and a random amount of padding."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(5, V, (B, L), generator=g)
    lengths = torch.randint(L // 2, L + 1, (B,), generator=g)
    for i, n in enumerate(lengths.tolist()):
        x[i, 0], x[i, n // 2], x[i, n - 1] = CLS, SEP, SEP
        x[i, n:] = PAD
    return x


def test_mask_statistics():
    x = _fake_batch()  # >= 100k eligible tokens
    masked, labels = mask_tokens(x, V, MASK, SPECIAL, generator=torch.Generator().manual_seed(1))
    eligible = x >= 5
    selected = labels != IGNORE_INDEX
    assert eligible.sum() > 100_000
    assert not (selected & ~eligible).any()  # never [CLS], [SEP], [PAD]
    assert abs(selected.sum() / eligible.sum() - 0.15) < 0.01
    assert torch.equal(labels[selected], x[selected])
    assert (labels[~selected] == IGNORE_INDEX).all()
    assert torch.equal(masked[~selected], x[~selected])  # untouched outside the selection
    n = selected.sum()
    to_mask = (masked[selected] == MASK).sum() / n
    kept = (masked[selected] == x[selected]).sum() / n
    rand = 1 - to_mask - kept
    assert abs(to_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.02 and abs(rand - 0.1) < 0.02
    replaced = masked[selected & (masked != MASK) & (masked != x)]
    assert (replaced >= 5).all() and (replaced < V).all()  # random ids are never special


def test_mask_is_dynamic_and_reproducible():
    x = _fake_batch(B=64)
    g = torch.Generator().manual_seed(0)
    a, la = mask_tokens(x, V, MASK, SPECIAL, generator=g)
    b, lb = mask_tokens(x, V, MASK, SPECIAL, generator=g)
    assert not torch.equal(la, lb)  # fresh masks each call
    c, lc = mask_tokens(x, V, MASK, SPECIAL, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, c) and torch.equal(la, lc)


def test_special_tokens_mask_respected():
    x = _fake_batch(B=64)
    protect = torch.zeros_like(x, dtype=torch.bool)
    protect[:, 1:10] = True
    _, labels = mask_tokens(x, V, MASK, SPECIAL, mlm_probability=0.9, special_tokens_mask=protect)
    assert (labels[:, 1:10] == IGNORE_INDEX).all()


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1, 1.5])
def test_bad_mlm_probability(p):
    with pytest.raises(ValueError, match="mlm_probability"):
        mask_tokens(_fake_batch(B=2), V, MASK, SPECIAL, mlm_probability=p)
    with pytest.raises(ValueError, match="mlm_probability"):
        PretrainingCollator(V, PAD, MASK, SPECIAL, mlm_probability=p)


def test_nsp_pairs(pairs):
    assert len(pairs) > 4000
    frac_random = statistics.mean(p.is_random_next for p in pairs)
    assert abs(frac_random - 0.5) < 0.03
    for p in pairs:
        assert p.tokens_a and p.tokens_b
        assert len(p.tokens_a) + len(p.tokens_b) + 3 <= 128
        assert p.next_sentence_label == int(p.is_random_next)  # HF: 1 = random
        if p.is_random_next:
            assert p.b_doc != p.doc
        else:
            assert p.b_doc == p.doc
    assert statistics.mean(len(p.tokens_a) + len(p.tokens_b) + 3 for p in pairs) > 100  # chunks fill the budget


def test_nsp_real_continuation_is_contiguous(docs):
    """For a real pair, A then B is a contiguous stretch of one document's tokens."""
    pairs = make_nsp_pairs(docs[:10], max_seq_len=512, seed=3)
    for p in pairs[:50]:
        if not p.is_random_next:
            stream = [t for s in docs[p.doc] for t in s]
            ab = p.tokens_a + p.tokens_b
            starts = [i for i, t in enumerate(stream) if t == ab[0]]
            assert any(stream[i:i + len(ab)] == ab for i in starts)


def test_nsp_from_strings_and_determinism(wiki, tok):
    sents = list(wiki["validation"]["sentences"])
    a = make_nsp_pairs(sents, tok, max_seq_len=64, seed=1)
    b = make_nsp_pairs(sents, tok, max_seq_len=64, seed=1)
    c = make_nsp_pairs(sents, tok, max_seq_len=64, seed=2)
    assert a == b and a != c
    assert max(len(p.tokens_a) + len(p.tokens_b) + 3 for p in a) <= 64


def test_nsp_bad_inputs(tok):
    with pytest.raises(ValueError, match="empty"):
        make_nsp_pairs([])
    with pytest.raises(ValueError, match="empty"):
        make_nsp_pairs([[], []])
    with pytest.raises(ValueError, match="2 non-empty documents"):
        make_nsp_pairs([[[5, 6], [7, 8]]])
    with pytest.raises(ValueError, match="tokenizer"):
        make_nsp_pairs([["A sentence."], ["Another one."]])
    with pytest.raises(ValueError, match="max_seq_len"):
        make_nsp_pairs([[[5]], [[6]]], max_seq_len=4)
    with pytest.raises(ValueError, match="empty"):
        PretrainingDataset([], CLS, SEP)


def test_collator_batches(pairs, tok):
    ds = PretrainingDataset(pairs, tok.cls_token_id, tok.sep_token_id)
    collate = PretrainingCollator.from_tokenizer(tok, seed=0)
    items = [ds[i] for i in range(32)]
    batch = collate(items)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "next_sentence_label"}
    B, L = batch["input_ids"].shape
    assert B == 32 and L == max(len(e["input_ids"]) for e in items)
    for key in ("token_type_ids", "attention_mask", "labels"):
        assert batch[key].shape == (B, L) and batch[key].dtype == torch.long
    assert batch["next_sentence_label"].tolist() == [p.next_sentence_label for p in pairs[:32]]
    for i, e in enumerate(items):
        n = len(e["input_ids"])
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (L - n)
        assert batch["token_type_ids"][i, :n].tolist() == e["token_type_ids"]
        orig = torch.tensor(e["input_ids"])
        assert orig[0] == CLS and orig[-1] == SEP
        assert (batch["input_ids"][i, n:] == PAD).all()
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all()  # padding never in the loss
        sel = batch["labels"][i, :n] != IGNORE_INDEX
        assert torch.equal(batch["labels"][i, :n][sel], orig[sel])
        assert not sel[(orig == CLS) | (orig == SEP)].any()
    # dynamic: the same items get new masks in the next batch
    assert not torch.equal(collate(items)["labels"], batch["labels"])


def test_collator_pad_to_and_empty(tok):
    collate = PretrainingCollator.from_tokenizer(tok, pad_to=16)
    item = {"input_ids": [CLS, 10, 11, SEP, 12, SEP], "token_type_ids": [0, 0, 0, 0, 1, 1], "next_sentence_label": 0}
    assert collate([item])["input_ids"].shape == (1, 16)
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    with pytest.raises(ValueError, match="pad_to"):
        PretrainingCollator.from_tokenizer(tok, pad_to=4)([item])


def test_dataloader_epoch_statistics(pairs, tok):
    """A full pass through a DataLoader: masking rates hold on real text (>100k tokens)."""
    ds = PretrainingDataset(pairs, tok.cls_token_id, tok.sep_token_id)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=64, shuffle=True, collate_fn=PretrainingCollator.from_tokenizer(tok, seed=0),
        generator=torch.Generator().manual_seed(0),
    )
    eligible = selected = nsp = n = 0
    for batch in loader:
        ids_special = torch.isin(batch["input_ids"], torch.tensor([PAD, CLS, SEP]))
        eligible += (batch["attention_mask"].bool() & ~ids_special).sum().item()
        selected += (batch["labels"] != IGNORE_INDEX).sum().item()
        nsp += batch["next_sentence_label"].sum().item()
        n += len(batch["next_sentence_label"])
    assert eligible > 100_000
    assert abs(selected / eligible - 0.15) < 0.01
    assert abs(nsp / n - 0.5) < 0.03
