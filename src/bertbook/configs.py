"""How big to run: one configuration per scale.

* `cpu`: everything (pretraining, the MLM teacher, distillation, MiniLM fine-tuning, students,
  controls) on a 2-core CPU; what the book's stored outputs show (times: benchmarks/README.md).
* `gpu`: a wider model, more steps, all the fine-tuning data; picked automatically when CUDA is
  present, unless the environment variable BERTBOOK_SCALE names another scale.
* `tiny`: seconds, for the smoke test.

Each stage's settings are a separate dataclass so that a stage's cache key changes only when
something that stage depends on changes.
"""
from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Dict, Optional, Tuple, Union, get_args, get_origin, get_type_hints

import torch

from .bert import BertConfig

SCALES = ("cpu", "gpu", "tiny")
SCALE_VARIABLE = "BERTBOOK_SCALE"  # names the scale when none is given


@dataclass
class PretrainSettings:
    vocab_size: int = 8192  # of the WordPiece tokenizer trained on the corpus
    corpus: str = "gensim-enwiki"
    # Chosen among settings of the same token budget: benchmarks/pretrain_settings.py, chapter 5.
    max_seq_len: int = 64
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 2
    intermediate_size: int = 512
    pre_norm: bool = False
    dropout: float = 0.1
    batch_size: int = 32
    steps: int = 1600
    lr: float = 1e-3
    warmup: float = 0.1
    weight_decay: float = 0.01
    eval_every: int = 200  # 0: evaluate only at the end
    max_train_docs: Optional[int] = None  # None: the whole corpus
    eval_pairs: Optional[int] = None  # held-out pairs evaluated; None: all of them
    selection_docs: int = 0  # last training documents kept out of training, to choose settings on
    seed: int = 0

    def model_config(self, vocab_size: int) -> BertConfig:
        return BertConfig(vocab_size=vocab_size, hidden_size=self.hidden_size,
                          num_hidden_layers=self.num_hidden_layers,
                          num_attention_heads=self.num_attention_heads,
                          intermediate_size=self.intermediate_size,
                          max_position_embeddings=self.max_seq_len, pre_norm=self.pre_norm,
                          hidden_dropout_prob=self.dropout, attention_probs_dropout_prob=self.dropout)


@dataclass
class MLMTeacherSettings:
    """Continued pretraining of the real MiniLM-L6-H384 (chapter 6's teacher): its encoder, a fresh
    MLM head tied to its word embeddings and a fresh NSP head, trained on the Wikipedia sample with
    MiniLM's own tokenizer."""

    corpus: str = "gensim-enwiki"
    max_seq_len: int = 64
    batch_size: int = 32
    steps: int = 300
    lr: float = 2e-4
    warmup: float = 0.1
    weight_decay: float = 0.01
    eval_every: int = 100  # 0: evaluate only at the end
    max_train_docs: Optional[int] = None  # None: the whole corpus
    eval_pairs: Optional[int] = None  # held-out pairs evaluated; None: all of them
    # The last 6 of the 90 training documents are never trained on: the selection split, on which
    # the distillation settings are chosen, so that the held-out (validation) split is reported once.
    selection_docs: int = 6
    seed: int = 0


@dataclass
class DistillSettings:
    """DistilBERT from the MLM teacher: the teacher at half depth, trained with the triple loss
    (or, for the control, with alpha_ce = alpha_cos = 0: MLM alone) on the same batches."""

    layers: Optional[Tuple[int, ...]] = (0, 2, 4)  # None: every other teacher layer, evenly spread
    batch_size: int = 32
    steps: int = 300
    lr: float = 2e-4
    warmup: float = 0.05
    temperature: float = 2.0
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0
    seed: int = 0


@dataclass
class ScratchSettings:
    """Chapter 6's students that must learn from the teacher: the distilled student's shape
    (`num_hidden_layers` of the MLM teacher's, same width and heads) from random weights, on the
    distillation batches. Each arm (`SCRATCH_ARMS`) switches some of the loss terms on, with these
    weights: MLM alone (the control), DistilBERT's triple loss, MiniLM's attention transfer, ...
    The calibration these settings come from is in benchmarks/README.md."""

    num_hidden_layers: int = 3
    batch_size: int = 32
    steps: int = 300
    lr: float = 5e-4  # a random student takes a larger step than the copied one (2e-4)
    warmup: float = 0.05
    temperature: float = 2.0
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0
    alpha_att: float = 1.0
    alpha_val: float = 1.0
    # (student layer, teacher layer) pairs for attention transfer; None: every student layer from the
    # teacher layer at the same relative depth (`distill.relation_layer_map`), (0, 1), (1, 3), (2, 5)
    attention_layers: Optional[Tuple[Tuple[int, int], ...]] = None
    seed: int = 0


# Which loss terms each arm of the from-scratch students trains on (the others weigh 0). The
# chain trains the first three; `benchmarks/scratch_distill_seeds.py` any of them.
SCRATCH_ARMS: Dict[str, Tuple[str, ...]] = {
    "mlm-only": ("mlm",),                                # the control: no teacher at all
    "distilled": ("ce", "mlm", "cos"),                   # DistilBERT's triple loss
    "attention": ("att", "mlm"),                         # MiniLM's attention distributions (+ MLM)
    "attention-values": ("att", "val", "mlm"),           # ... and value relations
    "attention-triple": ("att", "ce", "mlm", "cos"),     # attention transfer plus the triple loss
    "relations": ("att", "val"),                         # MiniLM's own loss: the relations alone
    "soft-targets": ("ce",),                             # the ablation: one signal at a time
    "cosine": ("cos",),
    "soft-targets-cosine": ("ce", "cos"),
}
CHAIN_SCRATCH_ARMS = ("mlm-only", "distilled", "attention")


@dataclass
class FinetuneSettings:
    train_examples: Optional[int] = 4000  # None: all 10,202
    test_examples: Optional[int] = None  # None: all 1,275 (fewer only for the smoke test)
    max_length: int = 64
    batch_size: int = 32
    epochs: int = 2  # how each setting was chosen: benchmarks/README.md
    lr: float = 1e-4
    warmup: float = 0.1
    pooling: str = "cls"  # [CLS] like transformers' classifiers, so `export` works; "mean" is an option
    student_layers: Tuple[int, ...] = (0, 2, 4)
    temperature: float = 2.0
    alpha: float = 0.1  # weight of the hard-label cross-entropy; 1 - alpha on the teacher's soft labels
    student_lr: Optional[float] = 3e-4  # None: the teacher's lr
    random_init_lr: float = 5e-4
    # The transfer set (`pipeline.transfer_student`): this many *unlabelled* training reviews after
    # the `train_examples` labelled ones, on which the student learns the teacher's soft labels alone.
    # None: all that remain (6,202 at cpu scale, none when train_examples is None); 0: none. The
    # stages without a transfer set leave it out of their cache keys: it does not change them.
    transfer_examples: Optional[int] = None
    seed: int = 0


# Fields of FinetuneSettings that only the transfer stages read: kept out of the other stages' keys,
# so that their cached models stay valid and a changed transfer set does not retrain them.
TRANSFER_FIELDS = ("transfer_examples",)


@dataclass
class ScaleConfig:
    name: str
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    mlm_teacher: MLMTeacherSettings = field(default_factory=MLMTeacherSettings)
    distill: DistillSettings = field(default_factory=DistillSettings)
    scratch: ScratchSettings = field(default_factory=ScratchSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    compile: bool = False  # torch.compile the models being trained (GPU)
    # Micro-batches per optimiser step. Every stage's `batch_size` is the global batch, whatever
    # the gradient accumulation and the number of processes (torchrun), so neither is in a cache key.
    grad_accum: int = 1
    latency_batch: Tuple[int, int] = (32, 64)  # (batch, sequence length) for the CPU latency

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def default_scale() -> str:
    """The scale named by the environment variable BERTBOOK_SCALE ('cpu', 'gpu' or 'tiny'); when it
    is unset or empty, 'gpu' if CUDA is present, else 'cpu'. Every chapter and the command line
    without --scale run at this scale."""
    chosen = os.environ.get(SCALE_VARIABLE, "")
    if not chosen:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if chosen not in SCALES:
        raise ValueError(f"{SCALE_VARIABLE} must be one of {', '.join(SCALES)} (or unset), got {chosen!r}")
    return chosen


def as_scale_config(scale: Any) -> ScaleConfig:
    """What the pipeline's functions take as `scale`: a ScaleConfig as it is, or a scale's name
    ('cpu', 'gpu', 'tiny'; None: `default_scale()`) as `get_scale_config` makes it."""
    if isinstance(scale, ScaleConfig):
        return scale
    if scale is not None and not isinstance(scale, str):
        raise TypeError(f"scale must be 'cpu', 'gpu', 'tiny' or a ScaleConfig, got {type(scale).__name__}")
    return get_scale_config(scale)


def get_scale_config(scale: Optional[str] = None, **overrides: Any) -> ScaleConfig:
    """The configuration of a whole run at one scale ('cpu', 'gpu', 'tiny'; None: `default_scale()`):
    every stage's settings (a `ScaleConfig`), not a model's `BertConfig`.

    `overrides` set fields as `stage__field=value`, e.g. `pretrain__steps=100`, or top-level fields
    (`compile=True`, `grad_accum=4`). Each value must have its field's type (an int for an int, a
    bool for a bool, ...); the scale's `name` is not an override.
    """
    scale = default_scale() if scale is None else scale
    if scale == "cpu":
        cfg = ScaleConfig("cpu")
    elif scale == "gpu":
        cfg = ScaleConfig(
            "gpu",
            pretrain=PretrainSettings(max_seq_len=128, hidden_size=256, num_hidden_layers=6,
                                      num_attention_heads=4, intermediate_size=1024, batch_size=128,
                                      steps=3000, lr=1e-3, eval_every=500),
            mlm_teacher=MLMTeacherSettings(max_seq_len=128, batch_size=128, steps=1000, eval_every=250),
            distill=DistillSettings(batch_size=128, steps=1000),
            scratch=ScratchSettings(batch_size=128, steps=1000),
            finetune=FinetuneSettings(train_examples=None, epochs=2, lr=1e-4, batch_size=32),
        )
    elif scale == "tiny":
        cfg = ScaleConfig(
            "tiny",
            pretrain=PretrainSettings(vocab_size=8192, max_seq_len=32, hidden_size=16, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=32, batch_size=8,
                                      steps=4, max_train_docs=6, eval_pairs=64),
            mlm_teacher=MLMTeacherSettings(max_seq_len=32, batch_size=8, steps=3, eval_every=0,
                                           max_train_docs=8, eval_pairs=64, selection_docs=2),
            distill=DistillSettings(layers=(0, 2), batch_size=8, steps=3),
            scratch=ScratchSettings(num_hidden_layers=2, batch_size=8, steps=3),
            finetune=FinetuneSettings(train_examples=32, test_examples=32, max_length=16, batch_size=16,
                                      pooling="cls", transfer_examples=48),
            latency_batch=(4, 16),
        )
    else:
        raise ValueError(f"unknown scale {scale!r}; valid scales: {', '.join(SCALES)}")
    for key, value in overrides.items():
        stage, _, name = key.partition("__")
        target = getattr(cfg, stage, None) if name else cfg
        name = name or stage
        if target is None or not is_dataclass(target) or name not in {f.name for f in fields(target)}:
            raise ValueError(f"unknown config override {key!r}")
        if target is cfg and name == "name":
            raise ValueError("'name' is not an override: it names the scale, chosen by the scale argument "
                             f"({', '.join(SCALES)})")
        hint = get_type_hints(type(target))[name]
        if not _has_type(value, hint):
            raise TypeError(f"config override {key} must be {_type_name(hint)}, got {value!r} "
                            f"({type(value).__name__})")
        setattr(target, name, value)
    return copy.deepcopy(cfg)


def _has_type(value: Any, hint: Any) -> bool:
    """Whether `value` fits the type annotation `hint` of a settings field (an int is a float,
    a bool is not an int, a list is a tuple)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union:
        return any(_has_type(value, a) for a in args)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_has_type(v, args[0]) for v in value)
        return len(value) == len(args) and all(_has_type(v, a) for v, a in zip(value, args))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union:
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of ({_type_name(args[0])})"
        return f"a tuple ({', '.join(_type_name(a) for a in args)})"
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))
