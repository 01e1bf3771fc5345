"""A BERT WordPiece tokenizer trained from scratch on the book's Wikipedia sample.

Built with the ``tokenizers`` library (fast, Rust) and wrapped as a
``transformers.BertTokenizerFast`` so it plugs into everything else.

Note: in transformers 5, ``BertTokenizer(vocab_file=...)`` silently ignores the
file and builds a 5-token vocabulary. We therefore never go through vocab.txt:
the whole pipeline is saved as ``tokenizer.json`` and reloaded with
``BertTokenizerFast.from_pretrained(local_dir)``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
from typing import Any, Iterable, Optional

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import WordPiece
from transformers import BertTokenizerFast

from .cache import cache_root, read_or_discard, remove_stale_temporaries

# Order fixes the ids: [PAD]=0 so that zero-initialised buffers are padding.
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
TOKENIZER_VERSION = 2  # bump when the training recipe changes: invalidates caches
TMP_PREFIX = ".tokenizer-tmp-"  # a tokenizer being written, before it is renamed into place


def _coverage_text(normalizer: normalizers.Normalizer) -> str:
    """One extra training "document" that puts every wanted character in the vocabulary.

    WordPiece maps a whole word to [UNK] if one character has no token, and a
    character needs two tokens: ``c`` (word start) and ``##c`` (inside a word).
    Writing each character doubled (``cc``) yields both. We cover printable ASCII,
    Latin-1 and Latin Extended, common punctuation and math symbols, Greek,
    Cyrillic and IPA, after normalisation (so accented letters collapse onto
    ASCII when lowercasing and cost nothing). Other scripts (Armenian, Georgian,
    Devanagari, ...) stay [UNK] unless the corpus itself has them.
    """
    ranges = [(0x21, 0x7F), (0xA1, 0x250), (0x250, 0x2E0), (0x370, 0x400), (0x400, 0x460)]
    chars = [chr(c) for lo, hi in ranges for c in range(lo, hi)]
    chars += list("\u2013\u2014\u2018\u2019\u201c\u201d\u2026\u2022\u20ac\u2032\u2033\u2212")
    chars += list("\u2248\u2260\u2264\u2265\u221a\u221e\u2192\u2190\u2211\u222b\u2202")
    normed = {ch for c in chars for ch in normalizer.normalize_str(c) if not ch.isspace()}
    return " ".join(c + c for c in sorted(normed))


def tokenizer_digest(tokenizer: Any) -> str:
    """sha256 (16 hex digits) of everything a fast tokenizer maps text with: its vocabulary,
    normaliser, pre-tokeniser, post-processor and special tokens (the backend's JSON). Two tokenizers
    with one digest give the same ids for every text, so a model trained on one fits the other."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"tokenizer_digest needs a fast (Rust-backed) tokenizer, got {type(tokenizer).__name__}")
    state = json.loads(backend.to_str())
    # Truncation and padding are per-call settings that the last call leaves behind, not the mapping.
    state.pop("truncation", None), state.pop("padding", None)
    blob = json.dumps([state, tokenizer.all_special_tokens], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_wordpiece(
    texts: Iterable[str], vocab_size: int = 8192, lowercase: bool = True
) -> BertTokenizerFast:
    """Train a BERT-style WordPiece tokenizer on ``texts``.

    Pipeline: BertNormalizer (clean, lowercase + strip accents like uncased BERT)
    -> BertPreTokenizer (split on whitespace and punctuation) -> WordPiece
    (``##`` continuation prefix) -> post-processor ``[CLS] A [SEP] B [SEP]`` with
    token_type_ids 0 for ``[CLS] A [SEP]`` and 1 for ``B [SEP]``.

    Returns:
        BertTokenizerFast with exactly ``vocab_size`` entries (if the corpus has
        enough distinct pieces) and ids [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4.
    """
    tok = Tokenizer(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    texts = list(itertools.chain(texts, [_coverage_text(tok.normalizer)]))
    # Determinism: the trainer numbers each "##c" piece when it first meets it while iterating a
    # Rust HashMap (randomly seeded per process), and it breaks ties between equally frequent
    # pairs by those numbers, so two trainings on the same text gave different vocabularies.
    # Registering every "##c" up front, in sorted order, fixes their ids; they are passed as
    # special tokens only to get them numbered first, and are made ordinary pieces again below.
    continuing = sorted({
        "##" + c
        for text in texts
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))
        for c in word[1:]
    })
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS + continuing,
        continuing_subword_prefix="##",
        show_progress=False,  # the Rust progress bar writes stray newlines into notebook outputs
    )
    tok.train_from_iterator(texts, trainer=trainer)
    state = json.loads(tok.to_str())
    state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] in SPECIAL_TOKENS]
    tok = Tokenizer.from_str(json.dumps(state))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", CLS_ID), ("[SEP]", SEP_ID)],
    )
    return BertTokenizerFast(
        tokenizer_object=tok,
        do_lower_case=lowercase,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )


def save_tokenizer(tokenizer: BertTokenizerFast, directory: str) -> str:
    """Save to a local directory (``tokenizer.json`` + config); returns the directory."""
    tokenizer.save_pretrained(directory)
    return directory


class CorruptTokenizerError(ValueError):
    """A saved tokenizer's files are there but cannot be read as a tokenizer."""


def load_tokenizer(directory: str) -> BertTokenizerFast:
    """Reload a tokenizer saved by :func:`save_tokenizer` (local files only). Files that cannot be
    read as a tokenizer (not JSON, truncated, ...) are a CorruptTokenizerError naming the folder."""
    if not os.path.isfile(os.path.join(directory, "tokenizer.json")):
        raise FileNotFoundError(f"no tokenizer.json in {directory!r}")
    try:
        tok = BertTokenizerFast.from_pretrained(directory, local_files_only=True)
    except OSError:  # not the files' fault (permission, ...): as it is
        raise
    except Exception as e:  # the tokenizers library raises plain Exceptions for a malformed file
        raise CorruptTokenizerError(f"the tokenizer in {directory!r} cannot be read "
                                    f"({type(e).__name__}: {e})") from e
    if len(tok) <= len(SPECIAL_TOKENS):  # the transformers-5 silent fallback, see module doc
        raise RuntimeError(f"tokenizer in {directory!r} reloaded with only {len(tok)} tokens")
    return tok


def get_pretraining_tokenizer(
    cache_dir: Optional[str] = None, vocab_size: int = 8192, lowercase: bool = True,
    corpus: str = "gensim-enwiki",
) -> BertTokenizerFast:
    """The book's tokenizer: WordPiece trained once on the train split of the wiki ``corpus`` (a
    name of ``bertbook.data.WIKI_CORPORA``, as ``PretrainSettings.corpus``), then cached.

    Cached under ``<cache>/tokenizer-<hash>``, the hash covering the corpus content,
    ``vocab_size``, ``lowercase`` and the recipe version. Written to a temporary
    directory and renamed into place, so a crash never leaves a half-written cache.
    A cached tokenizer that cannot be read is reported (CorruptCheckpointWarning), removed
    and trained again, as a corrupt checkpoint is.
    """
    from .data import fingerprint, load_wiki_corpus

    train = load_wiki_corpus(corpus)["train"]
    key = f"{fingerprint(train)}-{vocab_size}-{int(lowercase)}-v{TOKENIZER_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = cache_root(cache_dir)
    final = os.path.join(root, f"tokenizer-{digest}")
    if os.path.isfile(os.path.join(final, "tokenizer.json")):
        found = read_or_discard(final, load_tokenizer, (CorruptTokenizerError,), "tokenizer")
        if found is not None:
            return found

    tokenizer = train_wordpiece(train["text"], vocab_size=vocab_size, lowercase=lowercase)
    os.makedirs(root, exist_ok=True)
    remove_stale_temporaries(root, TMP_PREFIX)
    tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=root)
    try:
        save_tokenizer(tokenizer, tmp)
        try:
            os.rename(tmp, final)  # atomic on POSIX within one file system
        except OSError:
            # another process won the race: use its copy
            if not os.path.isfile(os.path.join(final, "tokenizer.json")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_tokenizer(final)
