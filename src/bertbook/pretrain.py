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
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from . import distributed as dist
from .bert import BertForPreTraining
from .masking import IGNORE_INDEX
from .training import History, RunningMetrics, TrainStep, cycle, maybe_compile, seed_everything, to_device

Batch = Mapping[str, Tensor]


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
    mask_token_id: Optional[int] = None,
    log_every: int = 10,
    device: Optional[Union[str, torch.device]] = None,
    amp: Optional[bool] = None,
    compile: bool = False,
    seed: int = 0,
    progress: bool = True,
    grad_accum: int = 1,
) -> History:
    """Train `model` for `steps` optimiser steps on `train_batches` (cycled; a DataLoader re-masks
    each pass). Returns the history: every `log_every` steps the mean train `loss`, `mlm_loss`,
    `nsp_loss`, `mlm_accuracy`, `nsp_accuracy`, `lr` (with their `step`), and every `eval_every`
    steps (and at the end) the held-out `eval_*` metrics of `evaluate_pretraining` (with
    `mask_token_id`, those at `[MASK]`, random and unchanged positions too); plus
    `tokens_per_second` and `seconds` (one value each). Tokens counted are non-padding tokens.

    Each batch of `train_batches` is one optimiser step's global batch. `grad_accum` > 1 cuts it
    into that many micro-batches whose gradients add up before the step (less memory, the same
    update). Under `torchrun` (see `bertbook.distributed`) each process trains on its rows of every
    global batch, as DDP; the metrics are those of the global batch, and only rank 0 evaluates.
    A batch with fewer rows than processes x `grad_accum` (a short last batch) is skipped.
    """
    if not isinstance(model, BertForPreTraining):
        raise TypeError(f"pretrain expects a BertForPreTraining, got {type(model).__name__}")
    dist.check_grad_accum(grad_accum)
    seed_everything(seed + dist.rank())  # dropout differs per rank; the data has its own generators
    opt = TrainStep(model, steps, lr, warmup, weight_decay, max_grad_norm, device, amp)
    model.to(opt.device).train()
    run = dist.wrap(maybe_compile(model, compile), opt.device)
    hist: History = {k: [] for k in ("step", "loss", "mlm_loss", "nsp_loss", "mlm_accuracy",
                                     "nsp_accuracy", "lr", "eval_step")}
    tokens, t0 = 0, time.perf_counter()
    batches = cycle(train_batches, dist.parts(grad_accum))  # a batch too short to split is skipped
    world = dist.world_size()
    sums = ("loss", "mlm_loss", "nsp_loss", "mlm_correct", "mlm_n", "nsp_correct", "nsp_n")
    with RunningMetrics(steps, sums, log_every, "pretrain", progress) as metrics:
        for step in range(1, steps + 1):
            batch = next(batches)
            _check_pretraining_batch(batch)
            # The global batch's counts: each micro-batch's mean losses are weighted by its share.
            n_labelled = (batch["labels"] != IGNORE_INDEX).sum()
            n_pairs = torch.tensor(batch["labels"].shape[0])
            micros = dist.micro_batches(batch, grad_accum)
            for a, micro in enumerate(micros):
                micro = to_device(micro, opt.device)
                labels = micro["labels"][micro["labels"] != IGNORE_INDEX]
                with dist.no_sync(run, a < len(micros) - 1):
                    with opt.autocast():
                        out = run(**micro)
                        # (0-d tensors: 1.0 when one process takes the whole batch, so the loss is
                        # bit for bit the model's own `out.loss`.)
                        w_mlm = dist.share(torch.tensor(labels.numel()), n_labelled).to(opt.device)
                        # A micro-batch without a masked position adds 0, through the graph (DDP
                        # needs every parameter in it).
                        mlm = out.mlm_loss * w_mlm if labels.numel() else out.logits.sum() * 0.0
                        loss = mlm
                        if out.nsp_loss is not None:
                            w_nsp = dist.share(torch.tensor(micro["labels"].shape[0]), n_pairs).to(opt.device)
                            nsp = out.nsp_loss * w_nsp
                            loss = mlm + nsp
                    opt.backward(loss)
                with torch.no_grad():  # running metrics, read off tensors we already have
                    metrics.add(mlm_correct=(out.logits.argmax(-1) == labels).sum().item(), mlm_n=labels.numel())
                    if out.nsp_loss is not None:
                        nsl = micro["next_sentence_label"]
                        metrics.add(nsp_correct=(out.seq_relationship_logits.argmax(-1) == nsl).sum().item(),
                                    nsp_n=nsl.numel(), nsp_loss=nsp.item() / world)
                    metrics.add(loss=loss.item() / world, mlm_loss=mlm.item() / world)
                tokens += int(micro["attention_mask"].sum())
            opt.update()
            total = metrics.end_step(step)
            if total is not None:
                n = total["n"]
                hist["step"].append(step)
                hist["loss"].append(total["loss"] / n)
                hist["mlm_loss"].append(total["mlm_loss"] / n)
                hist["nsp_loss"].append(total["nsp_loss"] / n)
                hist["mlm_accuracy"].append(total["mlm_correct"] / max(total["mlm_n"], 1))
                hist["nsp_accuracy"].append(total["nsp_correct"] / max(total["nsp_n"], 1))
                hist["lr"].append(opt.lr)
                metrics.bar.set_postfix(loss=f"{hist['loss'][-1]:.3f}", mlm_acc=f"{hist['mlm_accuracy'][-1]:.3f}")
            if eval_batches is not None and ((eval_every and step % eval_every == 0) or step == steps):
                if dist.is_main():  # the bare model: DDP's forward would wait for the other ranks
                    for k, v in evaluate_pretraining(model, eval_batches, opt.device, mask_token_id).items():
                        hist.setdefault(f"eval_{k}", []).append(v)
                    hist["eval_step"].append(step)
                    model.train()
                dist.barrier()
    (tokens,) = dist.all_reduce_sum([tokens])
    seconds = time.perf_counter() - t0
    hist["seconds"] = [seconds]
    hist["tokens_per_second"] = [tokens / seconds]
    model.eval()
    return hist


KINDS = ("mask", "random", "unchanged")


def position_kinds(batch: Batch, mask_token_id: int) -> Dict[str, Tensor]:
    """Split the labelled positions of a batch by what the input shows there: `mask` ([MASK]),
    `random` (another token) and `unchanged` (the answer itself). Each value is a (N,) bool
    tensor over the N labelled positions, in the order of `labels[labels != -100]`. A random
    replacement that happened to draw the original token shows the answer, so it counts as
    unchanged: that is what the model sees."""
    selected = batch["labels"] != IGNORE_INDEX
    shown, answer = batch["input_ids"][selected], batch["labels"][selected]
    is_mask = shown == mask_token_id
    same = shown == answer
    return {"mask": is_mask, "random": ~is_mask & ~same, "unchanged": ~is_mask & same}


@torch.no_grad()
def evaluate_pretraining(model: BertForPreTraining, batches: Iterable[Batch],
                         device: Optional[Union[str, torch.device]] = None,
                         mask_token_id: Optional[int] = None) -> Dict[str, float]:
    """Held-out `mlm_accuracy` and `mlm_loss` over all selected positions, and for a model with an
    NSP head `nsp_accuracy`, `nsp_loss`. With `mask_token_id` also, separately for the positions
    that show `[MASK]`, a random token or the unchanged token (`position_kinds`):
    `mask_accuracy`, `mask_loss`, `random_accuracy`, `random_loss`, `unchanged_accuracy`,
    `unchanged_loss` and the counts `mask_n`, `random_n`, `unchanged_n`. The `[MASK]` positions are
    the honest measure: at the unchanged 10% a model can copy its input.

    Works for DistilBertForMaskedLM too (batch keys it does not take, token types and NSP labels,
    are dropped). Use batches masked once with a fixed seed, so that every evaluation sees the
    same masks."""
    device = next(model.parameters()).device if device is None else torch.device(device)
    model.to(device).eval()
    accepted = set(inspect.signature(model.forward).parameters)
    sums: Dict[str, float] = Counter()
    for batch in batches:
        _check_pretraining_batch(batch)
        batch = to_device(batch, device)
        out = model(**{k: v for k, v in batch.items() if k in accepted})
        labels = batch["labels"][batch["labels"] != IGNORE_INDEX]
        correct = out.logits.argmax(-1) == labels  # (N,)
        losses = F.cross_entropy(out.logits.float(), labels, reduction="none")  # (N,)
        sums["mlm_correct"] += correct.sum().item()
        sums["mlm_loss"] += losses.sum().item()
        sums["mlm_n"] += labels.numel()
        if mask_token_id is not None:
            for kind, where in position_kinds(batch, mask_token_id).items():
                sums[f"{kind}_correct"] += correct[where].sum().item()
                sums[f"{kind}_loss"] += losses[where].sum().item()
                sums[f"{kind}_n"] += int(where.sum())
        if out.nsp_loss is not None:
            nsl = batch["next_sentence_label"]
            sums["nsp_correct"] += (out.seq_relationship_logits.argmax(-1) == nsl).sum().item()
            sums["nsp_loss"] += out.nsp_loss.item() * nsl.numel()
            sums["nsp_n"] += nsl.numel()
    if not sums["mlm_n"]:
        raise ValueError("evaluate_pretraining got no masked positions (empty data set?)")
    res = {"mlm_accuracy": sums["mlm_correct"] / sums["mlm_n"], "mlm_loss": sums["mlm_loss"] / sums["mlm_n"]}
    if mask_token_id is not None:
        for kind in KINDS:
            n = sums[f"{kind}_n"]
            res[f"{kind}_n"] = int(n)
            res[f"{kind}_accuracy"] = sums[f"{kind}_correct"] / n if n else float("nan")
            res[f"{kind}_loss"] = sums[f"{kind}_loss"] / n if n else float("nan")
    if sums["nsp_n"]:
        res.update(nsp_accuracy=sums["nsp_correct"] / sums["nsp_n"], nsp_loss=sums["nsp_loss"] / sums["nsp_n"])
    return res


def most_frequent_token(train_token_ids: Iterable[Sequence[int]], special_ids: Sequence[int] = ()) -> int:
    """The most frequent non-special token of the training text."""
    counts: Counter = Counter()
    for ids in train_token_ids:
        counts.update(ids)
    for s in special_ids:
        counts.pop(s, None)
    if not counts:
        raise ValueError("unigram_baseline got no training tokens (empty data set?)")
    return counts.most_common(1)[0][0]


def constant_guess_accuracy(token: int, eval_batches: Iterable[Batch],
                            mask_token_id: Optional[int] = None) -> Dict[str, float]:
    """Accuracy of always guessing `token`: over all selected positions (`all`) and, with
    `mask_token_id`, at each kind of position of `position_kinds` (`mask`, `random`, `unchanged`)."""
    hits: Dict[str, int] = Counter()
    for batch in eval_batches:
        labels = batch["labels"][batch["labels"] != IGNORE_INDEX]
        right = labels == token
        hits["all_hit"] += int(right.sum())
        hits["all_n"] += labels.numel()
        if mask_token_id is not None:
            for kind, where in position_kinds(batch, mask_token_id).items():
                hits[f"{kind}_hit"] += int(right[where].sum())
                hits[f"{kind}_n"] += int(where.sum())
    if not hits["all_n"]:
        raise ValueError("unigram_baseline got no masked held-out positions")
    kinds = ("all",) + (KINDS if mask_token_id is not None else ())
    return {k: hits[f"{k}_hit"] / hits[f"{k}_n"] if hits[f"{k}_n"] else float("nan") for k in kinds}


def unigram_baseline(train_token_ids: Iterable[Sequence[int]], eval_batches: Iterable[Batch],
                     special_ids: Sequence[int] = (), mask_token_id: Optional[int] = None
                     ) -> Tuple[int, float]:
    """(token id, accuracy) of always guessing the most frequent training token: the plateau a
    model reaches by learning only token frequencies. The accuracy is over all selected held-out
    positions, or with `mask_token_id` over the `[MASK]` positions only (the honest baseline for
    the `mask_accuracy` of `evaluate_pretraining`)."""
    eval_batches = list(eval_batches)
    top = most_frequent_token(train_token_ids, special_ids)
    acc = constant_guess_accuracy(top, eval_batches, mask_token_id)
    return top, acc["all" if mask_token_id is None else "mask"]
