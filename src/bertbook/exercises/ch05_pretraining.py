"""Chapter 5, pretraining: the MLM loss and accuracy, the learning-rate schedule."""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..masking import IGNORE_INDEX
from ._harness import Case, Hint, run_check, _seeded

__all__ = ["check_mlm_loss_accuracy", "check_lr_schedule"]


def _reference_mlm_loss_accuracy(logits: Tensor, labels: Tensor) -> Tuple[Tensor, float]:
    # The package's MLM loss (bertbook.bert.mlm_logits_and_loss) on logits that are already computed
    # (an identity head), and the accuracy as bertbook.pretrain.evaluate_pretraining counts it.
    from ..bert import mlm_logits_and_loss

    picked, loss = mlm_logits_and_loss(nn.Identity(), logits, labels, masked_positions_only=True)
    target = labels[labels != IGNORE_INDEX]
    return loss, (picked.argmax(-1) == target).float().mean().item()


def _mlm_wrong(mistake: str):
    def wrong(logits: Tensor, labels: Tensor):
        sel = labels != IGNORE_INDEX
        V = logits.shape[-1]
        loss, acc = _reference_mlm_loss_accuracy(logits, labels)
        if mistake == "acc_all_positions":  # unlabelled positions counted as wrong answers
            acc = (logits.argmax(-1) == labels).float().mean().item()
        elif mistake == "acc_count":
            acc = float((logits.argmax(-1)[sel] == labels[sel]).sum())
        elif mistake == "loss_all_positions":  # -100 replaced by token 0 and every position counted
            loss = F.cross_entropy(logits.reshape(-1, V), labels.clamp(min=0).reshape(-1))
        elif mistake == "loss_per_sequence":  # mean per sequence, then mean over the batch
            per = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
            per = (per * sel).sum(1) / sel.sum(1)
            loss = per.mean()
        elif mistake == "loss_sum":
            loss = F.cross_entropy(logits[sel], labels[sel], reduction="sum")
        elif mistake == "loss_over_all_count":  # summed over the masked positions, divided by B·L
            loss = F.cross_entropy(logits[sel], labels[sel], reduction="sum") / labels.numel()
        return loss, acc
    return wrong


def _mlm_case(b: int, l: int, v: int, p: float, pad: Sequence[int] = (), scale: float = 3.0):
    """Random logits (B, L, V) and labels: each non-padding position labelled with probability p;
    ``pad[i]`` padding positions at the end of row i. A third of the labelled positions are made
    right (their label is the argmax), so that the accuracy is neither 0 nor 1."""
    logits = scale * torch.randn(b, l, v)
    labels = torch.full((b, l), IGNORE_INDEX, dtype=torch.long)
    chosen = torch.rand(b, l) < p
    for i, n in enumerate(pad):
        if n:
            chosen[i, l - n:] = False
            logits[i, l - n:] = 1e4 * torch.randn(n, v)  # garbage at padding: must not count
    labels[chosen] = torch.randint(0, v, (int(chosen.sum()),))
    right = chosen & (torch.rand(b, l) < 0.35)
    labels[right] = logits.argmax(-1)[right]
    return logits, labels


def check_mlm_loss_accuracy(mlm_loss_accuracy: Callable[[Tensor, Tensor], Tuple[Tensor, float]]) -> None:
    """Exercise 5.1: ``mlm_loss_accuracy(logits, labels) -> (loss, accuracy)``: the mean
    cross-entropy and the accuracy of the argmax over the positions whose label is not -100 only.
    logits (B, L, V), labels (B, L); the loss is a 0-d tensor, the accuracy a number in [0, 1]."""
    with _seeded(501):
        one = torch.full((2, 4), IGNORE_INDEX)
        one[1, 2] = 3
        full_logits = 3 * torch.randn(2, 6, 9)
        cases = [
            Case("B=2, L=6, V=9, about 30% of the positions labelled", _mlm_case(2, 6, 9, 0.3)),
            Case("padding at the end of each row (its logits are huge garbage: they must not count)",
                 _mlm_case(3, 8, 11, 0.4, pad=(3, 0, 5))),
            Case("a single labelled position", (3 * torch.randn(2, 4, 7), one)),
            Case("every position labelled", (full_logits, full_logits.argmax(-1).roll(1, dims=1))),
            Case("rows with very different numbers of labelled positions",
                 _mlm_case(4, 16, 20, 0.5, pad=(14, 0, 10, 2))),
            Case("B=8, L=32, V=100, 15% labelled, as in BERT", _mlm_case(8, 32, 100, 0.15, pad=(0, 4, 9, 0, 20, 0, 1, 0))),
        ]
    hints = [
        Hint(_mlm_wrong("acc_all_positions"),
             "your accuracy counts every position, and an unlabelled one (label -100) can never be "
             "right: compare the argmax with the label only where labels != -100, and divide by "
             "the number of those positions."),
        Hint(_mlm_wrong("acc_count"),
             "your accuracy is the number of correct positions: divide by the number of labelled "
             "positions to get a fraction."),
        Hint(_mlm_wrong("loss_all_positions"),
             "your loss counts the unlabelled positions (as if their label were token 0): select the "
             "positions with labels != -100 first, or pass ignore_index=-100 to F.cross_entropy."),
        Hint(_mlm_wrong("loss_per_sequence"),
             "you averaged the loss per sequence and then over the batch: a sequence with 1 masked "
             "token then weighs as much as one with 20. Average over all labelled positions of the "
             "batch at once (every masked token counts the same)."),
        Hint(_mlm_wrong("loss_sum"),
             "your loss is the sum over the labelled positions: take the mean (F.cross_entropy's "
             "default reduction)."),
        Hint(_mlm_wrong("loss_over_all_count"),
             "you divided the summed loss by all B·L positions: divide by the number of labelled "
             "positions (labels != -100)."),
    ]
    run_check("check_mlm_loss_accuracy", mlm_loss_accuracy, _reference_mlm_loss_accuracy, cases, hints)


def _reference_lr_schedule(peak_lr: float, warmup_steps: int, total_steps: int) -> Tensor:
    """The learning rate of every optimiser step 0..total_steps under transformers'
    get_linear_schedule_with_warmup, which bertbook.training.TrainStep uses."""
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(()))], lr=peak_lr)
    sched = get_linear_schedule_with_warmup(opt, warmup_steps, total_steps)
    lrs = []
    for _ in range(total_steps + 1):
        lrs.append(opt.param_groups[0]["lr"])  # the rate the next opt.step() uses
        opt.step()
        sched.step()
    return torch.tensor(lrs, dtype=torch.float64)


def _all_steps(lr_at: Callable[[int, float, int, int], float]) -> Callable[[float, int, int], Tensor]:
    def schedule(peak_lr: float, warmup_steps: int, total_steps: int) -> Tensor:
        return torch.tensor([float(lr_at(s, peak_lr, warmup_steps, total_steps))
                             for s in range(total_steps + 1)], dtype=torch.float64)
    schedule.__name__ = getattr(lr_at, "__name__", "your function")
    return schedule


def _lr_wrong(mistake: str):
    def lr_at(step: int, peak: float, w: int, n: int) -> float:
        if mistake == "no_warmup":
            return peak * max(0.0, (n - step) / max(1, n - w))
        if step < w:
            if mistake == "warmup_plus_one":
                return peak * (step + 1) / w
            return peak * step / w
        if mistake == "no_decay":
            return peak
        if mistake == "decay_over_all_steps":
            return peak * max(0.0, (n - step) / n)
        if mistake == "decay_to_end_plus_one":
            return peak * max(0.0, (n - step + 1) / max(1, n - w + 1))
        return peak * max(0.0, (n - step) / max(1, n - w))
    return _all_steps(lr_at)


def check_lr_schedule(lr_at: Callable[[int, float, int, int], float]) -> None:
    """Exercise 5.2: ``lr_at(step, peak_lr, warmup_steps, total_steps)``: the learning rate of
    optimiser step ``step`` (0 = the first update) under linear warm-up from 0 to ``peak_lr``
    over ``warmup_steps`` steps, then linear decay to 0 at ``total_steps`` — exactly
    ``transformers.get_linear_schedule_with_warmup``. Checked at every step 0..total_steps."""
    cases = [
        Case("peak 1e-3, 10 warm-up steps of 100", (1e-3, 10, 100)),
        Case("peak 1.0, 1 warm-up step of 10", (1.0, 1, 10)),
        Case("no warm-up: peak 5e-4, 0 of 50", (5e-4, 0, 50)),
        Case("BERT's proportions: 10,000 warm-up steps of 1,000,000, scaled down to 40 of 400",
             (1e-4, 40, 400)),
        Case("warm-up over all but the last step: 99 of 100", (2e-3, 99, 100)),
    ]
    hints = [
        Hint(_lr_wrong("warmup_plus_one"),
             "your warm-up is one step ahead: the first update (step 0) uses learning rate 0 and step s "
             "of the warm-up uses peak_lr · s / warmup_steps."),
        Hint(_lr_wrong("no_warmup"), "the warm-up is missing: during the first warmup_steps steps the "
             "rate grows linearly from 0 to peak_lr."),
        Hint(_lr_wrong("no_decay"), "the decay is missing: after the warm-up the rate falls linearly "
             "from peak_lr to 0 at total_steps."),
        Hint(_lr_wrong("decay_over_all_steps"),
             "your decay starts from the beginning (peak_lr · (total − s) / total), so the rate is "
             "already below peak_lr when the warm-up ends: the decay runs over the remaining "
             "total_steps − warmup_steps steps only."),
        Hint(_lr_wrong("decay_to_end_plus_one"),
             "your decay is off by one: the rate must be exactly peak_lr at s = warmup_steps and 0 at "
             "s = total_steps."),
    ]
    run_check("check_lr_schedule", _all_steps(lr_at), _reference_lr_schedule, cases, hints,
              atol=1e-9, rtol=1e-6)
