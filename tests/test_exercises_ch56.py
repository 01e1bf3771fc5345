"""The chapter-5 and chapter-6 checks of bertbook.exercises (MLM loss and accuracy, the learning-rate
schedule, the distillation loss, the student's layers): right answers pass, typical wrong answers
fail with a message that names the mistake."""
import math

import pytest
import torch
import torch.nn.functional as F

from bertbook import exercises as ex


# --- right answers, written independently of the package ----------------------------------------

def mlm_loss_accuracy(logits, labels):
    keep = labels.ne(-100)
    picked, target = logits[keep], labels[keep]
    loss = -picked.log_softmax(-1).gather(1, target[:, None]).mean()
    return loss, picked.argmax(-1).eq(target).float().mean().item()


def lr_at(step, peak_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    return peak_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def distillation_loss(student_logits, teacher_logits, temperature):
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean()
    return temperature ** 2 * kl


def student_layers(n):
    k = -(-n // 2)
    if k == 1:
        return [0]
    return [round(i * (n - 1) / (k - 1)) for i in range(k)]


def test_right_answers_pass(capsys):
    ex.check_mlm_loss_accuracy(mlm_loss_accuracy)
    ex.check_lr_schedule(lr_at)
    ex.check_distillation_loss(distillation_loss)
    ex.check_student_layers(student_layers)
    out = capsys.readouterr().out
    for name in ("check_mlm_loss_accuracy", "check_lr_schedule", "check_distillation_loss",
                 "check_student_layers"):
        assert f"✓ {name}:" in out


def test_other_right_answers_pass():
    # F.cross_entropy with ignore_index, F.kl_div with batchmean, a tensor returned for the layers
    def mlm2(logits, labels):
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        keep = labels != -100
        return loss, (logits.argmax(-1)[keep] == labels[keep]).sum() / keep.sum()

    def kd2(s, t, T):
        return F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T * T

    def layers2(n):
        return torch.tensor(student_layers(n))

    ex.check_mlm_loss_accuracy(mlm2)
    ex.check_distillation_loss(kd2)
    ex.check_student_layers(layers2)


def _fails(check, fn, *needles):
    with pytest.raises(ex.ExerciseFailed) as err:
        check(fn)
    msg = str(err.value)
    for needle in needles:
        assert needle in msg, msg
    return msg


# --- 5.1 ------------------------------------------------------------------------------------------

def test_mlm_accuracy_over_all_positions():
    def wrong(logits, labels):
        loss, _ = mlm_loss_accuracy(logits, labels)
        return loss, (logits.argmax(-1) == labels).float().mean().item()
    _fails(ex.check_mlm_loss_accuracy, wrong, "case 1 of 6", "returned value [1]", "only where labels != -100")


def test_mlm_loss_counts_unlabelled_positions():
    def wrong(logits, labels):
        _, acc = mlm_loss_accuracy(logits, labels)
        return F.cross_entropy(logits.flatten(0, 1), labels.clamp(min=0).flatten()), acc
    _fails(ex.check_mlm_loss_accuracy, wrong, "returned value [0]", "ignore_index=-100")


def test_mlm_loss_per_sequence():
    def wrong(logits, labels):
        _, acc = mlm_loss_accuracy(logits, labels)
        rows = [mlm_loss_accuracy(logits[i:i + 1], labels[i:i + 1])[0]
                for i in range(len(labels)) if (labels[i] != -100).any()]
        return torch.stack(rows).mean(), acc
    _fails(ex.check_mlm_loss_accuracy, wrong, "per sequence")


def test_mlm_not_implemented():
    def todo(logits, labels):
        raise NotImplementedError()
    _fails(ex.check_mlm_loss_accuracy, todo, "not implemented yet")


# --- 5.2 ------------------------------------------------------------------------------------------

def test_lr_warmup_off_by_one():
    def wrong(step, peak, w, n):
        return peak * (step + 1) / w if step < w else lr_at(step, peak, w, n)
    _fails(ex.check_lr_schedule, wrong, "case 1 of 5", "one step ahead")


def test_lr_decay_from_start():
    def wrong(step, peak, w, n):
        return peak * step / w if step < w else peak * (n - step) / n
    _fails(ex.check_lr_schedule, wrong, "decay starts from the beginning")


def test_lr_no_decay():
    def wrong(step, peak, w, n):
        return peak * step / w if step < w else peak
    _fails(ex.check_lr_schedule, wrong, "decay is missing")


def test_lr_zero_warmup_division():
    def wrong(step, peak, w, n):  # divides by warmup_steps even when it is 0
        return peak * min(step / w, (n - step) / (n - w))
    msg = _fails(ex.check_lr_schedule, wrong, "ZeroDivisionError")
    assert "no warm-up" in msg


def test_lr_matches_transformers_directly():
    from transformers import get_linear_schedule_with_warmup
    p = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.SGD([p], lr=0.5)
    sched = get_linear_schedule_with_warmup(opt, 7, 30)
    for s in range(31):
        assert math.isclose(opt.param_groups[0]["lr"], lr_at(s, 0.5, 7, 30), abs_tol=1e-12)
        opt.step()
        sched.step()


# --- 6.1 ------------------------------------------------------------------------------------------

def test_distill_missing_t2():
    _fails(ex.check_distillation_loss,
           lambda s, t, T: distillation_loss(s, t, T) / T ** 2, "case 1 of 7", "T² is missing")


def test_distill_reversed_kl():
    def wrong(s, t, T):
        return distillation_loss(t, s, T)
    _fails(ex.check_distillation_loss, wrong, "wrong way")


def test_distill_no_softening():
    def wrong(s, t, T):
        return distillation_loss(s, t, 1.0) * T ** 2
    _fails(ex.check_distillation_loss, wrong, "not softened")


def test_distill_soft_cross_entropy():
    def wrong(s, t, T):
        return -(F.softmax(t / T, -1) * F.log_softmax(s / T, -1)).sum(-1).mean() * T ** 2
    _fails(ex.check_distillation_loss, wrong, "soft cross-entropy")


def test_distill_kl_div_default_reduction():
    def wrong(s, t, T):
        return F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1)) * T ** 2
    _fails(ex.check_distillation_loss, wrong, "batchmean")


def test_distill_unstable_softmax_log():
    def wrong(s, t, T):
        p_s, p_t = F.softmax(s / T, -1), F.softmax(t / T, -1)
        return (p_t * (p_t.log() - p_s.log())).sum(-1).mean() * T ** 2
    _fails(ex.check_distillation_loss, wrong, "huge logits")


# --- 6.2 ------------------------------------------------------------------------------------------

def test_layers_every_other_from_zero():
    _fails(ex.check_student_layers, lambda n: list(range(0, n, 2)), "case 1 of 8", "last layer")


def test_layers_round_half_up():
    def wrong(n):
        k = math.ceil(n / 2)
        return [0] if k == 1 else [math.floor(i * (n - 1) / (k - 1) + 0.5) for i in range(k)]
    _fails(ex.check_student_layers, wrong, "round(2.5) == 2")


def test_layers_floor_half():
    def wrong(n):
        k = max(1, n // 2)
        return [0] if k == 1 else [round(i * (n - 1) / (k - 1)) for i in range(k)]
    _fails(ex.check_student_layers, wrong, "math.ceil")


def test_checks_leave_the_random_stream_alone():
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    ex.check_mlm_loss_accuracy(mlm_loss_accuracy)
    ex.check_distillation_loss(distillation_loss)
    assert torch.equal(torch.rand(3), expected)
