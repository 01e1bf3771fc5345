"""Chapter 10's check (per-channel int8 quantisation): a right answer passes, the reference is what
PyTorch computes, and typical wrong answers fail with a message that names the mistake."""
import pytest
import torch

from bertbook import exercises as ex
from bertbook.exercises import ch10_deployment


def quantize_per_channel(weight):  # a right answer, written independently of the package
    scales = weight.abs().max(dim=1).values / 127.5
    scales = torch.where(scales > 0, scales, torch.full_like(scales, torch.finfo(torch.float32).eps))
    return torch.clamp(torch.round(weight / scales.unsqueeze(1)), -128, 127).to(torch.int8), scales


def test_right_answer_passes(capsys):
    ex.check_quantize_per_channel(quantize_per_channel)
    assert "✓ check_quantize_per_channel: 6 cases passed" in capsys.readouterr().out


def test_reference_is_pytorchs_per_channel_quantisation():
    """Bit for bit the int8 weights and scales of a Linear quantised by PyTorch (per channel)."""
    from bertbook import deploy

    torch.manual_seed(3)
    for w in [torch.randn(8, 16), 0.05 * torch.randn(32, 64)] + [torch.randn(16, 24) * torch.rand(16, 1) * 3
                                                               for _ in range(10)]:
        linear = torch.nn.Linear(w.shape[1], w.shape[0])
        linear.weight.data = w.clone()
        q = deploy.quantize_dynamic(torch.nn.Sequential(linear), embeddings=False)[0].weight()
        mine_q, mine_s = ch10_deployment._reference_quantize_per_channel(w)
        assert torch.equal(mine_s.double(), q.q_per_channel_scales().double())
        assert torch.equal(mine_q, q.int_repr())


def test_division_is_accepted_too(capsys):
    def divided(weight):
        scales = (weight.abs().amax(dim=1) / 127.5).clamp(min=torch.finfo(torch.float32).eps)
        return torch.clamp(torch.round(weight / scales[:, None]), -128, 127).to(torch.int8), scales

    ex.check_quantize_per_channel(divided)
    assert "✓ check_quantize_per_channel" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, words", [
    ("per_tensor", "one scale per output row"), ("columns", "dim=1"), ("div127", "127.5, not 127"),
    ("no_clamp", "Clamp to [−128, 127]"), ("floor", "not down (floor)"), ("trunc", "truncates"),
])
def test_mistakes_are_named(mistake, words):
    with pytest.raises(ex.ExerciseFailed, match=None) as err:
        ex.check_quantize_per_channel(ch10_deployment._per_channel_wrong(mistake))
    assert words in str(err.value)


def test_dequantised_weights_are_refused():
    def dequantised(weight):
        q, s = quantize_per_channel(weight)
        return q.float() * s[:, None], s

    with pytest.raises(ex.ExerciseFailed, match="dtype torch.float32"):
        ex.check_quantize_per_channel(dequantised)


def test_not_implemented_is_said():
    def todo(weight):
        raise NotImplementedError()

    with pytest.raises(ex.ExerciseFailed, match="not implemented yet"):
        ex.check_quantize_per_channel(todo)
