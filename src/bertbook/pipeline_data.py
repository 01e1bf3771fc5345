"""The data of the pipeline's stages, each built once per process: the Wikipedia sample's NSP
pairs and fixed evaluation batches (`pretraining_data`, chapters 4 to 6), Rotten Tomatoes encoded
with MiniLM's tokenizer (`classification_data`, chapter 7) and the unlabelled transfer set
(`transfer_data`), and MiniLM loaded once (`minilm`). `bertbook.pipeline` imports them:
`pipeline.classification_data` is this one. What it measures comes from `bertbook.metrics`, its
batches from `bertbook.batching`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from . import distributed as dist
from .configs import FinetuneSettings, as_scale_config
from .batching import encode_texts, make_batches
from .metrics import constant_guess_accuracy, evaluate_pretraining, most_frequent_token

_MEMO: Dict[str, Any] = {}  # data and tokenizers, loaded once per process


def _memo(key: str, make: Callable[[], Any]) -> Any:
    if key not in _MEMO:
        _MEMO[key] = make()
    return _MEMO[key]



@dataclass
class PretrainingData:
    """The tokenizer, the NSP pairs and the fixed evaluation batches for one tokenizer and corpus.

    `eval_batches`: the held-out pairs (the corpus' validation split), masked once (seed 1234).
    `train_eval_batches`: as many training pairs, masked once the same way, to show what a model
    memorised. `selection_batches`: pairs of the `selection_docs` training documents that nobody
    trains on, to choose settings on (empty if there are none). The unigram
    baseline always guesses `unigram_token`; `unigram_accuracy` is its accuracy over all selected
    held-out positions, `unigram_mask_accuracy` at the `[MASK]` positions only."""

    tokenizer: Any
    train: Any  # masking.PretrainingDataset
    eval_batches: List[Dict[str, torch.Tensor]]
    unigram_token: str
    unigram_accuracy: float
    fingerprint: str
    unigram_mask_accuracy: float = float("nan")
    train_eval_batches: List[Dict[str, torch.Tensor]] = field(default_factory=list)
    selection_batches: List[Dict[str, torch.Tensor]] = field(default_factory=list)

    @property
    def mask_token_id(self) -> int:
        return self.tokenizer.mask_token_id

    def loader(self, batch_size: int, seed: int = 0) -> torch.utils.data.DataLoader:
        """Shuffled batches, masked afresh each time (dynamic masking), reproducible from `seed`."""
        from .masking import PretrainingCollator

        collate = PretrainingCollator.from_tokenizer(self.tokenizer, seed=seed)
        g = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(self.train, batch_size=batch_size, shuffle=True,
                                           collate_fn=collate, generator=g)

    def evaluate(self, model: nn.Module) -> Dict[str, float]:
        """`evaluate_pretraining` on the held-out batches, with the metrics per kind of position,
        plus `train_*` and `selection_*`: the accuracies and losses on the fixed training batches
        and on the selection batches."""
        ev = evaluate_pretraining(model, self.eval_batches, mask_token_id=self.mask_token_id)
        for prefix, batches in (("train", self.train_eval_batches), ("selection", self.selection_batches)):
            if batches:
                more = evaluate_pretraining(model, batches, mask_token_id=self.mask_token_id)
                ev.update({f"{prefix}_{k}": v for k, v in more.items() if k.endswith(("accuracy", "loss"))})
        return ev


TOKENIZERS = ("wordpiece", "minilm")


def pretraining_data(scale: Any = None, cache_dir: Optional[str] = None,
                     tokenizer: str = "wordpiece") -> PretrainingData:
    """Corpus -> tokenizer -> NSP pairs; evaluation batches masked once (seed 1234) so that every
    evaluation and the unigram baseline see the same positions.

    `tokenizer="wordpiece"`: chapter 4's tokenizer trained on the corpus (trained once, cached), cut
    as the `pretrain` settings say. `"minilm"`: MiniLM's own tokenizer, cut as the `mlm_teacher`
    settings say (the data of the MLM teacher and its students)."""
    cfg = as_scale_config(scale)
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; valid: {', '.join(TOKENIZERS)}")
    p = cfg.pretrain if tokenizer == "wordpiece" else cfg.mlm_teacher
    settings = {k: getattr(p, k) for k in ("corpus", "max_seq_len", "max_train_docs", "eval_pairs",
                                           "selection_docs", "seed")}
    if tokenizer == "wordpiece":
        settings["vocab_size"] = p.vocab_size

    def make() -> PretrainingData:
        from .data import fingerprint, load_wiki_corpus
        from .masking import PretrainingCollator, PretrainingDataset
        from .tokenizer import TOKENIZER_VERSION, tokenizer_digest

        corpus = load_wiki_corpus(p.corpus)
        if tokenizer == "wordpiece":
            from .tokenizer import get_pretraining_tokenizer
            with dist.main_first():  # under torchrun rank 0 trains and caches it, the others load it
                tok = get_pretraining_tokenizer(cache_dir, vocab_size=p.vocab_size, corpus=p.corpus)
        else:
            tok = minilm()[1]
        docs = corpus["train"]["sentences"]
        if p.max_train_docs is not None:
            docs = docs[:p.max_train_docs]
        if not 0 <= p.selection_docs < len(docs) - 1:  # NSP needs two training documents
            raise ValueError(f"selection_docs={p.selection_docs} leaves too few of the {len(docs)} "
                             "training documents to train on")
        docs, chosen_on = docs[:len(docs) - p.selection_docs], docs[len(docs) - p.selection_docs:]
        train = PretrainingDataset.from_documents(docs, tok, max_seq_len=p.max_seq_len, seed=p.seed)
        held = PretrainingDataset.from_documents(corpus["validation"]["sentences"], tok,
                                                 max_seq_len=p.max_seq_len, seed=p.seed + 1)

        def fixed_batches(ds, n):
            collate = PretrainingCollator.from_tokenizer(tok, seed=1234)
            return [collate([ds[i] for i in range(j, min(j + 64, n))]) for j in range(0, n, 64)]

        n_eval = len(held) if p.eval_pairs is None else min(p.eval_pairs, len(held))
        eval_batches = fixed_batches(held, n_eval)
        train_eval = fixed_batches(train, min(len(train), n_eval))
        selection = []
        if p.selection_docs:
            sel = PretrainingDataset.from_documents(chosen_on, tok, max_seq_len=p.max_seq_len, seed=p.seed + 2)
            selection = fixed_batches(sel, min(len(sel), n_eval))
        top = most_frequent_token((q.tokens_a + q.tokens_b for q in train.pairs), tok.all_special_ids)
        acc = constant_guess_accuracy(top, eval_batches, tok.mask_token_id)
        # The tokenizer by its content (and, for chapter 4's, the version of its recipe): a changed
        # tokenizer gives other ids, so every key built on these data changes with it.
        tok_id = f"{tokenizer}-{tokenizer_digest(tok)}" + (f"-v{TOKENIZER_VERSION}" if tokenizer == "wordpiece" else "")
        fp = fingerprint(corpus) + f"-{tok_id}-{len(tok)}-{p.max_train_docs}-{n_eval}-{p.selection_docs}"
        return PretrainingData(tok, train, eval_batches, tok.convert_ids_to_tokens(top), acc["all"], fp,
                               acc["mask"], train_eval, selection)

    return _memo(json.dumps(["pretraining", tokenizer, settings, cache_dir]), make)




@dataclass
class ClassificationData:
    """Rotten Tomatoes encoded with the MiniLM tokenizer, in length-grouped batches. No setting of
    the pipeline was chosen on the validation batches: they are a second, independent test."""

    tokenizer: Any
    train_batches: List[Dict[str, torch.Tensor]]
    test_batches: List[Dict[str, torch.Tensor]]
    label_names: List[str]
    fingerprint: str
    validation_batches: List[Dict[str, torch.Tensor]] = field(default_factory=list)


def minilm() -> Tuple[Any, Any]:
    """The real MiniLM-L6-H384 as our `BertModel` and its tokenizer (`hf.load_minilm`), loaded once
    per process: the stages copy its weights, never train it."""
    from .hf import load_minilm  # (it silences transformers' loading report itself)

    return _memo("minilm", load_minilm)


def classification_data(scale: Any = None) -> ClassificationData:
    """The first `train_examples` of the (shuffled) training split and the whole test and validation
    splits (`test_examples` of each, if set)."""
    f = as_scale_config(scale).finetune

    def make() -> ClassificationData:
        from .data import fingerprint, load_rotten_tomatoes
        from .tokenizer import tokenizer_digest

        rt = load_rotten_tomatoes()
        train = rt["train"] if f.train_examples is None else rt["train"].select(range(f.train_examples))
        test, val = (rt[k] if f.test_examples is None else rt[k].select(range(f.test_examples))
                     for k in ("test", "validation"))
        _, tok = minilm()

        def eval_batches(split):
            ids = encode_texts(split["text"], tok, f.max_length)
            return make_batches(ids, split["label"], 128, tok.pad_token_id, shuffle=False)

        train_ids = encode_texts(train["text"], tok, f.max_length)
        return ClassificationData(
            tok, make_batches(train_ids, train["label"], f.batch_size, tok.pad_token_id, seed=f.seed),
            eval_batches(test), rt["train"].features["label"].names,
            f"{fingerprint(rt)}-minilm-{tokenizer_digest(tok)}", eval_batches(val))

    return _memo(json.dumps(["classification", f.train_examples, f.test_examples, f.max_length,
                             f.batch_size, f.seed]), make)


def transfer_size(f: FinetuneSettings, n_train: int) -> int:
    """How many reviews the transfer set holds: `f.transfer_examples`, or (None) every training
    review after the `f.train_examples` labelled ones, of the `n_train` in the training split."""
    labelled = n_train if f.train_examples is None else f.train_examples
    available = n_train - labelled
    n = f.transfer_examples
    if n is None:
        return available
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"transfer_examples must be an int or None, got {n!r}")
    if n < 0:
        raise ValueError(f"transfer_examples must be >= 0 (None: all remaining), got {n}")
    if n > available:
        raise ValueError(f"transfer_examples={n}, but only {available} of the {n_train} training reviews "
                         f"remain after the {labelled} labelled ones")
    return n


@dataclass
class TransferData:
    """The transfer set: the training reviews `start` to `start + len(texts)`, right after the
    labelled ones (so no review is in both, nor in the validation or test split), batched like the
    training batches. Only their text is read: the batches carry no `labels`."""

    texts: List[str]
    batches: List[Dict[str, torch.Tensor]]
    start: int


def transfer_data(scale: Any = None) -> TransferData:
    """The `transfer_examples` unlabelled reviews of the finetune settings (see `transfer_size`).
    A larger transfer set extends a smaller one: the first reviews are the same."""
    f = as_scale_config(scale).finetune

    def make() -> TransferData:
        from .data import load_rotten_tomatoes

        train = load_rotten_tomatoes()["train"]
        n = transfer_size(f, len(train))
        start = len(train) if f.train_examples is None else f.train_examples
        if n == 0:  # e.g. gpu scale, every review labelled: select() refuses a start at the end
            return TransferData([], [], start)
        texts = list(train.select(range(start, start + n))["text"])  # the text column only: no labels
        _, tok = minilm()
        ids = encode_texts(texts, tok, f.max_length)
        return TransferData(texts, make_batches(ids, None, f.batch_size, tok.pad_token_id, seed=f.seed), start)

    return _memo(json.dumps(["transfer", f.train_examples, f.transfer_examples, f.max_length, f.batch_size,
                             f.seed]), make)
