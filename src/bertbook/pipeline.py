"""The book's chain of models, each loaded from the cache if a run already trained it, else trained
and cached: so every chapter runs standalone, and the CLI's `report` and the notebooks share models.

    pretrained_teacher   BERT pretrained from scratch on the Wikipedia sample (MLM + NSP)   ch. 5
    mlm_teacher          the real MiniLM-L6-H384, MLM and NSP heads, further pretrained     ch. 6
    copied_student       half of its layers copied into a DistilBERT, untrained: a control
    distilled_student    that copy trained with the triple loss (mlm_only=True: MLM alone)
    scratch_student      the same shape from random weights, trained by one arm of SCRATCH_ARMS:
                         MLM alone, the triple loss, attention transfer (MiniLM's), ...
    finetuned_teacher    the real MiniLM-L6-H384 fine-tuned on Rotten Tomatoes              ch. 7
    finetuned_student    3 of its layers, fine-tuned with (kd=True) or without its soft labels
    teacher_logits       its logits on the labelled reviews and on the transfer set (unlabelled)
    transfer_student     the distilled student plus the transfer set: its soft labels alone there
                         (pseudo_labels=True: its hard labels, the control)
    random_init_classifier   the same 3-layer shape from random weights: the control

Each returns (model, info). The model is in eval mode and on the CPU (`model_device()`), whether
it was trained in this process (on a GPU, if there is one) or loaded from the cache: the same code
runs after either, and the chapters' examples, which make their tensors on the CPU, work on any
machine. For heavy inference on a GPU, move it there yourself; the package's inference helpers
(`fill_mask`, `predict_logits`, `evaluate_classifier`, `PretrainingData.evaluate`,
`viz.attentions_for`) move their inputs to the model's device, and the CPU measurements
(`report.measure_latency`, `benchmark.torch_predict`) run on the CPU; all of them leave the model on its device, in its mode. info holds the measured metrics
(measured where training left the model, before it is moved), the training history, the seconds
it took, the cache key and `cached` (True when loaded). Cache keys hash the stage's settings, the
version of its recipe (`bertbook.recipes`), the data's fingerprint (the tokenizer's content
included) and the upstream model's key. A stage missing
from the cache is fetched from `$BERTBOOK_CHECKPOINTS` when that lists it (`bertbook.share`),
checked and loaded, before training is considered.

The stages' data (`pretraining_data`, `classification_data`, `transfer_data`) are built in
`bertbook.pipeline_data` and importable from here; what the chain measures as a whole (`report`,
latency, the Hugging Face `export`) is in `bertbook.report`.
"""
from __future__ import annotations

import copy
import time
import warnings
from dataclasses import asdict, replace
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import distributed as dist
from .bert import BertConfig, BertForPreTraining, BertForSequenceClassification
from .cache import (CACHE_HINT, CacheWriteWarning, cache_key, check_writable, checkpoint_path, load_checkpoint,
                    save_checkpoint)
from .configs import (CHAIN_SCRATCH_ARMS, SCRATCH_ARMS, TRANSFER_FIELDS, FinetuneSettings, MLMTeacherSettings, PretrainSettings,
                      ScaleConfig, as_scale_config)
from .distilbert import (DistilBertForMaskedLM, DistilBertForSequenceClassification, student_from_teacher,
                         student_layers)
from .distill import distill
from .finetune import classifier_from_pretrained, evaluate_classifier, finetune, predict_logits
from .pipeline_data import (ClassificationData, PretrainingData, TransferData, classification_data, minilm,
                            pretraining_data, transfer_data)
from .pretrain import pretrain
from .recipes import recipe_version
from .share import fetch_checkpoint
from .training import seed_everything

MODEL_CLASSES = {c.__name__: c for c in (BertForPreTraining, DistilBertForMaskedLM,
                                         BertForSequenceClassification, DistilBertForSequenceClassification)}
MODEL_NAMES = ("pretrained", "mlm-teacher", "mlm-student", "mlm-student-mlm-only", "scratch-student-mlm-only",
               "scratch-student-distilled", "scratch-student-attention", "teacher", "student",
               "student-no-kd", "student-transfer", "student-pseudo", "random-init")
Info = Dict[str, Any]


def model_device() -> torch.device:
    """The one device on which every stage returns its model, trained here or loaded: the CPU.
    Training runs on `bertbook.device.get_device()` (a GPU when there is one); the model returned
    is where a loaded one would be, so that a cell works whether the stage was trained or cached."""
    return torch.device("cpu")


def _load_or_build(stage: str, key: str, build: Callable[[], Tuple[Any, Info]], cache_dir: Optional[str],
                   retrain: bool, restore: Callable[[Dict[str, torch.Tensor], Info], Any],
                   tensors_of: Callable[[Any, Info], Dict[str, torch.Tensor]],
                   progress: bool = True) -> Tuple[Any, Info]:
    """Load `<stage>-<key>` from the cache (`restore` turns its tensors into the output), else
    fetch it from `$BERTBOOK_CHECKPOINTS` if that lists it (`share.fetch_checkpoint`), else
    `build()` it and save `tensors_of(output)` atomically, with the info. Whether the checkpoint
    can be written is checked before `build()`; if writing fails even so, the output is returned
    with a CacheWriteWarning that names the path, not lost."""
    path = checkpoint_path(stage, key, cache_dir)
    found = None if retrain else load_checkpoint(path)  # None if missing or corrupt (it warns, deletes)
    if found is None and not retrain and fetch_checkpoint(stage, key, path, progress):
        found = load_checkpoint(path)  # checked against the manifest, and here against its own checksum
    # Under torchrun the ranks train together or not at all: load only if every rank has the file.
    if not dist.all_ranks_agree(found is not None):
        found = None
    if found is not None:
        tensors, info = found
        info["cached"] = True
        return restore(tensors, info), info
    problem = None
    if dist.is_main():  # the one that will write it
        try:
            check_writable(path, CACHE_HINT)
        except OSError as e:
            problem = e
    if not dist.all_ranks_agree(problem is None):
        raise problem or OSError(f"rank 0 cannot write the checkpoint {path}")
    t0 = time.perf_counter()
    out, info = build()
    info.update(stage=stage, key=key, seconds=time.perf_counter() - t0)
    if dist.is_main():  # under torchrun every rank trained the same model; one writes it
        try:
            save_checkpoint(path, tensors_of(out, info), info)
        except OSError as e:
            warnings.warn(f"could not write the checkpoint {path} ({e}); the {stage} model is returned but "
                          "not cached, and will be trained again next time", CacheWriteWarning, stacklevel=3)
    dist.barrier()
    info["cached"] = False
    return out, info


def _cached(stage: str, key: str, build: Callable[[], Tuple[nn.Module, Info]],
            cache_dir: Optional[str], retrain: bool, progress: bool = True) -> Tuple[nn.Module, Info]:
    """A model stage: load `<stage>-<key>` from the cache, else `build()` it and save it. Either
    way the model is returned in eval mode on `model_device()` (a trained one is saved first, from
    wherever training left it; a loaded one comes off the disk on the CPU)."""
    def restore(state: Dict[str, torch.Tensor], info: Info) -> nn.Module:
        model = MODEL_CLASSES[info["class"]](BertConfig.from_dict(info["model_config"]))
        model.load_state_dict(state)
        return model

    def tensors_of(model: nn.Module, info: Info) -> Dict[str, torch.Tensor]:
        info["class"], info["model_config"] = type(model).__name__, model.config.to_dict()
        return model.state_dict()

    model, info = _load_or_build(stage, key, build, cache_dir, retrain, restore, tensors_of, progress)
    return model.to(model_device()).eval(), info


def _cached_tensors(stage: str, key: str, build: Callable[[], Tuple[Dict[str, torch.Tensor], Info]],
                    cache_dir: Optional[str], retrain: bool,
                    progress: bool = True) -> Tuple[Dict[str, torch.Tensor], Info]:
    """A stage whose output is tensors, not a model (the teacher's logits)."""
    return _load_or_build(stage, key, build, cache_dir, retrain, lambda t, _: t, lambda t, _: t, progress)




def _stage_key(stage: str, recipe: str, *parts: Any) -> str:
    """The cache key of `stage`: its name, the version of the recipe that trains it
    (`bertbook.recipes`), then `parts` (its settings, the data's fingerprint, the upstream key, ...)."""
    return cache_key(stage, {"recipe": recipe, "version": recipe_version(recipe)}, *parts)


def _pretrain_key(cfg: ScaleConfig, data: PretrainingData) -> str:
    return _stage_key("pretrain", "pretrain", cfg.pretrain, data.fingerprint)


def _mlm_teacher_key(cfg: ScaleConfig, data: PretrainingData) -> str:
    from .hf import MINILM_HUB_NAME
    return _stage_key("mlm-teacher", "mlm-teacher", cfg.mlm_teacher, data.fingerprint, MINILM_HUB_NAME)


def _distill_key(cfg: ScaleConfig, teacher_key: str, mlm_only: bool, seed: int) -> Tuple[str, str]:
    stage = "distill-mlm-only" if mlm_only else "distill"
    return stage, _stage_key(stage, "distill", cfg.distill, teacher_key, seed)


def _scratch_key(cfg: ScaleConfig, arm: str, teacher_key: str, seed: int) -> Tuple[str, str]:
    stage = f"scratch-{arm}"
    return stage, _stage_key(stage, "scratch", _scratch_settings(arm, cfg), teacher_key, seed)


def _pretraining_info(ev: Dict[str, float], data: PretrainingData) -> Info:
    """The info of an MLM stage: every metric of `PretrainingData.evaluate` as `heldout_*` (held
    out), `train_*` (fixed training batches) or `selection_*`, and the unigram baseline."""
    info = {(k if k.startswith(("train_", "selection_")) else f"heldout_{k}"): v for k, v in ev.items()}
    info.update(unigram_baseline_accuracy=data.unigram_accuracy,
                unigram_mask_accuracy=data.unigram_mask_accuracy, unigram_token=data.unigram_token)
    return info


def _pretrain_with(model: BertForPreTraining, s: Union[PretrainSettings, MLMTeacherSettings], data: PretrainingData, cfg: ScaleConfig,
                   progress: bool) -> Tuple[BertForPreTraining, Info]:
    """Train `model` with MLM + NSP by the stage settings `s` on `data`; the model and its info (held-out metrics, history, provenance)."""
    hist = pretrain(model, data.loader(s.batch_size, s.seed), s.steps, lr=s.lr, warmup=s.warmup,
                    weight_decay=s.weight_decay, eval_batches=data.eval_batches, eval_every=s.eval_every,
                    mask_token_id=data.mask_token_id, compile=cfg.compile, grad_accum=cfg.grad_accum,
                    seed=s.seed, progress=progress)
    return model, {**_pretraining_info(data.evaluate(model), data),
                   "history": hist, **dist.provenance(s.batch_size, cfg.grad_accum)}


def pretrained_teacher(scale: Any = None, cache_dir: Optional[str] = None, retrain: bool = False,
                       progress: bool = True) -> Tuple[BertForPreTraining, Info]:
    """BERT pretrained from scratch (MLM + NSP), chapter 5. info: `heldout_mask_accuracy` (at the
    `[MASK]` positions: the honest measure), `unigram_mask_accuracy` (its baseline),
    `heldout_unchanged_accuracy`, `heldout_random_accuracy`, `heldout_mlm_accuracy` (all selected
    positions), `heldout_nsp_accuracy` and `train_nsp_accuracy` (memorisation), `history`, ..."""
    cfg = as_scale_config(scale)
    p = cfg.pretrain
    data = pretraining_data(cfg, cache_dir)

    def build():
        seed_everything(p.seed)
        model = BertForPreTraining(p.model_config(len(data.tokenizer)))
        return _pretrain_with(model, p, data, cfg, progress)

    return _cached("pretrain", _pretrain_key(cfg, data), build, cache_dir, retrain, progress)


def mlm_teacher(scale: Any = None, cache_dir: Optional[str] = None, retrain: bool = False,
                progress: bool = True) -> Tuple[BertForPreTraining, Info]:
    """The real MiniLM-L6-H384 with a fresh MLM head (tied to its word embeddings) and NSP head,
    further pretrained on the Wikipedia sample with its own tokenizer (continued pretraining):
    chapter 6's teacher. info: as `pretrained_teacher`'s."""
    cfg = as_scale_config(scale)
    t = cfg.mlm_teacher
    data = pretraining_data(cfg, cache_dir, tokenizer="minilm")

    def build():
        seed_everything(t.seed)  # the fresh heads
        bert, _ = minilm()
        model = BertForPreTraining(copy.deepcopy(bert.config))
        model.bert.load_state_dict(bert.state_dict())  # encoder and pooler; the heads stay fresh
        return _pretrain_with(model, t, data, cfg, progress)

    return _cached("mlm-teacher", _mlm_teacher_key(cfg, data), build, cache_dir, retrain, progress)


def copied_student(scale: Any = None, cache_dir: Optional[str] = None, layers: Optional[Sequence[int]] = None,
                   progress: bool = True) -> Tuple[DistilBertForMaskedLM, Info]:
    """The MLM teacher's layers `layers` (default: the distill settings', where None means every
    other teacher layer, `distilbert.default_student_layers`) copied into a DistilBERT,
    not trained: the control that shows what initialisation alone gives. Cheap, so not cached.
    Returned in eval mode on `model_device()`, as the stages' models are (its metrics are measured
    on the CPU, where the copy is built). info: the held-out metrics, as the stages'."""
    cfg = as_scale_config(scale)
    teacher, _ = mlm_teacher(cfg, cache_dir, progress=progress)
    # None here means the distill settings' layers; None there, every other teacher layer
    layers = student_layers(cfg.distill.layers if layers is None else layers, teacher.config.num_hidden_layers)
    data = pretraining_data(cfg, cache_dir, tokenizer="minilm")
    student = student_from_teacher(teacher, layers).eval()
    info = {**_pretraining_info(data.evaluate(student), data), "layers": layers}
    return student.to(model_device()).eval(), info


def distilled_student(scale: Any = None, cache_dir: Optional[str] = None, mlm_only: bool = False,
                      seed: Optional[int] = None, retrain: bool = False,
                      progress: bool = True) -> Tuple[DistilBertForMaskedLM, Info]:
    """DistilBERT initialised from the `distill.layers` of `mlm_teacher` and trained on the
    Wikipedia sample with the triple loss, or with `mlm_only=True` on the MLM loss alone
    (α_ce = α_cos = 0: the control that isolates what the teacher adds; same batches, same steps).
    info: the held-out metrics as `pretrained_teacher`'s, `teacher_heldout_mask_accuracy`, `history`."""
    cfg = as_scale_config(scale)
    d = cfg.distill
    seed = d.seed if seed is None else seed
    teacher, tinfo = mlm_teacher(cfg, cache_dir, progress=progress)
    data = pretraining_data(cfg, cache_dir, tokenizer="minilm")
    alpha_ce, alpha_cos = (0.0, 0.0) if mlm_only else (d.alpha_ce, d.alpha_cos)

    def build():
        student = student_from_teacher(teacher, d.layers)
        hist = distill(teacher, student, data.loader(d.batch_size, seed), d.steps, lr=d.lr,
                       warmup=d.warmup, temperature=d.temperature, alpha_ce=alpha_ce,
                       alpha_mlm=d.alpha_mlm, alpha_cos=alpha_cos, mask_token_id=data.mask_token_id,
                       compile=cfg.compile, grad_accum=cfg.grad_accum, seed=seed, progress=progress)
        return student, {**_pretraining_info(data.evaluate(student), data), "mlm_only": mlm_only,
                         "seed": seed, "teacher_heldout_mask_accuracy": tinfo["heldout_mask_accuracy"],
                         "history": hist, **dist.provenance(d.batch_size, cfg.grad_accum)}

    stage, key = _distill_key(cfg, tinfo["key"], mlm_only, seed)
    return _cached(stage, key, build, cache_dir, retrain, progress)


def _scratch_settings(arm: str, cfg: ScaleConfig) -> Dict[str, Any]:
    """The scratch settings that decide arm `arm`'s weights: the loss weights of the terms it does
    not train on are 0, and settings it never reads are left out (so they are not in its key)."""
    terms = SCRATCH_ARMS[arm]
    out = asdict(cfg.scratch)
    for term in ("ce", "mlm", "cos", "att", "val"):
        if term not in terms:
            out[f"alpha_{term}"] = 0.0
    if "ce" not in terms:
        del out["temperature"]
    if "att" not in terms and "val" not in terms:
        del out["attention_layers"]
    return out


def scratch_student(scale: Any = None, cache_dir: Optional[str] = None, arm: str = "mlm-only",
                    seed: Optional[int] = None, retrain: bool = False,
                    progress: bool = True) -> Tuple[DistilBertForMaskedLM, Info]:
    """A DistilBERT of the distilled student's shape (`scratch.num_hidden_layers` layers of the MLM
    teacher's width and heads) from random weights, trained on the distillation batches by one arm
    of `SCRATCH_ARMS`: "mlm-only" (the control, no teacher), "distilled" (the triple loss),
    "attention" (MiniLM's attention transfer plus MLM), ... Unlike `distilled_student`, nothing
    of the teacher is in its weights at the start: what it knows of the teacher came through the loss.
    info: the held-out metrics as `pretrained_teacher`'s, `arm`, `terms`, `seed`,
    `teacher_heldout_mask_accuracy`, `history`."""
    if arm not in SCRATCH_ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid arms: {', '.join(SCRATCH_ARMS)}")
    cfg = as_scale_config(scale)
    sc = cfg.scratch
    seed = sc.seed if seed is None else seed
    teacher, tinfo = mlm_teacher(cfg, cache_dir, progress=progress)
    data = pretraining_data(cfg, cache_dir, tokenizer="minilm")
    w = _scratch_settings(arm, cfg)

    def build():
        seed_everything(seed)  # the random weights
        config = replace(teacher.config, num_hidden_layers=sc.num_hidden_layers)  # validated
        student = DistilBertForMaskedLM(config)
        layers = None if sc.attention_layers is None else [tuple(p) for p in sc.attention_layers]
        hist = distill(teacher, student, data.loader(sc.batch_size, seed), sc.steps, lr=sc.lr,
                       warmup=sc.warmup, temperature=sc.temperature, alpha_ce=w["alpha_ce"],
                       alpha_mlm=w["alpha_mlm"], alpha_cos=w["alpha_cos"], alpha_att=w["alpha_att"],
                       alpha_val=w["alpha_val"], attention_layers=layers, mask_token_id=data.mask_token_id,
                       compile=cfg.compile,
                       grad_accum=cfg.grad_accum, seed=seed, progress=progress)
        return student, {**_pretraining_info(data.evaluate(student), data), "arm": arm,
                         "terms": list(SCRATCH_ARMS[arm]), "seed": seed,
                         "teacher_heldout_mask_accuracy": tinfo["heldout_mask_accuracy"],
                         "history": hist, **dist.provenance(sc.batch_size, cfg.grad_accum)}

    stage, key = _scratch_key(cfg, arm, tinfo["key"], seed)
    return _cached(stage, key, build, cache_dir, retrain, progress)


# --------------------------------------------------------------------------- classification


def _student_settings(f: FinetuneSettings) -> Dict[str, Any]:
    """The finetune settings in a cache key of a stage without a transfer set: the transfer fields
    left out, since they do not change such a stage's model."""
    return {k: v for k, v in asdict(f).items() if k not in TRANSFER_FIELDS}


def _teacher_key(cfg: ScaleConfig, data: ClassificationData) -> str:
    from .hf import MINILM_HUB_NAME as HUB_NAME

    f = cfg.finetune
    settings = {k: getattr(f, k) for k in ("train_examples", "test_examples", "max_length", "batch_size",
                                           "epochs", "lr", "warmup", "pooling", "seed")}
    return _stage_key("teacher", "teacher", settings, data.fingerprint, HUB_NAME)


def finetuned_teacher(scale: Any = None, cache_dir: Optional[str] = None, retrain: bool = False,
                      progress: bool = True) -> Tuple[BertForSequenceClassification, Info]:
    """The pretrained MiniLM-L6-H384 fine-tuned on Rotten Tomatoes. info: `test_accuracy`, ..."""
    cfg = as_scale_config(scale)
    f = cfg.finetune
    data = classification_data(cfg)

    def build():
        bert, _ = minilm()
        model = classifier_from_pretrained(bert, len(data.label_names), f.pooling, seed=f.seed)
        hist = finetune(model, data.train_batches, f.epochs, f.lr, f.warmup, seed=f.seed, progress=progress,
                        grad_accum=cfg.grad_accum)
        return model, {"test_accuracy": evaluate_classifier(model, data.test_batches),
                       "history": hist, **dist.provenance(f.batch_size, cfg.grad_accum)}

    return _cached("teacher", _teacher_key(cfg, data), build, cache_dir, retrain, progress)


def finetuned_student(scale: Any = None, cache_dir: Optional[str] = None, kd: bool = True,
                      seed: Optional[int] = None, retrain: bool = False,
                      progress: bool = True) -> Tuple[DistilBertForSequenceClassification, Info]:
    """A DistilBERT classifier initialised from teacher layers `student_layers` and fine-tuned with
    the teacher's soft labels (kd=True: α·CE + (1 − α)·T²·KL) or with the labels alone (kd=False,
    the twin that isolates what distillation adds: same initialisation, same batches).
    info: `test_accuracy`, ..."""
    cfg = as_scale_config(scale)
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

    key = _student_key(f, tinfo["key"], kd, seed)
    return _cached("student" if kd else "student-no-kd", key, build, cache_dir, retrain, progress)


def _student_key(f: FinetuneSettings, teacher_key: str, kd: bool, seed: int) -> str:
    return _stage_key("student", "student", _student_settings(f), teacher_key, kd, seed)


def _teacher_logits_key(tinfo: Info, transfer: TransferData) -> str:
    # The teacher's key covers the data, the labelled reviews and their batches; add the transfer set.
    return _stage_key("teacher-logits", "teacher-logits", tinfo["key"], transfer.start, len(transfer.texts))


def _transfer_key(f: FinetuneSettings, transfer: TransferData, logits_key: str, pseudo_labels: bool,
                  seed: int) -> str:
    settings = {**_student_settings(f), "transfer_examples": len(transfer.texts)}  # None and its count: one key
    return _stage_key("student-transfer", "student-transfer", settings, logits_key, pseudo_labels, seed)


def _random_init_key(f: FinetuneSettings, data: ClassificationData, seed: int) -> str:
    return _stage_key("random-init", "random-init", _student_settings(f), data.fingerprint, seed)


def teacher_logits(scale: Any = None, cache_dir: Optional[str] = None, retrain: bool = False,
                   progress: bool = True) -> Tuple[Dict[str, torch.Tensor], Info]:
    """The fine-tuned teacher's logits, computed once and cached as a stage of its own (a tensor
    file, `teacher-logits-<key>`), so that every seed and both transfer students share one pass of
    the teacher: `labelled` (N, C) on the labelled training reviews and `transfer` (M, C) on the
    transfer set (M = 0 without one), rows by example index (the batches' `index`)."""
    cfg = as_scale_config(scale)
    data, transfer = classification_data(cfg), transfer_data(cfg)
    teacher, tinfo = finetuned_teacher(cfg, cache_dir, progress=progress)

    def build():
        labelled = predict_logits(teacher, data.train_batches)
        unlabelled = predict_logits(teacher, transfer.batches) if transfer.batches else \
            labelled.new_zeros((0, labelled.shape[1]))
        return {"labelled": labelled, "transfer": unlabelled}, {"transfer_examples": len(transfer.texts),
                                                               "teacher_key": tinfo["key"]}

    return _cached_tensors("teacher-logits", _teacher_logits_key(tinfo, transfer), build, cache_dir, retrain, progress)


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
    cfg = as_scale_config(scale)
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

    key = _transfer_key(f, transfer, logits_key, pseudo_labels, seed)
    return _cached("student-pseudo" if pseudo_labels else "student-transfer", key, build, cache_dir, retrain, progress)


def random_init_classifier(scale: Any = None, cache_dir: Optional[str] = None, seed: Optional[int] = None,
                           retrain: bool = False, progress: bool = True
                           ) -> Tuple[DistilBertForSequenceClassification, Info]:
    """The student's shape from random weights, fine-tuned on the same batches: what pretraining
    is worth. info: `test_accuracy`, ..."""
    cfg = as_scale_config(scale)
    f = cfg.finetune
    seed = f.seed if seed is None else seed
    data = classification_data(cfg)
    bert, _ = minilm()

    def build():
        seed_everything(seed)
        config = replace(bert.config, num_hidden_layers=len(f.student_layers),
                         num_labels=len(data.label_names), classifier_pooling=f.pooling)  # validated
        model = DistilBertForSequenceClassification(config)
        hist = finetune(model, data.train_batches, f.epochs, f.random_init_lr, f.warmup, seed=seed,
                        progress=progress, grad_accum=cfg.grad_accum)
        return model, {"test_accuracy": evaluate_classifier(model, data.test_batches), "seed": seed,
                       "history": hist, **dist.provenance(f.batch_size, cfg.grad_accum)}

    key = _random_init_key(f, data, seed)
    return _cached("random-init", key, build, cache_dir, retrain, progress)


# --------------------------------------------------------------------------- the chain's keys


def chain_keys(scale: Any = None, cache_dir: Optional[str] = None) -> Dict[str, str]:
    """{checkpoint name: key} of every stage the chain trains (`bertbook.report`), computed from the
    settings and the data alone, without training or loading anything: the names the cache's files
    get (`<name>-<key>.safetensors`). `book/checkpoints.json` lists the same names and keys."""
    cfg = as_scale_config(scale)
    f = cfg.finetune
    wiki, mini = pretraining_data(cfg, cache_dir), pretraining_data(cfg, cache_dir, tokenizer="minilm")
    reviews, transfer = classification_data(cfg), transfer_data(cfg)
    keys = {"pretrain": _pretrain_key(cfg, wiki), "mlm-teacher": _mlm_teacher_key(cfg, mini)}
    for mlm_only in (False, True):
        stage, key = _distill_key(cfg, keys["mlm-teacher"], mlm_only, cfg.distill.seed)
        keys[stage] = key
    for arm in CHAIN_SCRATCH_ARMS:
        stage, key = _scratch_key(cfg, arm, keys["mlm-teacher"], cfg.scratch.seed)
        keys[stage] = key
    keys["teacher"] = _teacher_key(cfg, reviews)
    keys["student"] = _student_key(f, keys["teacher"], True, f.seed)
    keys["student-no-kd"] = _student_key(f, keys["teacher"], False, f.seed)
    keys["teacher-logits"] = logits_key = _teacher_logits_key({"key": keys["teacher"]}, transfer)
    keys["student-transfer"] = _transfer_key(f, transfer, logits_key, False, f.seed)
    keys["student-pseudo"] = _transfer_key(f, transfer, logits_key, True, f.seed)
    keys["random-init"] = _random_init_key(f, reviews, f.seed)
    return keys


# --------------------------------------------------------------------------- by name


MLM_MODELS = ("pretrained", "mlm-teacher", "mlm-student", "mlm-student-mlm-only", "scratch-student-mlm-only",
              "scratch-student-distilled", "scratch-student-attention")


def get_model(name: str, scale: Any = None, cache_dir: Optional[str] = None,
              progress: bool = True) -> Tuple[nn.Module, Info]:
    """One of MODEL_NAMES by name (trains it and what it needs if not cached), in eval mode on
    `model_device()`, as every stage returns it."""
    stages = {
        "pretrained": lambda: pretrained_teacher(scale, cache_dir, progress=progress),
        "mlm-teacher": lambda: mlm_teacher(scale, cache_dir, progress=progress),
        "mlm-student": lambda: distilled_student(scale, cache_dir, progress=progress),
        "mlm-student-mlm-only": lambda: distilled_student(scale, cache_dir, mlm_only=True, progress=progress),
        "scratch-student-mlm-only": lambda: scratch_student(scale, cache_dir, "mlm-only", progress=progress),
        "scratch-student-distilled": lambda: scratch_student(scale, cache_dir, "distilled", progress=progress),
        "scratch-student-attention": lambda: scratch_student(scale, cache_dir, "attention", progress=progress),
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
