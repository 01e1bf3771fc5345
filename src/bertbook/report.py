"""What the chain of models measures, in one place: the CPU latency of any of our models,
`report` (every stage of `pipeline`, run or loaded, and their results as one flat dict: the JSON
of `python -m bertbook report`) and `export` (a stage's model in Hugging Face format).
"""
from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any, Dict, Optional

import torch
from torch import nn

from .benchmark import fixed_batch, time_in_turn
from .cache import OUTPUT_HINT, check_writable
from .configs import as_scale_config
from .device import evaluating
from .distilbert import student_layers
from .pipeline import (MLM_MODELS, classification_data, copied_student, distilled_student,
                       finetuned_student, finetuned_teacher, get_model, mlm_teacher, pretrained_teacher,
                       pretraining_data, random_init_classifier, scratch_student, transfer_student)


@torch.inference_mode()
def measure_latency(models: Dict[str, nn.Module], batch_size: int = 32, seq_len: int = 64,
                    min_run_time: float = 1.0, rounds: int = 3, seed: int = 0) -> Dict[str, float]:
    """Median seconds per forward pass of each model (ours or transformers', any head) on the CPU,
    on one (batch_size, seq_len) batch of random ids with no padding. Each model is timed by
    `benchmark.latency` (torch.utils.benchmark, warm-up excluded, the current thread count), in
    turn, `rounds` times over, so that a busy spell of the machine slows them alike; the median is
    over all the timed blocks. Afterwards each model is back on its device, in its mode."""
    if not models:
        raise ValueError("measure_latency got no models")
    batch = fixed_batch(min(m.config.vocab_size for m in models.values()), batch_size, seq_len, seed)
    with evaluating(list(models.values()), "cpu"):
        times = time_in_turn({name: (lambda b, m=m: m(b["input_ids"], b["attention_mask"]), [batch])
                              for name, m in models.items()}, rounds, min_run_time=min_run_time)
    return {name: statistics.median(x for t in ts for x in t["times_ms"]) / 1000 for name, ts in times.items()}


def report(scale: Any = None, cache_dir: Optional[str] = None, progress: bool = True,
           latency_min_run_time: float = 1.0, latency_rounds: int = 3) -> Dict[str, Any]:
    """Run (or load) the whole chain and return the results as one flat dict (see README)."""
    cfg = as_scale_config(scale)
    t0 = time.perf_counter()
    _, pre = pretrained_teacher(cfg, cache_dir, progress=progress)
    mlm_t, tmlm = mlm_teacher(cfg, cache_dir, progress=progress)
    _, cop = copied_student(cfg, cache_dir, progress=progress)
    mlm_s, dis = distilled_student(cfg, cache_dir, progress=progress)
    _, dmo = distilled_student(cfg, cache_dir, mlm_only=True, progress=progress)
    _, smo = scratch_student(cfg, cache_dir, "mlm-only", progress=progress)
    _, sdi = scratch_student(cfg, cache_dir, "distilled", progress=progress)
    _, sat = scratch_student(cfg, cache_dir, "attention", progress=progress)
    teacher, tea = finetuned_teacher(cfg, cache_dir, progress=progress)
    student, stu = finetuned_student(cfg, cache_dir, kd=True, progress=progress)
    _, nokd = finetuned_student(cfg, cache_dir, kd=False, progress=progress)
    _, tra = transfer_student(cfg, cache_dir, progress=progress)
    _, pse = transfer_student(cfg, cache_dir, pseudo_labels=True, progress=progress)
    _, rnd = random_init_classifier(cfg, cache_dir, progress=progress)
    b, L = cfg.latency_batch
    lat = measure_latency({"teacher": teacher, "student": student, "mlm_teacher": mlm_t, "mlm_student": mlm_s},
                          b, L, latency_min_run_time, latency_rounds)
    infos = {"pretrain": pre, "mlm_teacher": tmlm, "distill": dis, "distill_mlm_only": dmo,
             "scratch_mlm_only": smo, "scratch_distilled": sdi, "scratch_attention": sat, "teacher": tea,
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
        # the same shape from random weights: what the teacher passes on through the loss alone
        "scratch_student_mlm_only_heldout_mask_accuracy": smo["heldout_mask_accuracy"],
        "scratch_student_distilled_heldout_mask_accuracy": sdi["heldout_mask_accuracy"],
        "scratch_student_attention_transfer_heldout_mask_accuracy": sat["heldout_mask_accuracy"],
        "distill_layers": student_layers(cfg.distill.layers, mlm_t.config.num_hidden_layers),
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


def export(name: str, out_dir: str, scale: Any = None, cache_dir: Optional[str] = None,
           progress: bool = True) -> str:
    """Write model `name` in Hugging Face format (with its tokenizer) to `out_dir`:
    `transformers.pipeline("fill-mask", out_dir)` loads the MLM models (`MLM_MODELS`),
    `pipeline("text-classification", out_dir)` the classifiers."""
    from .hf import save_pretrained

    pooling = as_scale_config(scale).finetune.pooling
    if pooling != "cls" and name not in MLM_MODELS:
        raise ValueError(
            f"{name!r} is fine-tuned with {pooling!r} pooling, which Hugging Face's classifiers do not "
            "have (they pool the [CLS] vector); use a config with finetune pooling='cls' to export it")
    check_writable(os.path.join(out_dir, "config.json"), OUTPUT_HINT)  # before training
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
