"""Chapter 7, distilling a fine-tuned classifier: the knowledge-distillation loss."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ._harness import Case, Hint, run_check, _seeded

__all__ = ["check_classification_kd_loss"]


def _reference_kd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
                       alpha: float, temperature: float) -> Tensor:
    from ..distill import classification_kd_loss

    return classification_kd_loss(student_logits, teacher_logits, labels, alpha, temperature)


def _kl_teacher_student(s: Tensor, t: Tensor, temperature: float) -> Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) summed over classes, averaged over rows (no T² factor)."""
    log_p_t, log_p_s = F.log_softmax(t / temperature, -1), F.log_softmax(s / temperature, -1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean()


def _kd_variant(mistake: str):
    def wrong(s: Tensor, t: Tensor, y: Tensor, alpha: float, temperature: float) -> Tensor:
        T = temperature
        ce = F.cross_entropy(s, y)
        kl = _kl_teacher_student(s, t, T) * T ** 2
        if mistake == "no_T2":
            kl = _kl_teacher_student(s, t, T)
        elif mistake == "divided_T2":
            kl = _kl_teacher_student(s, t, T) / T ** 2
        elif mistake == "swapped":
            log_p_t, log_p_s = F.log_softmax(t / T, -1), F.log_softmax(s / T, -1)
            kl = (log_p_s.exp() * (log_p_s - log_p_t)).sum(-1).mean() * T ** 2
        elif mistake == "alpha_swapped":
            return (1 - alpha) * ce + alpha * kl
        elif mistake == "student_not_softened":
            log_p_t, log_p_s = F.log_softmax(t / T, -1), F.log_softmax(s, -1)
            kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean() * T ** 2
        elif mistake == "teacher_not_softened":
            log_p_t, log_p_s = F.log_softmax(t, -1), F.log_softmax(s / T, -1)
            kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean() * T ** 2
        elif mistake == "mean_over_classes":
            kl = kl / s.shape[-1]
        elif mistake == "ce_softened":
            ce = F.cross_entropy(s / T, y)
        elif mistake == "soft_cross_entropy":  # H(p_t, p_s) without the teacher's entropy: not 0 at s = t
            log_p_t, log_p_s = F.log_softmax(t / T, -1), F.log_softmax(s / T, -1)
            kl = -(log_p_t.exp() * log_p_s).sum(-1).mean() * T ** 2
        return alpha * ce + (1 - alpha) * kl
    return wrong


def check_classification_kd_loss(kd_loss: Callable[..., Tensor]) -> None:
    """Exercise 7.1: ``kd_loss(student_logits, teacher_logits, labels, alpha, temperature)``:
    α·CE(student_logits, labels) + (1 − α)·T²·KL(softmax(t/T) ‖ softmax(s/T)), the KL summed over
    the classes and averaged over the batch, as ``bertbook.distill.classification_kd_loss``.
    Returns a scalar tensor."""
    with _seeded(701):
        def logits(b: int, c: int, scale: float = 2.0) -> Tensor:
            return scale * torch.randn(b, c)

        cases = [
            Case("B=6, 2 classes, alpha=0.5, T=2", (logits(6, 2), logits(6, 2), torch.randint(0, 2, (6,)), 0.5, 2.0)),
            Case("B=8, 5 classes, alpha=0.5, T=4 (a high temperature)",
                 (logits(8, 5), logits(8, 5), torch.randint(0, 5, (8,)), 0.5, 4.0)),
            Case("alpha=0: the teacher's soft labels only, T=2",
                 (logits(6, 3), logits(6, 3), torch.randint(0, 3, (6,)), 0.0, 2.0)),
            Case("alpha=0.8: mostly the hard labels, T=3",
                 (logits(5, 4), logits(5, 4), torch.randint(0, 4, (5,)), 0.8, 3.0)),
            Case("T=1 (no softening), alpha=0.3",
                 (logits(7, 2), logits(7, 2), torch.randint(0, 2, (7,)), 0.3, 1.0)),
            Case("a confident teacher (logits of size ~8), 3 classes, alpha=0.2, T=2",
                 (logits(6, 3), logits(6, 3, 8.0), torch.randint(0, 3, (6,)), 0.2, 2.0)),
            Case("one example, 2 classes, alpha=0.5, T=2",
                 (logits(1, 2), logits(1, 2), torch.tensor([1]), 0.5, 2.0)),
        ]
    hints = [
        Hint(_kd_variant("no_T2"),
             "the factor T² on the KL term is missing: the soft term's gradients shrink as 1/T², "
             "so multiply the KL by temperature ** 2 to keep its weight independent of T."),
        Hint(_kd_variant("divided_T2"), "the KL term must be *multiplied* by T², not divided by it."),
        Hint(_kd_variant("swapped"),
             "your KL goes the wrong way: KL(student ‖ teacher). Distillation uses KL(teacher ‖ student) "
             "= Σ p_t (log p_t − log p_s), the teacher's probabilities as the weights. With F.kl_div, "
             "the FIRST argument is the student's log-probabilities, the second the teacher's "
             "(F.kl_div(log_p_s, log_p_t, log_target=True))."),
        Hint(_kd_variant("alpha_swapped"),
             "alpha is on the wrong term: alpha weighs the cross-entropy with the true labels, "
             "1 − alpha the teacher's soft labels."),
        Hint(_kd_variant("student_not_softened"),
             "the student's logits must be divided by T too: both distributions are softmax(logits / T)."),
        Hint(_kd_variant("teacher_not_softened"),
             "the teacher's logits must be divided by T too: both distributions are softmax(logits / T)."),
        Hint(_kd_variant("mean_over_classes"),
             "your KL is averaged over the classes as well as the examples (F.kl_div's default "
             "reduction='mean'): sum over the classes and average over the batch, reduction='batchmean'."),
        Hint(_kd_variant("ce_softened"),
             "the cross-entropy with the true labels uses the plain logits, not logits / T."),
        Hint(_kd_variant("soft_cross_entropy"),
             "you computed the cross-entropy −Σ p_t log p_s instead of the KL divergence: subtract the "
             "teacher's entropy, i.e. use Σ p_t (log p_t − log p_s) (the gradient is the same, the value is not)."),
    ]
    run_check("check_classification_kd_loss", kd_loss, _reference_kd_loss, cases, hints, atol=1e-5, rtol=1e-4)
