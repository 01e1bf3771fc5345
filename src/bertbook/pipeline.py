"""The book's chain of models, each loaded from the cache if a run already trained it, else trained
and cached: so every chapter runs standalone, and the CLI's `report` and the notebooks share models.

    pretrained_teacher   BERT pretrained from scratch on the Wikipedia sample (MLM + NSP)   ch. 5
    mlm_teacher          the real MiniLM-L6-H384, MLM and NSP heads, further pretrained     ch. 6
    copied_student       half of its layers copied into a DistilBERT, untrained: a control
    distilled_student    that copy trained with the triple loss (mlm_only=True: MLM alone)
    finetuned_teacher    the real MiniLM-L6-H384 fine-tuned on Rotten Tomatoes              ch. 7
    finetuned_student    3 of its layers, fine-tuned with (kd=True) or without its soft labels
    teacher_logits       its logits on the labelled reviews and on the transfer set (unlabelled)
    transfer_student     the distilled student plus the transfer set: its soft labels alone there
                         (pseudo_labels=True: its hard labels, the control)
    random_init_classifier   the same 3-layer shape from random weights: the control

Each returns (model in eval mode, info): info holds the measured metrics, the training history,
the seconds it took, the cache key and `cached` (True when loaded). Cache keys hash the stage's
settings, the data fingerprint, the upstream model's key and the package version.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .bert import BertConfig, BertForPreTraining, BertForSequenceClassification
from .cache import cache_key, checkpoint_path, load_checkpoint, save_checkpoint
from . import distributed as dist
from .configs import TRANSFER_FIELDS, FinetuneSettings, ScaleConfig, get_config
from .distilbert import (DistilBertForMaskedLM, DistilBertForSequenceClassification, default_student_layers,
                         student_from_teacher)
from .distill import distill
from .finetune import (classifier_from_pretrained, encode_texts, evaluate_classifier, finetune, make_batches,
                       predict_logits)
from .pretrain import constant_guess_accuracy, evaluate_pretraining, most_frequent_token, pretrain
from .training import seed_everything

MODEL_CLASSES = {c.__name__: c for c in (BertForPreTraining, DistilBertForMaskedLM,
                                         BertForSequenceClassification, DistilBertForSequenceClassification)}
MODEL_NAMES = ("pretrained", "mlm-teacher", "mlm-student", "mlm-student-mlm-only", "teacher", "student",
               "student-no-kd", "student-transfer", "student-pseudo", "random-init")
Info = Dict[str, Any]
_MEMO: Dict[str, Any] = {}  # data and tokenizers, loaded once per process


def _config(scale: Any) -> ScaleConfig:
    if isinstance(scale, ScaleConfig):
        return scale
    if scale is not None and not isinstance(scale, str):
        raise TypeError(f"scale must be 'cpu', 'gpu', 'tiny' or a ScaleConfig, got {type(scale).__name__}")
    return get_config(scale)


def _memo(key: str, make: Callable[[], Any]) -> Any:
    if key not in _MEMO:
        _MEMO[key] = make()
    return _MEMO[key]


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' loading report and progress bars (the MiniLM checkpoint's unused
    pooler weights are reported as a warning otherwise)."""
    import transformers
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _load_or_build(stage: str, key: str, build: Callable[[], Tuple[Any, Info]], cache_dir: Optional[str],
                   retrain: bool, restore: Callable[[Dict[str, torch.Tensor], Info], Any],
                   tensors_of: Callable[[Any, Info], Dict[str, torch.Tensor]]) -> Tuple[Any, Info]:
    """Load `<stage>-<key>` from the cache (`restore` turns its tensors into the output), else
    `build()` it and save `tensors_of(output)` atomically, with the info."""
    path = checkpoint_path(stage, key, cache_dir)
    found = None if retrain else load_checkpoint(path)  # None if missing or corrupt (it warns, deletes)
    # Under torchrun the ranks train together or not at all: load only if every rank has the file.
    if not dist.all_ranks_agree(found is not None):
        found = None
    if found is not None:
        tensors, info = found
        info["cached"] = True
        return restore(tensors, info), info
    t0 = time.perf_counter()
    out, info = build()
    info.update(stage=stage, key=key, seconds=time.perf_counter() - t0)
    if dist.is_main():  # under torchrun every rank trained the same model; one writes it
        save_checkpoint(path, tensors_of(out, info), info)
    dist.barrier()
    info["cached"] = False
    return out, info


def _cached(stage: str, key: str, build: Callable[[], Tuple[nn.Module, Info]],
            cache_dir: Optional[str], retrain: bool) -> Tuple[nn.Module, Info]:
    """A model stage: load `<stage>-<key>` from the cache, else `build()` it and save it."""
    def restore(state: Dict[str, torch.Tensor], info: Info) -> nn.Module:
        model = MODEL_CLASSES[info["class"]](BertConfig.from_dict(info["model_config"]))
        model.load_state_dict(state)
        return model

    def tensors_of(model: nn.Module, info: Info) -> Dict[str, torch.Tensor]:
        info["class"], info["model_config"] = type(model).__name__, model.config.to_dict()
        return model.state_dict()

    model, info = _load_or_build(stage, key, build, cache_dir, retrain, restore, tensors_of)
    return model.eval(), info


def _cached_tensors(stage: str, key: str, build: Callable[[], Tuple[Dict[str, torch.Tensor], Info]],
                    cache_dir: Optional[str], retrain: bool) -> Tuple[Dict[str, torch.Tensor], Info]:
    """A stage whose output is tensors, not a model (the teacher's logits)."""
    return _load_or_build(stage, key, build, cache_dir, retrain, lambda t, _: t, lambda t, _: t)


# --------------------------------------------------------------------------- pretraining data


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
    cfg = _config(scale)
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

        corpus = load_wiki_corpus(p.corpus)
        if tokenizer == "wordpiece":
            from .tokenizer import get_pretraining_tokenizer
            with dist.main_first():  # under torchrun rank 0 trains and caches it, the others load it
                tok = get_pretraining_tokenizer(cache_dir, vocab_size=p.vocab_size, corpus=p.corpus)
        else:
            tok = _minilm()[1]
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
        fp = fingerprint(corpus) + f"-{tokenizer}-{len(tok)}-{p.max_train_docs}-{n_eval}-{p.selection_docs}"
        return PretrainingData(tok, train, eval_batches, tok.convert_ids_to_tokens(top), acc["all"], fp,
                               acc["mask"], train_eval, selection)

    return _memo(json.dumps(["pretraining", tokenizer, settings, cache_dir]), make)


def _pretrain_key(cfg: ScaleConfig, data: PretrainingData) -> str:
    return cache_key("pretrain", cfg.pretrain, data.fingerprint)


def _pretraining_info(ev: Dict[str, float], data: PretrainingData) -> Info:
    """The info of an MLM stage: every metric of `PretrainingData.evaluate` as `heldout_*` (held
    out), `train_*` (fixed training batches) or `selection_*`, and the unigram baseline."""
    info = {(k if k.startswith(("train_", "selection_")) else f"heldout_{k}"): v for k, v in ev.items()}
    info.update(unigram_baseline_accuracy=data.unigram_accuracy,
                unigram_mask_accuracy=data.unigram_mask_accuracy, unigram_token=data.unigram_token)
    return info


def pretrained_teacher(scale: Any = None, cache_dir: Optional[str] = None, retrain: bool = False,
                       progress: bool = True) -> Tuple[BertForPreTraining, Info]:
    """BERT pretrained from scratch (MLM + NSP), chapter 5. info: `heldout_mask_accuracy` (at the
    `[MASK]` positions: the honest measure), `unigram_mask_accuracy` (its baseline),
    `heldout_unchanged_accuracy`, `heldout_random_accuracy`, `heldout_mlm_accuracy` (all selected
    positions), `heldout_nsp_accuracy` and `train_nsp_accuracy` (memorisation), `history`, ..."""
    cfg = _config(scale)
    p = cfg.pretrain
    data = pretraining_data(cfg, cache_dir)

    def build():
        seed_everything(p.seed)
        model = BertForPreTraining(p.model_config(len(data.tokenizer)))
        hist = pretrain(model, data.loader(p.batch_size, p.seed), p.steps, lr=p.lr, warmup=p.warmup,
                        weight_decay=p.weight_decay, eval_batches=data.eval_batches,
                        eval_every=p.eval_every, mask_token_id=data.mask_token_id, compile=cfg.compile,
                        grad_accum=cfg.grad_accum,
                        seed=p.seed, progress=progress)
        return model, {**_pretraining_info(data.evaluate(model), data),
                       "history": hist, **dist.provenance(p.batch_size, cfg.grad_accum)}

    return _cached("pretrain", _pretrain_key(cfg, data), build, cache_dir, retrain)


def mlm_teacher(scale: Any = None, cache_dir: Optional[str] = None, retrain: bool = False,
                progress: bool = True) -> Tuple[BertForPreTraining, Info]:
    """The real MiniLM-L6-H384 with a fresh MLM head (tied to its word embeddings) and NSP head,
    further pretrained on the Wikipedia sample with its own tokenizer (continued pretraining):
    chapter 6's teacher. info: as `pretrained_teacher`'s."""
    from .pretrained import HUB_NAME

    cfg = _config(scale)
    t = cfg.mlm_teacher
    data = pretraining_data(cfg, cache_dir, tokenizer="minilm")

    def build():
        seed_everything(t.seed)  # the fresh heads
        bert, _ = _minilm()
        model = BertForPreTraining(copy.deepcopy(bert.config))
        model.bert.load_state_dict(bert.state_dict())  # encoder and pooler; the heads stay fresh
        hist = pretrain(model, data.loader(t.batch_size, t.seed), t.steps, lr=t.lr, warmup=t.warmup,
                        weight_decay=t.weight_decay, eval_batches=data.eval_batches,
                        eval_every=t.eval_every, mask_token_id=data.mask_token_id, compile=cfg.compile,
                        grad_accum=cfg.grad_accum,
                        seed=t.seed, progress=progress)
        return model, {**_pretraining_info(data.evaluate(model), data),
                       "history": hist, **dist.provenance(t.batch_size, cfg.grad_accum)}

    return _cached("mlm-teacher", cache_key("mlm-teacher", t, data.fingerprint, HUB_NAME), build,
                   cache_dir, retrain)


def copied_student(scale: Any = None, cache_dir: Optional[str] = None, layers: Optional[Sequence[int]] = None,
                   progress: bool = True) -> Tuple[DistilBertForMaskedLM, Info]:
    """The MLM teacher's layers `layers` (default: the distill settings') copied into a DistilBERT,
    not trained: the control that shows what initialisation alone gives. Cheap, so not cached.
    info: the held-out metrics, as the stages'."""
    cfg = _config(scale)
    layers = cfg.distill.layers if layers is None else tuple(layers)
    teacher, _ = mlm_teacher(cfg, cache_dir, progress=progress)
    data = pretraining_data(cfg, cache_dir, tokenizer="minilm")
    student = student_from_teacher(teacher, layers).eval()
    return student, {**_pretraining_info(data.evaluate(student), data), "layers": list(layers)}


def distilled_student(scale: Any = None, cache_dir: Optional[str] = None, mlm_only: bool = False,
                      seed: Optional[int] = None, retrain: bool = False,
                      progress: bool = True) -> Tuple[DistilBertForMaskedLM, Info]:
    """DistilBERT initialised from the `distill.layers` of `mlm_teacher` and trained on the
    Wikipedia sample with the triple loss, or with `mlm_only=True` on the MLM loss alone
    (α_ce = α_cos = 0: the control that isolates what the teacher adds; same batches, same steps).
    info: the held-out metrics as `pretrained_teacher`'s, `teacher_heldout_mask_accuracy`, `history`."""
    cfg = _config(scale)
    d = cfg.distill
    seed = d.seed if seed is None else seed
    teacher, tinfo = mlm_teacher(cfg, cache_dir, progress=progress)
    data = pretraining_data(cfg, cache_dir, tokenizer="minilm")
    alpha_ce, alpha_cos = (0.0, 0.0) if mlm_only else (d.alpha_ce, d.alpha_cos)

    def build():
        student = student_from_teacher(teacher, d.layers)
        hist = distill(teacher, student, data.loader(d.batch_size, seed), d.steps, lr=d.lr,
                       warmup=d.warmup, temperature=d.temperature, alpha_ce=alpha_ce,
                       alpha_mlm=d.alpha_mlm, alpha_cos=alpha_cos, compile=cfg.compile,
                        grad_accum=cfg.grad_accum,
                       seed=seed, progress=progress)
        return student, {**_pretraining_info(data.evaluate(student), data), "mlm_only": mlm_only,
                         "seed": seed, "teacher_heldout_mask_accuracy": tinfo["heldout_mask_accuracy"],
                         "history": hist, **dist.provenance(d.batch_size, cfg.grad_accum)}

    stage = "distill-mlm-only" if mlm_only else "distill"
    return _cached(stage, cache_key(stage, d, tinfo["key"], seed), build, cache_dir, retrain)


# --------------------------------------------------------------------------- classification


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


def _minilm():
    from .pretrained import load_minilm

    def make():
        with quiet_transformers():
            return load_minilm()
    return _memo("minilm", make)


def classification_data(scale: Any = None) -> ClassificationData:
    """The first `train_examples` of the (shuffled) training split and the whole test and validation
    splits (`test_examples` of each, if set)."""
    f = _config(scale).finetune

    def make() -> ClassificationData:
        from .data import fingerprint, load_rotten_tomatoes

        rt = load_rotten_tomatoes()
        train = rt["train"] if f.train_examples is None else rt["train"].select(range(f.train_examples))
        test, val = (rt[k] if f.test_examples is None else rt[k].select(range(f.test_examples))
                     for k in ("test", "validation"))
        _, tok = _minilm()

        def eval_batches(split):
            ids = encode_texts(split["text"], tok, f.max_length)
            return make_batches(ids, split["label"], 128, tok.pad_token_id, shuffle=False)

        train_ids = encode_texts(train["text"], tok, f.max_length)
        return ClassificationData(
            tok, make_batches(train_ids, train["label"], f.batch_size, tok.pad_token_id, seed=f.seed),
            eval_batches(test), rt["train"].features["label"].names, fingerprint(rt), eval_batches(val))

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
    f = _config(scale).finetune

    def make() -> TransferData:
        from .data import load_rotten_tomatoes

        train = load_rotten_tomatoes()["train"]
        n = transfer_size(f, len(train))
        start = len(train) if f.train_examples is None else f.train_examples
        if n == 0:  # e.g. gpu scale, every review labelled: select() refuses a start at the end
            return TransferData([], [], start)
        texts = list(train.select(range(start, start + n))["text"])  # the text column only: no labels
        _, tok = _minilm()
        ids = encode_texts(texts, tok, f.max_length)
        return TransferData(texts, make_batches(ids, None, f.batch_size, tok.pad_token_id, seed=f.seed), start)

    return _memo(json.dumps(["transfer", f.train_examples, f.transfer_examples, f.max_length, f.batch_size,
                             f.seed]), make)


def _student_settings(f: FinetuneSettings) -> Dict[str, Any]:
    """The finetune settings in a cache key of a stage without a transfer set: the transfer fields
    left out, so that the key is the one it had before they existed."""
    return {k: v for k, v in asdict(f).items() if k not in TRANSFER_FIELDS}


def _teacher_key(cfg: ScaleConfig, data: ClassificationData) -> str:
    from .pretrained import HUB_NAME

    f = cfg.finetune
    settings = {k: getattr(f, k) for k in ("train_examples", "test_examples", "max_length", "batch_size",
                                           "epochs", "lr", "warmup", "pooling", "seed")}
    return cache_key("teacher", settings, data.fingerprint, HUB_NAME)


def finetuned_teacher(scale: Any = None, cache_dir: Optional[str] = None, retrain: bool = False,
                      progress: bool = True) -> Tuple[BertForSequenceClassification, Info]:
    """The pretrained MiniLM-L6-H384 fine-tuned on Rotten Tomatoes. info: `test_accuracy`, ..."""
    cfg = _config(scale)
    f = cfg.finetune
    data = classification_data(cfg)

    def build():
        bert, _ = _minilm()
        model = classifier_from_pretrained(bert, len(data.label_names), f.pooling, seed=f.seed)
        hist = finetune(model, data.train_batches, f.epochs, f.lr, f.warmup, seed=f.seed, progress=progress,
                        grad_accum=cfg.grad_accum)
        return model, {"test_accuracy": evaluate_classifier(model, data.test_batches),
                       "history": hist, **dist.provenance(f.batch_size, cfg.grad_accum)}

    return _cached("teacher", _teacher_key(cfg, data), build, cache_dir, retrain)


def finetuned_student(scale: Any = None, cache_dir: Optional[str] = None, kd: bool = True,
                      seed: Optional[int] = None, retrain: bool = False,
                      progress: bool = True) -> Tuple[DistilBertForSequenceClassification, Info]:
    """A DistilBERT classifier initialised from teacher layers `student_layers` and fine-tuned with
    the teacher's soft labels (kd=True: α·CE + (1 − α)·T²·KL) or with the labels alone (kd=False,
    the twin that isolates what distillation adds: same initialisation, same batches).
    info: `test_accuracy`, ..."""
    cfg = _config(scale)
    f = cfg.finetune
    seed = f.seed if seed is None else seed
    data = classification_data(cfg)
    teacher, tinfo = finetuned_teacher(cfg, cache_dir, progress=progress)

    def build():
        seed_everything(seed)  # the fresh classifier head
        student = student_from_teacher(teacher, f.student_layers)
        hist = finetune(student, data.train_batches, f.epochs, f.student_lr or f.lr, f.warmup,
                        teacher=teacher if kd else None, alpha=f.alpha, temperature=f.temperature,
                        seed=seed, progress=progress, grad_accum=cfg.grad_accum)
        return student, {"test_accuracy": evaluate_classifier(student, data.test_batches),
                         "kd": kd, "seed": seed,
                         "history": hist, **dist.provenance(f.batch_size, cfg.grad_accum)}

    key = cache_key("student", _student_settings(f), tinfo["key"], kd, seed)
    return _cached("student" if kd else "student-no-kd", key, build, cache_dir, retrain)


def _teacher_logits_key(tinfo: Info, transfer: TransferData) -> str:
    # The teacher's key covers the data, the labelled reviews and their batches; add the transfer set.
    return cache_key("teacher-logits", tinfo["key"], transfer.start, len(transfer.texts))


def teacher_logits(scale: Any = None, cache_dir: Optional[str] = None, retrain: bool = False,
                   progress: bool = True) -> Tuple[Dict[str, torch.Tensor], Info]:
    """The fine-tuned teacher's logits, computed once and cached as a stage of its own (a tensor
    file, `teacher-logits-<key>`), so that every seed and both transfer students share one pass of
    the teacher: `labelled` (N, C) on the labelled training reviews and `transfer` (M, C) on the
    transfer set (M = 0 without one), rows by example index (the batches' `index`)."""
    cfg = _config(scale)
    data, transfer = classification_data(cfg), transfer_data(cfg)
    teacher, tinfo = finetuned_teacher(cfg, cache_dir, progress=progress)

    def build():
        labelled = predict_logits(teacher, data.train_batches)
        unlabelled = predict_logits(teacher, transfer.batches) if transfer.batches else \
            labelled.new_zeros((0, labelled.shape[1]))
        return {"labelled": labelled, "transfer": unlabelled}, {"transfer_examples": len(transfer.texts),
                                                               "teacher_key": tinfo["key"]}

    return _cached_tensors("teacher-logits", _teacher_logits_key(tinfo, transfer), build, cache_dir, retrain)


def transfer_student(scale: Any = None, cache_dir: Optional[str] = None, pseudo_labels: bool = False,
                     seed: Optional[int] = None, retrain: bool = False,
                     progress: bool = True) -> Tuple[DistilBertForSequenceClassification, Info]:
    """The distilled student (`finetuned_student(kd=True)`: same initialisation, same labelled
    batches, same α·CE + (1 − α)·T²·KL on them) with the transfer set added: its unlabelled
    reviews learnt from the teacher's soft labels alone (T²·KL), in one shuffled stream with the
    labelled batches. `pseudo_labels=True`: the control, the teacher's hard labels (argmax) on the
    transfer set as if they were labels (cross-entropy), so that "more data" and "soft labels" can
    be told apart. With `transfer_examples=0` both are the distilled student, weight for weight.
    info: `test_accuracy`, `validation_accuracy`, `transfer_examples`, `pseudo_labels`, `seed`, ..."""
    cfg = _config(scale)
    f = cfg.finetune
    seed = f.seed if seed is None else seed
    data, transfer = classification_data(cfg), transfer_data(cfg)
    teacher, tinfo = finetuned_teacher(cfg, cache_dir, progress=progress)
    logits_key = _teacher_logits_key(tinfo, transfer)

    def build():
        logits, _ = teacher_logits(cfg, cache_dir, progress=progress)  # only when the student is not cached
        seed_everything(seed)  # the fresh classifier head
        student = student_from_teacher(teacher, f.student_layers)
        hist = finetune(student, data.train_batches, f.epochs, f.student_lr or f.lr, f.warmup,
                        teacher_logits=logits["labelled"], alpha=f.alpha, temperature=f.temperature,
                        seed=seed, progress=progress, transfer_batches=transfer.batches,
                        transfer_logits=logits["transfer"], pseudo_labels=pseudo_labels,
                        grad_accum=cfg.grad_accum)
        return student, {"test_accuracy": evaluate_classifier(student, data.test_batches),
                         "validation_accuracy": evaluate_classifier(student, data.validation_batches),
                         "transfer_examples": len(transfer.texts), "pseudo_labels": pseudo_labels,
                         "seed": seed, "teacher_logits_key": logits_key,
                         "history": hist, **dist.provenance(f.batch_size, cfg.grad_accum)}

    settings = {**_student_settings(f), "transfer_examples": len(transfer.texts)}  # None and its count: one key
    key = cache_key("student-transfer", settings, logits_key, pseudo_labels, seed)
    return _cached("student-pseudo" if pseudo_labels else "student-transfer", key, build, cache_dir, retrain)


def random_init_classifier(scale: Any = None, cache_dir: Optional[str] = None, seed: Optional[int] = None,
                           retrain: bool = False, progress: bool = True
                           ) -> Tuple[DistilBertForSequenceClassification, Info]:
    """The student's shape from random weights, fine-tuned on the same batches: what pretraining
    is worth. info: `test_accuracy`, ..."""
    cfg = _config(scale)
    f = cfg.finetune
    seed = f.seed if seed is None else seed
    data = classification_data(cfg)
    bert, _ = _minilm()

    def build():
        seed_everything(seed)
        config = replace(bert.config, num_hidden_layers=len(f.student_layers),
                         num_labels=len(data.label_names), classifier_pooling=f.pooling)  # validated
        model = DistilBertForSequenceClassification(config)
        hist = finetune(model, data.train_batches, f.epochs, f.random_init_lr, f.warmup, seed=seed,
                        progress=progress, grad_accum=cfg.grad_accum)
        return model, {"test_accuracy": evaluate_classifier(model, data.test_batches), "seed": seed,
                       "history": hist, **dist.provenance(f.batch_size, cfg.grad_accum)}

    key = cache_key("random-init", _student_settings(f), data.fingerprint, seed)
    return _cached("random-init", key, build, cache_dir, retrain)


# --------------------------------------------------------------------------- measurements


@contextlib.contextmanager
def _on_cpu_in_eval(models: Sequence[nn.Module]):
    """Move `models` to the CPU in eval mode for the block, then back to the device and mode each
    had: a measurement must not change the caller's models."""
    before = [(m, next(m.parameters()).device, m.training) for m in models]
    try:
        yield [m.cpu().eval() for m in models]
    finally:
        for m, device, training in before:
            m.to(device).train(training)


@torch.inference_mode()
def measure_latency(models: Dict[str, nn.Module], batch_size: int = 32, seq_len: int = 64,
                    repeats: int = 10, warmup: int = 2, seed: int = 0) -> Dict[str, float]:
    """Median seconds per forward pass of each model on the CPU, input (batch_size, seq_len) of
    random ids with no padding. The models are timed in turn, round by round, so that a busy
    machine slows them alike; afterwards each is back on its device, in its mode."""
    import statistics

    if not models:
        raise ValueError("measure_latency got no models")
    g = torch.Generator().manual_seed(seed)
    vocab = min(m.config.vocab_size for m in models.values())
    ids = torch.randint(5, vocab, (batch_size, seq_len), generator=g)
    mask = torch.ones_like(ids)
    times: Dict[str, List[float]] = {name: [] for name in models}
    with _on_cpu_in_eval(list(models.values())):
        for r in range(warmup + repeats):
            for name, m in models.items():
                t0 = time.perf_counter()
                m(ids, mask)
                if r >= warmup:
                    times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def report(scale: Any = None, cache_dir: Optional[str] = None, progress: bool = True,
           latency_repeats: int = 10) -> Dict[str, Any]:
    """Run (or load) the whole chain and return the results as one flat dict (see README)."""
    cfg = _config(scale)
    t0 = time.perf_counter()
    _, pre = pretrained_teacher(cfg, cache_dir, progress=progress)
    mlm_t, tmlm = mlm_teacher(cfg, cache_dir, progress=progress)
    _, cop = copied_student(cfg, cache_dir, progress=progress)
    mlm_s, dis = distilled_student(cfg, cache_dir, progress=progress)
    _, dmo = distilled_student(cfg, cache_dir, mlm_only=True, progress=progress)
    teacher, tea = finetuned_teacher(cfg, cache_dir, progress=progress)
    student, stu = finetuned_student(cfg, cache_dir, kd=True, progress=progress)
    _, nokd = finetuned_student(cfg, cache_dir, kd=False, progress=progress)
    _, tra = transfer_student(cfg, cache_dir, progress=progress)
    _, pse = transfer_student(cfg, cache_dir, pseudo_labels=True, progress=progress)
    _, rnd = random_init_classifier(cfg, cache_dir, progress=progress)
    b, L = cfg.latency_batch
    lat = measure_latency({"teacher": teacher, "student": student, "mlm_teacher": mlm_t, "mlm_student": mlm_s},
                          b, L, latency_repeats)
    infos = {"pretrain": pre, "mlm_teacher": tmlm, "distill": dis, "distill_mlm_only": dmo, "teacher": tea,
             "student": stu, "student_no_kd": nokd, "student_transfer": tra, "student_pseudo": pse,
             "random_init": rnd}
    return {
        "scale": cfg.name,
        # BERT from scratch (ch. 5): [MASK] positions are the headline, the rest shows copying
        "pretrain_heldout_mask_accuracy": pre["heldout_mask_accuracy"],
        "pretrain_unigram_mask_accuracy": pre["unigram_mask_accuracy"],
        "pretrain_heldout_mask_loss": pre["heldout_mask_loss"],
        "pretrain_heldout_random_accuracy": pre["heldout_random_accuracy"],
        "pretrain_heldout_unchanged_accuracy": pre["heldout_unchanged_accuracy"],
        "pretrain_heldout_mlm_accuracy": pre["heldout_mlm_accuracy"],
        "unigram_baseline_accuracy": pre["unigram_baseline_accuracy"],
        "pretrain_heldout_nsp_accuracy": pre["heldout_nsp_accuracy"],
        "pretrain_train_nsp_accuracy": pre["train_nsp_accuracy"],
        # MiniLM with an MLM head (ch. 6's teacher) and its half-depth students
        "teacher_mlm_heldout_mask_accuracy": tmlm["heldout_mask_accuracy"],
        "teacher_mlm_unigram_mask_accuracy": tmlm["unigram_mask_accuracy"],
        "teacher_mlm_heldout_nsp_accuracy": tmlm["heldout_nsp_accuracy"],
        "teacher_mlm_train_nsp_accuracy": tmlm["train_nsp_accuracy"],
        "copied_heldout_mask_accuracy": cop["heldout_mask_accuracy"],
        "distilled_heldout_mask_accuracy": dis["heldout_mask_accuracy"],
        "distilled_mlm_only_heldout_mask_accuracy": dmo["heldout_mask_accuracy"],
        "distilled_mask_retention": dis["heldout_mask_accuracy"] / tmlm["heldout_mask_accuracy"],
        "distill_layers": list(cfg.distill.layers or default_student_layers(mlm_t.config.num_hidden_layers)),
        "mlm_teacher_parameters": mlm_t.num_parameters(),
        "mlm_student_parameters": mlm_s.num_parameters(),
        "mlm_teacher_latency_ms": 1000 * lat["mlm_teacher"],
        "mlm_student_latency_ms": 1000 * lat["mlm_student"],
        # Rotten Tomatoes (ch. 7)
        "teacher_accuracy": tea["test_accuracy"],
        "student_accuracy": stu["test_accuracy"],
        "student_no_kd_accuracy": nokd["test_accuracy"],
        # the distilled student with the transfer set: soft labels there, or hard ones (the control)
        "student_transfer_accuracy": tra["test_accuracy"],
        "student_pseudo_label_accuracy": pse["test_accuracy"],
        "transfer_examples": tra["transfer_examples"],
        "random_init_accuracy": rnd["test_accuracy"],
        "retention": stu["test_accuracy"] / tea["test_accuracy"],
        "speedup": lat["teacher"] / lat["student"],
        "teacher_latency_ms": 1000 * lat["teacher"],
        "student_latency_ms": 1000 * lat["student"],
        "latency_batch": [b, L],
        "teacher_parameters": teacher.num_parameters(),
        "student_parameters": student.num_parameters(),
        "teacher_parameters_without_word_embeddings": teacher.num_parameters(exclude_embeddings=True),
        "student_parameters_without_word_embeddings": student.num_parameters(exclude_embeddings=True),
        "test_examples": sum(int(x["labels"].numel()) for x in classification_data(cfg).test_batches),
        "train_seconds": {k: round(v["seconds"], 1) for k, v in infos.items()},
        "cached": {k: v["cached"] for k, v in infos.items()},
        "seconds": time.perf_counter() - t0,
    }


MLM_MODELS = ("pretrained", "mlm-teacher", "mlm-student", "mlm-student-mlm-only")


def get_model(name: str, scale: Any = None, cache_dir: Optional[str] = None,
              progress: bool = True) -> Tuple[nn.Module, Info]:
    """One of MODEL_NAMES by name (trains it and what it needs if not cached)."""
    stages = {
        "pretrained": lambda: pretrained_teacher(scale, cache_dir, progress=progress),
        "mlm-teacher": lambda: mlm_teacher(scale, cache_dir, progress=progress),
        "mlm-student": lambda: distilled_student(scale, cache_dir, progress=progress),
        "mlm-student-mlm-only": lambda: distilled_student(scale, cache_dir, mlm_only=True, progress=progress),
        "teacher": lambda: finetuned_teacher(scale, cache_dir, progress=progress),
        "student": lambda: finetuned_student(scale, cache_dir, kd=True, progress=progress),
        "student-no-kd": lambda: finetuned_student(scale, cache_dir, kd=False, progress=progress),
        "student-transfer": lambda: transfer_student(scale, cache_dir, progress=progress),
        "student-pseudo": lambda: transfer_student(scale, cache_dir, pseudo_labels=True, progress=progress),
        "random-init": lambda: random_init_classifier(scale, cache_dir, progress=progress),
    }
    if name not in stages:
        raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    return stages[name]()


def export(name: str, out_dir: str, scale: Any = None, cache_dir: Optional[str] = None,
           progress: bool = True) -> str:
    """Write model `name` in Hugging Face format (with its tokenizer) to `out_dir`:
    `transformers.pipeline("fill-mask", out_dir)` loads the MLM models (`MLM_MODELS`),
    `pipeline("text-classification", out_dir)` the classifiers."""
    from .hf import save_pretrained

    pooling = _config(scale).finetune.pooling
    if pooling != "cls" and name not in MLM_MODELS:
        raise ValueError(
            f"{name!r} is fine-tuned with {pooling!r} pooling, which Hugging Face's classifiers do not "
            "have (they pool the [CLS] vector); use a config with finetune pooling='cls' to export it")
    model, _ = get_model(name, scale, cache_dir, progress)
    if name == "pretrained":
        tok = pretraining_data(scale, cache_dir).tokenizer
    elif name in MLM_MODELS:
        tok = pretraining_data(scale, cache_dir, tokenizer="minilm").tokenizer
    else:
        tok = classification_data(scale).tokenizer
    save_pretrained(model, out_dir, tok)
    if name not in MLM_MODELS:  # readable labels in pipeline output
        path = os.path.join(out_dir, "config.json")
        with open(path) as fh:
            conf = json.load(fh)
        names = classification_data(scale).label_names
        conf["id2label"] = {str(i): n for i, n in enumerate(names)}
        conf["label2id"] = {n: i for i, n in enumerate(names)}
        with open(path, "w") as fh:
            json.dump(conf, fh, indent=2)
    return out_dir
