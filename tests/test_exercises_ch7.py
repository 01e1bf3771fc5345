"""The chapter-7 check of bertbook.exercises (the classification distillation loss): right answers
pass, typical wrong answers fail with a message that names the mistake."""
import pytest
import torch
import torch.nn.functional as F

from bertbook import exercises as ex


def kd_loss(student_logits, teacher_logits, labels, alpha, temperature):
    """Written out by hand, independently of the package."""
    T = temperature
    p_t = (teacher_logits / T).softmax(-1)
    log_p_s = (student_logits / T).log_softmax(-1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(-1).mean()
    return alpha * F.cross_entropy(student_logits, labels) + (1 - alpha) * T ** 2 * kl


def kd_loss_kl_div(student_logits, teacher_logits, labels, alpha, temperature):
    T = temperature
    kl = F.kl_div(F.log_softmax(student_logits / T, -1), F.softmax(teacher_logits / T, -1),
                  reduction="batchmean")
    return alpha * F.cross_entropy(student_logits, labels) + (1 - alpha) * T * T * kl


@pytest.mark.parametrize("fn", [kd_loss, kd_loss_kl_div])
def test_right_answers_pass(fn, capsys):
    ex.check_classification_kd_loss(fn)
    assert "✓ check_classification_kd_loss: 7 cases passed" in capsys.readouterr().out


def no_t2(s, t, y, alpha, T):
    kl = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean")
    return alpha * F.cross_entropy(s, y) + (1 - alpha) * kl


def swapped(s, t, y, alpha, T):
    kl = F.kl_div(F.log_softmax(t / T, -1), F.softmax(s / T, -1), reduction="batchmean")
    return alpha * F.cross_entropy(s, y) + (1 - alpha) * T ** 2 * kl


def alpha_wrong(s, t, y, alpha, T):
    return kd_loss(s, t, y, 1 - alpha, T)


def default_reduction(s, t, y, alpha, T):
    kl = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1))  # reduction="mean": also / C
    return alpha * F.cross_entropy(s, y) + (1 - alpha) * T ** 2 * kl


def student_unsoftened(s, t, y, alpha, T):
    kl = F.kl_div(F.log_softmax(s, -1), F.softmax(t / T, -1), reduction="batchmean")
    return alpha * F.cross_entropy(s, y) + (1 - alpha) * T ** 2 * kl


def soft_ce(s, t, y, alpha, T):
    ce_soft = -(F.softmax(t / T, -1) * F.log_softmax(s / T, -1)).sum(-1).mean()
    return alpha * F.cross_entropy(s, y) + (1 - alpha) * T ** 2 * ce_soft


def per_example(s, t, y, alpha, T):
    return kd_loss(s, t, y, alpha, T) * torch.ones(s.shape[0])


def todo(s, t, y, alpha, T):
    raise NotImplementedError()


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
@pytest.mark.parametrize("fn, words", [
    (no_t2, "factor T² on the KL term is missing"),
    (swapped, "KL goes the wrong way"),
    (alpha_wrong, "alpha is on the wrong term"),
    (default_reduction, "reduction='batchmean'"),
    (student_unsoftened, "student's logits must be divided by T"),
    (soft_ce, "subtract the teacher's entropy"),
])
def test_typical_mistakes_get_their_hint(fn, words):
    with pytest.raises(ex.ExerciseFailed) as err:
        ex.check_classification_kd_loss(fn)
    msg = str(err.value)
    assert "check_classification_kd_loss failed on case" in msg
    assert words in msg, msg


def test_alpha_mistake_is_caught_where_it_shows():
    with pytest.raises(ex.ExerciseFailed, match=r"case 3 of 7 \(alpha=0"):
        ex.check_classification_kd_loss(alpha_wrong)


def test_shape_and_not_implemented():
    with pytest.raises(ex.ExerciseFailed, match="shape"):
        ex.check_classification_kd_loss(per_example)
    with pytest.raises(ex.ExerciseFailed, match="not implemented yet"):
        ex.check_classification_kd_loss(todo)


def test_check_leaves_the_random_stream_alone():
    torch.manual_seed(5)
    a = torch.rand(3)
    torch.manual_seed(5)
    ex.check_classification_kd_loss(kd_loss)
    assert torch.equal(torch.rand(3), a)
