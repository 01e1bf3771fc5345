"""Chapter 6, DistilBERT: the soft-target loss, which teacher layers initialise the student."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._harness import Case, Hint, run_check, _seeded

__all__ = ["check_distillation_loss", "check_student_layers"]


def _reference_distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    from ..distill import soft_target_loss

    return soft_target_loss(student_logits, teacher_logits, temperature)


def _distill_wrong(mistake: str):
    def wrong(s: Tensor, t: Tensor, T: float) -> Tensor:
        ts, tt, k = T, T, T ** 2
        if mistake == "no_T2":
            k = 1.0
        elif mistake == "no_temperature":  # T² kept, but the softmaxes are not softened
            ts = tt = 1.0
        elif mistake == "student_only":
            tt = 1.0
        elif mistake == "teacher_only":
            ts = 1.0
        log_ps, log_pt = F.log_softmax(s / ts, -1), F.log_softmax(t / tt, -1)
        if mistake == "reversed":
            return k * (log_ps.exp() * (log_ps - log_pt)).sum(-1).mean()
        if mistake == "cross_entropy":
            return -k * (log_pt.exp() * log_ps).sum(-1).mean()
        if mistake == "probs_as_input":  # F.kl_div(softmax(s/T), softmax(t/T)): the input must be log-probs
            return k * F.kl_div(log_ps.exp(), log_pt.exp(), reduction="batchmean")
        kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1)
        if mistake == "mean_over_vocab":
            return k * kl.mean() / s.shape[-1]
        if mistake == "sum_over_rows":
            return k * kl.sum()
        return k * kl.mean()
    return wrong


def check_distillation_loss(distillation_loss: Callable[[Tensor, Tensor, float], Tensor]) -> None:
    """Exercise 6.1: ``distillation_loss(student_logits, teacher_logits, temperature)``: the soft-target
    term of DistilBERT, T² · KL(softmax(t/T) ‖ softmax(s/T)), the KL summed over the vocabulary and
    averaged over the N rows (masked positions), as ``bertbook.distill.soft_target_loss``.
    logits (N, V); returns a 0-d tensor."""
    with _seeded(601):
        s1, t1 = 2 * torch.randn(6, 30), 4 * torch.randn(6, 30)
        same = 3 * torch.randn(4, 50)
        cases = [
            Case("N=6 masked positions, V=30, T=2", (s1, t1, 2.0)),
            Case("the same logits at T=4", (s1, t1, 4.0)),
            Case("T=1: no softening", (2 * torch.randn(5, 12), 4 * torch.randn(5, 12), 1.0)),
            Case("a confident teacher (logits of size ~20), V=100, T=8",
                 (torch.randn(8, 100), 20 * torch.randn(8, 100), 8.0)),
            Case("a student equal to the teacher: the loss must be 0", (same.clone(), same.clone(), 2.0)),
            Case("huge logits (±300): use log_softmax, not softmax().log()",
                 (300 * torch.randn(3, 20), 300 * torch.randn(3, 20), 2.0)),
            Case("one masked position, T=0.5 (sharper than the model)",
                 (3 * torch.randn(1, 10), 3 * torch.randn(1, 10), 0.5)),
        ]
    hints = [
        Hint(_distill_wrong("no_T2"),
             "the factor T² is missing: the KL of softened distributions has gradients about 1/T² as "
             "large, so DistilBERT multiplies it by temperature ** 2."),
        Hint(_distill_wrong("no_temperature"),
             "your softmaxes are not softened: divide both the student's and the teacher's logits by "
             "the temperature before the (log-)softmax."),
        Hint(_distill_wrong("student_only"),
             "only the student's logits were divided by T: the teacher's must be softened too."),
        Hint(_distill_wrong("teacher_only"),
             "only the teacher's logits were divided by T: the student's must be softened too."),
        Hint(_distill_wrong("reversed"),
             "your KL goes the wrong way, KL(student ‖ teacher). Distillation uses KL(teacher ‖ student) "
             "= Σ p_t (log p_t − log p_s). With F.kl_div the FIRST argument is the student's "
             "log-probabilities and the second the teacher's: F.kl_div(log_p_s, log_p_t, log_target=True)."),
        Hint(_distill_wrong("cross_entropy"),
             "you computed the soft cross-entropy −Σ p_t log p_s: it has the same gradient but it is "
             "not 0 when the student equals the teacher. Subtract the teacher's entropy, "
             "Σ p_t (log p_t − log p_s)."),
        Hint(_distill_wrong("probs_as_input"),
             "F.kl_div expects LOG-probabilities as its first argument: pass log_softmax(s / T), not softmax."),
        Hint(_distill_wrong("mean_over_vocab"),
             "your KL is averaged over the vocabulary too (F.kl_div's reduction='mean'): sum over the "
             "vocabulary and average over the rows (reduction='batchmean')."),
        Hint(_distill_wrong("sum_over_rows"),
             "your loss is summed over the rows: average it over the masked positions."),
    ]
    run_check("check_distillation_loss", distillation_loss, _reference_distillation_loss, cases, hints,
              atol=1e-4, rtol=1e-4)


def _layers_wrong(mistake: str):
    def wrong(n: int) -> list:
        k = math.ceil(n / 2)
        if mistake == "even":
            return list(range(0, n, 2))
        if mistake == "odd":
            return list(range(1, n, 2))
        if mistake == "floor_k":
            k = max(1, n // 2)
        if k == 1:
            return [0]
        step = (n - 1) / (k - 1)
        if mistake == "half_up":
            return [math.floor(i * step + 0.5) for i in range(k)]
        if mistake == "truncate":
            return [int(i * step) for i in range(k)]
        return [round(i * step) for i in range(k)]
    return wrong


def _as_list(student_layers: Callable[[int], Sequence[int]]) -> Callable[[int], list]:
    def layers(num_teacher_layers: int):
        out = student_layers(num_teacher_layers)
        if isinstance(out, Tensor):
            out = out.tolist()
        return list(out) if isinstance(out, (list, tuple, range)) else out
    layers.__name__ = getattr(student_layers, "__name__", "your function")
    return layers


def check_student_layers(student_layers: Callable[[int], Sequence[int]]) -> None:
    """Exercise 6.2: ``student_layers(num_teacher_layers)``: the teacher layers that initialise the
    student, as ``bertbook.distilbert.default_student_layers``: k = ⌈n/2⌉ layers at
    round(i·(n − 1)/(k − 1)), i = 0..k−1 (Python's round), so the first and last are always kept."""
    from ..distilbert import default_student_layers

    cases = [Case(f"a {n}-layer teacher{note}", (n,)) for n, note in (
        (12, " (BERT-base: DistilBERT took [0, 2, 4, 7, 9, 11])"), (4, " (the book's teacher)"),
        (6, ""), (24, " (BERT-large)"), (5, " (an odd number)"), (10, ""), (2, ""), (1, ""))]
    hints = [
        Hint(_layers_wrong("even"), "every other layer from 0 (0, 2, 4, ...) never reaches the teacher's "
             "last layer, the one whose output the MLM head was trained on: spread the k layers evenly "
             "from 0 to n − 1."),
        Hint(_layers_wrong("odd"), "layers 1, 3, 5, ... skip the teacher's first layer: spread the k "
             "layers evenly from 0 to n − 1, both ends included."),
        Hint(_layers_wrong("floor_k"), "for an odd number of teacher layers the student gets ⌈n/2⌉ "
             "layers (math.ceil(n / 2)), not n // 2."),
        Hint(_layers_wrong("half_up"), "your positions are right except at exact halves: Python's round "
             "rounds a half to the even integer (round(2.5) == 2), which is what the package uses."),
        Hint(_layers_wrong("truncate"), "int() truncates (int(6.6) == 6): round the positions "
             "i·(n − 1)/(k − 1) to the nearest integer with round()."),
    ]
    run_check("check_student_layers", _as_list(student_layers), default_student_layers, cases, hints)
