"""WordPiece tokenizer trained on the wiki sample: ids, round trip, [UNK] coverage, caching."""

import os

import pytest

from bertbook import tokenizer as tk
from bertbook.data import load_wiki_corpus
from bertbook.tokenizer import get_pretraining_tokenizer, load_tokenizer, save_tokenizer, train_wordpiece


@pytest.fixture(scope="session")
def wiki():
    return load_wiki_corpus()


@pytest.fixture(scope="session")
def tok(wiki):
    return train_wordpiece(wiki["train"]["text"], vocab_size=8192)


def test_vocab_and_special_ids(tok):
    assert len(tok) == tok.vocab_size == 8192
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id] == [0, 1, 2, 3, 4]
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert sorted(tok.all_special_ids) == [0, 1, 2, 3, 4]


def test_pair_template_and_token_types(tok):
    enc = tok("The cat sat.", "It was happy.")
    ids, types = enc["input_ids"], enc["token_type_ids"]
    assert ids[0] == 2 and ids[-1] == 3 and ids.count(3) == 2
    first_sep = ids.index(3)
    assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    assert tok.tokenize("The WORLD") == tok.tokenize("the world") == ["the", "world"]  # uncased


def test_no_unk_on_heldout_english(tok, wiki):
    """[UNK] only for scripts outside the covered alphabet (Armenian, Georgian, ...).

    The held-out "Alphabet" article quotes a few such words; everything in Latin,
    Greek, Cyrillic or IPA script tokenizes without [UNK].
    """
    texts = list(wiki["validation"]["text"])
    enc = tok(texts, add_special_tokens=False)
    n_tokens = n_unk = 0
    for j, ids in enumerate(enc["input_ids"]):
        n_tokens += len(ids)
        for k, i in enumerate(ids):
            if i == tok.unk_token_id:
                n_unk += 1
                start, end = enc.token_to_chars(j, k)
                span = texts[j][start:end]
                assert any(ord(c) >= 0x530 for c in span), span  # beyond Cyrillic
    assert n_tokens > 30_000
    assert n_unk / n_tokens < 1e-3
    train_ids = tok(list(wiki["train"]["text"]), add_special_tokens=False)["input_ids"]
    assert sum(i == tok.unk_token_id for ids in train_ids for i in ids) == 0
    assert tok.unk_token_id not in tok("Naïve café owners in São Paulo — “Ωμέγα”, ɪpa, 3.5 km².")["input_ids"]


def test_save_load_round_trip(tok, wiki, tmp_path):
    save_tokenizer(tok, str(tmp_path))
    again = load_tokenizer(str(tmp_path))
    assert len(again) == 8192 and again.get_vocab() == tok.get_vocab()
    sentences = [s for doc in wiki["validation"]["sentences"] for s in doc][:200]
    assert again(sentences, sentences[::-1])["input_ids"] == tok(sentences, sentences[::-1])["input_ids"]
    s = sentences[0]
    decoded = again.decode(again(s)["input_ids"], skip_special_tokens=True)
    assert decoded.replace(" ", "") == tok.backend_tokenizer.normalizer.normalize_str(s).replace(" ", "")


def test_load_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_tokenizer(str(tmp_path))


def test_pretraining_tokenizer_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("BERTBOOK_CACHE", str(tmp_path))
    first = get_pretraining_tokenizer()
    dirs = [d for d in os.listdir(tmp_path) if d.startswith("tokenizer-")]
    assert len(dirs) == 1 and not [d for d in os.listdir(tmp_path) if d.startswith(".")]
    # the second call must load from disk, not train
    monkeypatch.setattr(tk, "train_wordpiece", lambda *a, **k: pytest.fail("retrained"))
    second = get_pretraining_tokenizer()
    assert len(second) == 8192 and second.get_vocab() == first.get_vocab()


@pytest.mark.parametrize("content", [b"{not json", b"", b'{"version": "1.0"}'])
def test_a_corrupt_cached_tokenizer_is_reported_removed_and_rebuilt(monkeypatch, tmp_path, content):
    import warnings

    from bertbook.cache import CorruptCheckpointWarning

    monkeypatch.setenv("BERTBOOK_CACHE", str(tmp_path))
    first = get_pretraining_tokenizer()
    (folder,) = [d for d in os.listdir(tmp_path) if d.startswith("tokenizer-")]
    with open(tmp_path / folder / "tokenizer.json", "wb") as f:
        f.write(content)
    with pytest.raises(tk.CorruptTokenizerError, match=folder):  # named, not a bare JSONDecodeError
        load_tokenizer(str(tmp_path / folder))
    stale = tmp_path / (tk.TMP_PREFIX + "killed")  # what a writer killed long ago left
    stale.mkdir()
    old = os.stat(stale).st_mtime - 2 * 24 * 3600
    os.utime(stale, (old, old))
    with pytest.warns(CorruptCheckpointWarning, match=f"corrupt tokenizer .*{folder}"):
        again = get_pretraining_tokenizer()
    assert again.get_vocab() == first.get_vocab()
    assert sorted(os.listdir(tmp_path)) == [folder]  # rebuilt in place, nothing left aside or stale
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_pretraining_tokenizer()  # intact again
