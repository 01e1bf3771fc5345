"""Pretraining BERT from scratch (chapter 5): L = L_MLM + L_NSP.

Batches come from `bertbook.masking.PretrainingCollator`: `input_ids`, `token_type_ids`,
`attention_mask` (B, L), `labels` (B, L) with -100 wherever there is no loss (so padding and
unmasked tokens never count), `next_sentence_label` (B,). The MLM decoder runs only on the
N labelled positions, (N, V) logits instead of (B, L, V).
"""
from __future__ import annotations

import inspect
import time
from collections import Counter
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .bert import BertForPreTraining
from .training import Optimizer, cycle, maybe_compile, seed_everything, to_device

History = Dict[str, List[float]]
Batch = Mapping[str, Tensor]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def _check_pretraining_batch(batch: Batch) -> None:
    missing = [k for k in ("input_ids", "attention_mask", "labels") if k not in batch]
    if missing:
        raise ValueError(f"pretraining batch is missing keys {missing}; got {sorted(batch)}")


def pretrain(
    model: BertForPreTraining,
    train_batches: Iterable[Batch],
    steps: int,
    lr: float = 1e-3,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    eval_batches: Optional[Sequence[Batch]] = None,
    eval_every: int = 0,
    log_every: int = 10,
    device: Optional[Union[str, torch.device]] = None,
    amp: Optional[bool] = None,
    compile: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> History:
    """Train `model` for `steps` optimiser steps on `train_batches` (cycled; a DataLoader re-masks
    each pass). Returns the history: every `log_every` steps the mean train `loss`, `mlm_loss`,
    `nsp_loss`, `mlm_accuracy`, `nsp_accuracy`, `lr` (with their `step`), and every `eval_every`
    steps (and at the end) the held-out `eval_*` metrics of `evaluate_pretraining`; plus
    `tokens_per_second` and `seconds` (one value each). Tokens counted are non-padding tokens.
    """
    if not isinstance(model, BertForPreTraining):
        raise TypeError(f"pretrain expects a BertForPreTraining, got {type(model).__name__}")
    seed_everything(seed)
    opt = Optimizer(model, steps, lr, warmup, weight_decay, max_grad_norm, device, amp)
    model.to(opt.device).train()
    run = maybe_compile(model, compile)
    hist: History = {k: [] for k in ("step", "loss", "mlm_loss", "nsp_loss", "mlm_accuracy",
                                     "nsp_accuracy", "lr", "eval_step")}
    window: Dict[str, float] = Counter()
    tokens, t0 = 0, time.perf_counter()
    batches = cycle(train_batches)
    with _progress(steps, "pretrain", progress) as bar:
        for step in range(1, steps + 1):
            batch = next(batches)
            _check_pretraining_batch(batch)
            batch = to_device(batch, opt.device)
            with opt.autocast():
                out = run(**batch)
            opt.step(out.loss)
            with torch.no_grad():  # running metrics, read off tensors we already have
                labels = batch["labels"][batch["labels"] != -100]
                window["mlm_correct"] += (out.logits.argmax(-1) == labels).sum().item()
                window["mlm_n"] += labels.numel()
                if out.nsp_loss is not None:
                    nsl = batch["next_sentence_label"]
                    window["nsp_correct"] += (out.seq_relationship_logits.argmax(-1) == nsl).sum().item()
                    window["nsp_n"] += nsl.numel()
                    window["nsp_loss"] += out.nsp_loss.item()
                window["loss"] += out.loss.item()
                window["mlm_loss"] += out.mlm_loss.item()
                window["n"] += 1
            tokens += int(batch["attention_mask"].sum())
            if step % log_every == 0 or step == steps:
                n = window["n"]
                hist["step"].append(step)
                hist["loss"].append(window["loss"] / n)
                hist["mlm_loss"].append(window["mlm_loss"] / n)
                hist["nsp_loss"].append(window["nsp_loss"] / n)
                hist["mlm_accuracy"].append(window["mlm_correct"] / max(window["mlm_n"], 1))
                hist["nsp_accuracy"].append(window["nsp_correct"] / max(window["nsp_n"], 1))
                hist["lr"].append(opt.lr)
                bar.set_postfix(loss=f"{hist['loss'][-1]:.3f}", mlm_acc=f"{hist['mlm_accuracy'][-1]:.3f}")
                window = Counter()
            if eval_batches is not None and ((eval_every and step % eval_every == 0) or step == steps):
                for k, v in evaluate_pretraining(model, eval_batches, opt.device).items():
                    hist.setdefault(f"eval_{k}", []).append(v)
                hist["eval_step"].append(step)
                model.train()
            bar.update(1)
    seconds = time.perf_counter() - t0
    hist["seconds"] = [seconds]
    hist["tokens_per_second"] = [tokens / seconds]
    model.eval()
    return hist


@torch.no_grad()
def evaluate_pretraining(model: BertForPreTraining, batches: Iterable[Batch],
                         device: Optional[Union[str, torch.device]] = None) -> Dict[str, float]:
    """Held-out `mlm_accuracy` (over masked positions), `mlm_loss`, and for a model with an NSP head
    `nsp_accuracy`, `nsp_loss`. Works for DistilBertForMaskedLM too (batch keys it does not take,
    token types and NSP labels, are dropped). Use batches masked once with a fixed seed, so that
    every evaluation sees the same masks."""
    device = next(model.parameters()).device if device is None else torch.device(device)
    model.to(device).eval()
    accepted = set(inspect.signature(model.forward).parameters)
    sums: Dict[str, float] = Counter()
    for batch in batches:
        _check_pretraining_batch(batch)
        batch = to_device(batch, device)
        out = model(**{k: v for k, v in batch.items() if k in accepted})
        labels = batch["labels"][batch["labels"] != -100]
        sums["mlm_correct"] += (out.logits.argmax(-1) == labels).sum().item()
        sums["mlm_loss"] += out.mlm_loss.item() * labels.numel()  # weight by positions, not batches
        sums["mlm_n"] += labels.numel()
        if out.nsp_loss is not None:
            nsl = batch["next_sentence_label"]
            sums["nsp_correct"] += (out.seq_relationship_logits.argmax(-1) == nsl).sum().item()
            sums["nsp_loss"] += out.nsp_loss.item() * nsl.numel()
            sums["nsp_n"] += nsl.numel()
    if not sums["mlm_n"]:
        raise ValueError("evaluate_pretraining got no masked positions (empty data set?)")
    res = {"mlm_accuracy": sums["mlm_correct"] / sums["mlm_n"], "mlm_loss": sums["mlm_loss"] / sums["mlm_n"]}
    if sums["nsp_n"]:
        res.update(nsp_accuracy=sums["nsp_correct"] / sums["nsp_n"], nsp_loss=sums["nsp_loss"] / sums["nsp_n"])
    return res


def unigram_baseline(train_token_ids: Iterable[Sequence[int]], eval_batches: Iterable[Batch],
                     special_ids: Sequence[int] = ()) -> Tuple[int, float]:
    """(token id, accuracy) of always guessing the most frequent training token at each masked
    held-out position: the plateau a model reaches by learning only token frequencies."""
    counts: Counter = Counter()
    for ids in train_token_ids:
        counts.update(ids)
    for s in special_ids:
        counts.pop(s, None)
    if not counts:
        raise ValueError("unigram_baseline got no training tokens (empty data set?)")
    top = counts.most_common(1)[0][0]
    hit = n = 0
    for batch in eval_batches:
        labels = batch["labels"][batch["labels"] != -100]
        hit += int((labels == top).sum())
        n += labels.numel()
    if not n:
        raise ValueError("unigram_baseline got no masked held-out positions")
    return top, hit / n
