"""Pretraining BERT from scratch (chapter 5): L = L_MLM + L_NSP.

Batches come from `bertbook.masking.PretrainingCollator`: `input_ids`, `token_type_ids`,
`attention_mask` (B, L), `labels` (B, L) with -100 wherever there is no loss (so padding and
unmasked tokens never count), `next_sentence_label` (B,). The MLM decoder runs only on the
N labelled positions, (N, V) logits instead of (B, L, V).
"""
from __future__ import annotations

import time
from typing import Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from . import distributed as dist
from .bert import BertForPreTraining
from .device import to_device
from .masking import IGNORE_INDEX
# The measurements are in `bertbook.metrics`; chapters 4 to 6 import them from here too.
from .metrics import (KINDS, check_pretraining_batch, constant_guess_accuracy, evaluate_pretraining,  # noqa: F401
                      most_frequent_token, position_kinds, unigram_baseline)
from .training import History, RunningMetrics, TrainStep, cycle, maybe_compile, seed_everything

Batch = Mapping[str, Tensor]


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
            check_pretraining_batch(batch)
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
