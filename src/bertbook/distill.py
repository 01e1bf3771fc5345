"""Knowledge distillation (chapter 6): DistilBERT's triple loss, MiniLM's self-attention transfer,
and the soft-target loss used to distil a fine-tuned classifier.

Soft targets: with temperature T the teacher's distribution softmax(t/T) is smoother and says which
wrong answers are "nearly right". The KL term is multiplied by T² because its gradients scale as
1/T² (Hinton et al., 2015); without it, raising T would silently shrink the term's weight.
"""
from __future__ import annotations

import time
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import keep_mask
from .bert import BertForPreTraining, check_class_labels
from .distilbert import DistilBertForMaskedLM
from .masking import IGNORE_INDEX
from . import distributed as dist
from .device import to_device
from .training import History, RunningMetrics, TrainStep, cycle, maybe_compile, seed_everything


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
    m = keep_mask(attention_mask).to(cos.dtype)
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


def relation_kl(student_log_probs: Tensor, teacher_log_probs: Tensor,
                attention_mask: Optional[Tensor] = None) -> Tensor:
    """KL(teacher ‖ student) between relation rows, MiniLM's attention-transfer loss.

    student_log_probs, teacher_log_probs: (B, H, L, L) log-probabilities, one distribution over the
    keys per head and query (`MultiHeadAttention.relations`); attention_mask: (B, L), 1 = real token.
    Each row's KL is summed over the real keys, then averaged over heads and real queries: a
    scalar. The teacher's side gets no gradient."""
    if student_log_probs.shape != teacher_log_probs.shape:
        raise ValueError(f"student relations {tuple(student_log_probs.shape)} and teacher's "
                         f"{tuple(teacher_log_probs.shape)} differ (same heads and tokens?)")
    t = teacher_log_probs.detach().float()
    terms = t.exp() * (t - student_log_probs.float())  # (B, H, Lq, Lk)
    if attention_mask is None:
        return terms.sum(-1).mean()
    keep = keep_mask(attention_mask)  # (B, L)
    rows = torch.where(keep[:, None, None, :], terms, 0.0).sum(-1)  # (B, H, Lq): padded keys add nothing
    m = keep[:, None, :].to(rows.dtype)  # real queries
    return (rows * m).sum() / (m.sum() * rows.shape[1]).clamp(min=1.0)


def relation_layer_map(num_student_layers: int, num_teacher_layers: int) -> List[Tuple[int, int]]:
    """(student layer, teacher layer) pairs for attention transfer: each student layer i learns from
    the teacher layer that ends the same share of the depth, round((i + 1)·n/k) − 1. A 3-layer
    student of a 6-layer teacher: [(0, 1), (1, 3), (2, 5)]; the last pair is MiniLM's choice."""
    k, n = num_student_layers, num_teacher_layers
    return [(i, round((i + 1) * n / k) - 1) for i in range(k)]


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The encoder layers of a bertbook BERT or DistilBERT model (any head)."""
    for name in ("bert", "distilbert"):
        if hasattr(model, name):
            return getattr(model, name).encoder.layers
    if hasattr(model, "encoder"):
        return model.encoder.layers
    raise TypeError(f"{type(model).__name__} is not a bertbook BERT or DistilBERT model")


def check_layer_map(layer_map: Sequence[Tuple[int, int]], num_student_layers: int,
                    num_teacher_layers: int) -> List[Tuple[int, int]]:
    pairs = []
    for pair in layer_map:
        if len(pair) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in pair):
            raise ValueError(f"attention_layers must be (student layer, teacher layer) pairs of ints, got {pair!r}")
        i, j = pair
        if not (0 <= i < num_student_layers and 0 <= j < num_teacher_layers):
            raise ValueError(f"attention layer pair {pair!r} out of range: the student has layers "
                             f"0..{num_student_layers - 1}, the teacher 0..{num_teacher_layers - 1}")
        pairs.append((i, j))
    if not pairs:
        raise ValueError("attention_layers is empty: no layer to transfer attention to")
    return pairs


def attention_transfer_loss(student: torch.nn.Module, teacher: torch.nn.Module,
                            student_hidden_states: Sequence[Tensor], teacher_hidden_states: Sequence[Tensor],
                            attention_mask: Optional[Tensor],
                            layer_map: Sequence[Tuple[int, int]]) -> Dict[str, Tensor]:
    """MiniLM's self-attention transfer (Wang et al., 2020). For each (i, j) in `layer_map`, student
    layer i's attention distributions and value relations are compared with teacher layer j's
    (`relation_kl`), each recomputed from the layer's input (hidden_states[i], (B, L, D)) without
    dropout. Returns `att` and `val`, each the mean over the pairs; the teacher gets no gradient."""
    s_layers, t_layers = encoder_layers(student), encoder_layers(teacher)
    att, val = [], []
    for i, j in layer_map:
        s_att, s_val = s_layers[i].relations(student_hidden_states[i], attention_mask)
        with torch.no_grad():
            t_att, t_val = t_layers[j].relations(teacher_hidden_states[j], attention_mask)
        att.append(relation_kl(s_att, t_att, attention_mask))
        val.append(relation_kl(s_val, t_val, attention_mask))
    return {"att": torch.stack(att).mean(), "val": torch.stack(val).mean()}


def classification_kd_loss(logits: Tensor, teacher_logits: Tensor, labels: Tensor,
                           alpha: float = 0.1, temperature: float = 2.0) -> Tensor:
    """Task-specific distillation: α·CE(logits, labels) + (1 − α)·T²·KL(teacher ‖ student).
    logits, teacher_logits: (B, C); labels: (B,)."""
    check_temperature(temperature)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    check_class_labels(labels, logits.shape[-1])
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
    lr: float = 2e-4,
    warmup: float = 0.05,
    weight_decay: float = 0.01,
    max_grad_norm: float = 5.0,
    temperature: float = 2.0,
    alpha_ce: float = 5.0,
    alpha_mlm: float = 2.0,
    alpha_cos: float = 1.0,
    alpha_att: float = 0.0,
    alpha_val: float = 0.0,
    attention_layers: Optional[Sequence[Tuple[int, int]]] = None,
    mask_token_id: Optional[int] = None,
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
    Defaults: the book's distillation settings (`configs.DistillSettings`): lr 2e-4, α_ce = 5,
    α_mlm = 2, α_cos = 1, T = 2 (the DistilBERT research code's single-GPU command); weight decay
    0.01 and clipping at norm 5, which the settings do not vary. `alpha_att` and `alpha_val` add
    MiniLM's attention transfer (`attention_transfer_loss`: attention distributions and value
    relations, for the (student, teacher) layer pairs
    `attention_layers`; None: `relation_layer_map`); teacher and student then need the same number
    of heads. Any weight may be 0 as long as one is not. With only α_mlm > 0 the student trains on
    MLM alone and the teacher is not run (`ce`, `cos`, `att`, `val` are logged as 0); whenever the
    teacher runs, every term is logged, weighted 0 or not. The teacher is moved to the device and
    left in eval mode, its parameters untouched (no gradient flows into it). Returns the history:
    `step`, `loss`, `ce`, `mlm`, `cos`, `att`, `val`, `mlm_accuracy` (running, over every position
    the loss reads: copied tokens included), with `mask_token_id` also `mask_accuracy` (running, at
    the `[MASK]` positions only: the honest one), `lr`, and `seconds`.
    `grad_accum` and `torchrun`: as in `bertbook.pretrain.pretrain` (each rank runs the teacher
    on its own rows)."""
    if not isinstance(teacher, BertForPreTraining):
        raise TypeError(f"teacher must be a BertForPreTraining, got {type(teacher).__name__}")
    if not isinstance(student, DistilBertForMaskedLM):
        raise TypeError(f"student must be a DistilBertForMaskedLM, got {type(student).__name__}")
    check_compatible(teacher, student)
    check_temperature(temperature)
    check_alphas(alpha_ce=alpha_ce, alpha_mlm=alpha_mlm, alpha_cos=alpha_cos, alpha_att=alpha_att,
                 alpha_val=alpha_val)
    relations = alpha_att > 0 or alpha_val > 0
    layer_map = None
    if relations:
        if teacher.config.num_attention_heads != student.config.num_attention_heads:
            raise ValueError(f"attention transfer compares head with head: the teacher has "
                             f"{teacher.config.num_attention_heads} heads, the student "
                             f"{student.config.num_attention_heads}")
        k, n = student.config.num_hidden_layers, teacher.config.num_hidden_layers
        layer_map = check_layer_map(relation_layer_map(k, n) if attention_layers is None
                                    else attention_layers, k, n)
    teacher_needed = alpha_ce > 0 or alpha_cos > 0 or relations
    dist.check_grad_accum(grad_accum)
    seed_everything(seed + dist.rank())  # dropout differs per rank; the data has its own generators
    opt = TrainStep(student, steps, lr, warmup, weight_decay, max_grad_norm, device, amp)
    # Frozen by running it under no_grad, not by requires_grad_(False): the caller's teacher keeps its flags.
    teacher.to(opt.device).eval()
    student.to(opt.device).train()
    run = dist.wrap(maybe_compile(student, compile), opt.device)
    hist: History = {k: [] for k in ("step", "loss", "ce", "mlm", "cos", "att", "val", "mlm_accuracy", "lr")}
    world = dist.world_size()
    t0 = time.perf_counter()
    batches = cycle(train_batches, dist.parts(grad_accum))  # a batch too short to split is skipped
    sums = ("loss", "ce", "mlm", "cos", "att", "val", "correct", "masked", "mask_correct", "mask_n")
    if mask_token_id is not None:
        hist["mask_accuracy"] = []
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
                        s = run(micro["input_ids"], mask, labels=labels, output_hidden_states=relations)
                        zero = s.mlm_loss.new_zeros(())
                        parts = {"ce": zero, "mlm": s.mlm_loss, "cos": zero, "att": zero, "val": zero}
                        if teacher_needed:  # else MLM alone (the control): the teacher's pass would be thrown away
                            with torch.no_grad():
                                t = teacher(micro["input_ids"], mask, micro.get("token_type_ids"), labels=labels,
                                            output_hidden_states=relations)
                            # A broken teacher would show as the student's NaN loss, or only in a logged
                            # term weighted 0: say so here, where it is the teacher's.
                            if not bool(torch.isfinite(t.logits).all() & torch.isfinite(t.last_hidden_state).all()):
                                raise FloatingPointError(
                                    f"the teacher's outputs hold NaN or inf at step {step}: check the teacher's "
                                    "weights and this batch (the student is not the cause)")
                            # Every term the teacher allows is computed and logged, trained on or not.
                            parts["ce"] = soft_target_loss(s.logits, t.logits, temperature)
                            parts["cos"] = cosine_hidden_loss(s.last_hidden_state, t.last_hidden_state, mask)
                            if relations:
                                parts.update(attention_transfer_loss(student, teacher, s.hidden_states,
                                                                     t.hidden_states, mask, layer_map))
                        if not bool(selected.any()):  # no masked position here: add 0, through the graph
                            parts = {**parts, "ce": s.logits.sum() * 0.0, "mlm": s.logits.sum() * 0.0}
                        # triple_loss's sum (plus the relations), each part weighted by this micro-batch's
                        # share of the global batch; a term weighted 0 is left out of the sum.
                        weighted = ((alpha_ce, "ce", w_lab), (alpha_mlm, "mlm", w_lab), (alpha_cos, "cos", w_tok),
                                    (alpha_att, "att", w_tok), (alpha_val, "val", w_tok))
                        loss = sum(a * parts[k] * w for a, k, w in weighted if a > 0)
                    opt.backward(loss)
                with torch.no_grad():
                    hit = s.logits.argmax(-1) == labels[selected]  # (N,): the selected positions, in order
                    at_mask = (micro["input_ids"][selected] == mask_token_id) if mask_token_id is not None \
                        else torch.zeros_like(hit)
                    metrics.add(loss=float(loss) / world, ce=float(parts["ce"] * w_lab) / world,
                                mlm=float(parts["mlm"] * w_lab) / world, cos=float(parts["cos"] * w_tok) / world,
                                att=float(parts["att"] * w_tok) / world, val=float(parts["val"] * w_tok) / world,
                                correct=hit.sum().item(), masked=int(selected.sum()),
                                mask_correct=(hit & at_mask).sum().item(), mask_n=int(at_mask.sum()))
            opt.update()
            total = metrics.end_step(step)
            if total is not None:
                hist["step"].append(step)
                for k in ("loss", "ce", "mlm", "cos", "att", "val"):
                    hist[k].append(total[k] / total["n"])
                hist["mlm_accuracy"].append(total["correct"] / max(total["masked"], 1))
                if mask_token_id is not None:
                    hist["mask_accuracy"].append(total["mask_correct"] / max(total["mask_n"], 1))
                hist["lr"].append(opt.lr)
    hist["seconds"] = [time.perf_counter() - t0]
    student.eval()
    return hist
