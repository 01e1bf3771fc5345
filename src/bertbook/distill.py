"""Knowledge distillation (chapter 6): DistilBERT's triple loss, and the soft-target loss used to
distil a fine-tuned classifier.

Soft targets: with temperature T the teacher's distribution softmax(t/T) is smoother and says which
wrong answers are "nearly right". The KL term is multiplied by T² because its gradients scale as
1/T² (Hinton et al., 2015); without it, raising T would silently shrink the term's weight.
"""
from __future__ import annotations

import time
from typing import Dict, Iterable, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .bert import BertForPreTraining
from .distilbert import DistilBertForMaskedLM
from .masking import IGNORE_INDEX
from . import distributed as dist
from .training import History, RunningMetrics, TrainStep, cycle, maybe_compile, seed_everything, to_device


def check_temperature(temperature: float) -> None:
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def soft_target_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0) -> Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over rows.

    student_logits, teacher_logits: (N, C) (any leading shape; the last dim is the classes).
    Returns a scalar. The teacher's side gets no gradient.
    """
    check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape (same vocabulary / labels?)")
    C = student_logits.shape[-1]
    s = F.log_softmax(student_logits.reshape(-1, C).float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.detach().reshape(-1, C).float() / temperature, dim=-1)
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0  # no rows (no masked token): a zero that keeps the graph
    # log_target: KL computed from log-probabilities on both sides, stable for tiny probabilities
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature ** 2


def cosine_hidden_loss(student_hidden: Tensor, teacher_hidden: Tensor,
                       attention_mask: Optional[Tensor] = None) -> Tensor:
    """Mean of 1 − cos(h_s, h_t) over non-padding tokens: aligns the directions of the hidden states.

    student_hidden, teacher_hidden: (B, L, D); attention_mask: (B, L), 1 = real token.
    """
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(f"student hidden states {tuple(student_hidden.shape)} and teacher's "
                         f"{tuple(teacher_hidden.shape)} differ (hidden sizes must match)")
    cos = F.cosine_similarity(student_hidden.float(), teacher_hidden.detach().float(), dim=-1)  # (B, L)
    if attention_mask is None:
        return (1 - cos).mean()
    m = attention_mask.to(cos.dtype)
    return ((1 - cos) * m).sum() / m.sum().clamp(min=1.0)


def check_alphas(**alphas: float) -> None:
    for name, a in alphas.items():
        if not a >= 0:
            raise ValueError(f"{name} must be >= 0, got {a}")
    if not any(a > 0 for a in alphas.values()):
        raise ValueError(f"the loss weights {', '.join(alphas)} are all zero: nothing to train on")


def triple_loss(student_logits: Tensor, teacher_logits: Tensor, mlm_loss: Tensor,
                student_hidden: Tensor, teacher_hidden: Tensor, attention_mask: Optional[Tensor],
                temperature: float = 2.0, alpha_ce: float = 5.0, alpha_mlm: float = 2.0,
                alpha_cos: float = 1.0) -> Dict[str, Tensor]:
    """DistilBERT's loss: α_ce·T²·KL over the masked positions + α_mlm·L_MLM + α_cos·(1 − cos) over
    non-padding tokens. Logits (N, V) at the masked positions, hidden states (B, L, D).
    Returns a dict with `loss` and its three parts `ce`, `mlm`, `cos` (unweighted)."""
    check_alphas(alpha_ce=alpha_ce, alpha_mlm=alpha_mlm, alpha_cos=alpha_cos)
    ce = soft_target_loss(student_logits, teacher_logits, temperature)
    cos = cosine_hidden_loss(student_hidden, teacher_hidden, attention_mask) if alpha_cos > 0 \
        else ce.new_zeros(())
    loss = alpha_ce * ce + alpha_mlm * mlm_loss + alpha_cos * cos
    return {"loss": loss, "ce": ce, "mlm": mlm_loss, "cos": cos}


def classification_kd_loss(logits: Tensor, teacher_logits: Tensor, labels: Tensor,
                           alpha: float = 0.5, temperature: float = 2.0) -> Tensor:
    """Task-specific distillation: α·CE(logits, labels) + (1 − α)·T²·KL(teacher ‖ student).
    logits, teacher_logits: (B, C); labels: (B,)."""
    check_temperature(temperature)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    ce = F.cross_entropy(logits, labels)
    if alpha == 1.0:
        return ce
    return alpha * ce + (1 - alpha) * soft_target_loss(logits, teacher_logits, temperature)


def check_compatible(teacher: torch.nn.Module, student: torch.nn.Module) -> None:
    """Teacher and student must share the vocabulary and (for the cosine loss) the hidden size."""
    tc, sc = teacher.config, student.config
    if tc.vocab_size != sc.vocab_size:
        raise ValueError(f"teacher vocab_size {tc.vocab_size} != student vocab_size {sc.vocab_size}: "
                         "distillation compares distributions over the same vocabulary")
    if tc.hidden_size != sc.hidden_size:
        raise ValueError(f"teacher hidden_size {tc.hidden_size} != student hidden_size {sc.hidden_size}: "
                         "the cosine loss compares hidden states of the same width")


def distill(
    teacher: BertForPreTraining,
    student: DistilBertForMaskedLM,
    train_batches: Iterable[Mapping[str, Tensor]],
    steps: int,
    lr: float = 5e-4,
    warmup: float = 0.05,
    weight_decay: float = 0.01,
    max_grad_norm: float = 5.0,
    temperature: float = 2.0,
    alpha_ce: float = 5.0,
    alpha_mlm: float = 2.0,
    alpha_cos: float = 1.0,
    log_every: int = 10,
    device: Optional[Union[str, torch.device]] = None,
    amp: Optional[bool] = None,
    compile: bool = False,
    seed: int = 0,
    progress: bool = True,
    grad_accum: int = 1,
) -> History:
    """Train `student` to imitate the frozen `teacher` with `triple_loss` on pretraining batches
    (same format as `pretrain`; the student ignores `token_type_ids` and `next_sentence_label`).
    Defaults: α_ce = 5, α_mlm = 2, α_cos = 1, T = 2 (the DistilBERT research code's single-GPU
    command). With α_ce = α_cos = 0 the student trains on MLM alone and the teacher is not run
    (`ce` and `cos` are logged as 0). The teacher is moved to the device and left in eval mode,
    its parameters untouched (no gradient flows into it). Returns the history: `step`, `loss`,
    `ce`, `mlm`, `cos`, `mlm_accuracy`, `lr`, and `seconds`. `grad_accum` and `torchrun`: as in
    `bertbook.pretrain.pretrain` (each rank runs the teacher on its own rows)."""
    if not isinstance(teacher, BertForPreTraining):
        raise TypeError(f"teacher must be a BertForPreTraining, got {type(teacher).__name__}")
    if not isinstance(student, DistilBertForMaskedLM):
        raise TypeError(f"student must be a DistilBertForMaskedLM, got {type(student).__name__}")
    check_compatible(teacher, student)
    check_temperature(temperature)
    check_alphas(alpha_ce=alpha_ce, alpha_mlm=alpha_mlm, alpha_cos=alpha_cos)
    teacher_needed = alpha_ce > 0 or alpha_cos > 0
    dist.check_grad_accum(grad_accum)
    seed_everything(seed + dist.rank())  # dropout differs per rank; the data has its own generators
    opt = TrainStep(student, steps, lr, warmup, weight_decay, max_grad_norm, device, amp)
    # Frozen by running it under no_grad, not by requires_grad_(False): the caller's teacher keeps its flags.
    teacher.to(opt.device).eval()
    student.to(opt.device).train()
    run = dist.wrap(maybe_compile(student, compile), opt.device)
    hist: History = {k: [] for k in ("step", "loss", "ce", "mlm", "cos", "mlm_accuracy", "lr")}
    world = dist.world_size()
    t0 = time.perf_counter()
    batches = cycle(train_batches)
    sums = ("loss", "ce", "mlm", "cos", "correct", "masked")
    with RunningMetrics(steps, sums, log_every, "distill", progress) as metrics:
        for step in range(1, steps + 1):
            batch = next(batches)
            # The global batch's counts: each micro-batch's mean losses are weighted by its share
            # (0-d tensors, 1.0 when one process takes the whole batch: the loss is then bit for bit
            # `triple_loss`'s own).
            n_labelled = (batch["labels"] != IGNORE_INDEX).sum()
            n_tokens = batch["attention_mask"].sum()
            micros = dist.micro_batches(batch, grad_accum)
            for a, micro in enumerate(micros):
                micro = to_device(micro, opt.device)
                labels, mask = micro["labels"], micro["attention_mask"]
                selected = labels != IGNORE_INDEX
                w_lab = dist.share(selected.sum().cpu(), n_labelled).to(opt.device)
                w_tok = dist.share(mask.sum().cpu(), n_tokens).to(opt.device)
                with dist.no_sync(run, a < len(micros) - 1):
                    with opt.autocast():
                        s = run(micro["input_ids"], mask, labels=labels)
                        if teacher_needed:
                            with torch.no_grad():
                                t = teacher(micro["input_ids"], mask, micro.get("token_type_ids"), labels=labels)
                            parts = triple_loss(s.logits, t.logits, s.mlm_loss, s.last_hidden_state,
                                                t.last_hidden_state, mask, temperature, alpha_ce, alpha_mlm, alpha_cos)
                        else:  # MLM alone (the control): the teacher's forward pass would be thrown away
                            zero = s.mlm_loss.new_zeros(())
                            parts = {"ce": zero, "mlm": s.mlm_loss, "cos": zero}
                        if not bool(selected.any()):  # no masked position here: add 0, through the graph
                            parts = {**parts, "ce": s.logits.sum() * 0.0, "mlm": s.logits.sum() * 0.0}
                        # triple_loss's sum, each part weighted by this micro-batch's share of the global batch
                        if teacher_needed:
                            loss = (alpha_ce * parts["ce"] * w_lab + alpha_mlm * parts["mlm"] * w_lab
                                    + alpha_cos * parts["cos"] * w_tok)
                        else:
                            loss = alpha_mlm * parts["mlm"] * w_lab
                    opt.backward(loss)
                with torch.no_grad():
                    metrics.add(loss=float(loss) / world, ce=float(parts["ce"] * w_lab) / world,
                                mlm=float(parts["mlm"] * w_lab) / world, cos=float(parts["cos"] * w_tok) / world,
                                correct=(s.logits.argmax(-1) == labels[selected]).sum().item(),
                                masked=int(selected.sum()))
            opt.update()
            total = metrics.end_step(step)
            if total is not None:
                hist["step"].append(step)
                for k in ("loss", "ce", "mlm", "cos"):
                    hist[k].append(total[k] / total["n"])
                hist["mlm_accuracy"].append(total["correct"] / max(total["masked"], 1))
                hist["lr"].append(opt.lr)
    hist["seconds"] = [time.perf_counter() - t0]
    student.eval()
    return hist
