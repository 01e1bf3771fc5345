import pytest
import torch
import torch.nn.functional as F

from bertbook.attention import MultiHeadAttention, scaled_dot_product_attention


@pytest.mark.parametrize("shape", [(1, 1, 4, 8), (2, 3, 5, 16), (3, 4, 7, 32), (2, 12, 16, 64)])
@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_matches_torch(shape, masked):
    b, h, l, d = shape
    q, k, v = (torch.randn(b, h, l, d) for _ in range(3))
    mask = None
    if masked:
        lengths = torch.randint(1, l + 1, (b,))
        mask = (torch.arange(l)[None, :] < lengths[:, None])[:, None, None, :]  # (B,1,1,L) padding
    ours, w = scaled_dot_product_attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    diff = (ours - ref).abs().max().item()
    print(f"sdpa {shape} masked={masked}: max abs diff {diff:.2e}")
    assert diff <= 1e-6
    assert torch.allclose(w.sum(-1), torch.ones(b, h, l), atol=1e-6)


def test_sdpa_cross_attention_and_01_mask():
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])[:, None, :]  # 0/1 ints, HF style
    ours, w = scaled_dot_product_attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.bool())
    assert (ours - ref).abs().max() <= 1e-6
    assert w[0, :, 3:].abs().max() == 0  # padding gets exactly zero weight


def test_fully_masked_row_is_zero_not_nan():
    q = torch.randn(1, 2, 3, 4)
    mask = torch.zeros(1, 1, 1, 3, dtype=torch.bool)
    out, w = scaled_dot_product_attention(q, q, q, mask)
    assert not torch.isnan(out).any() and not torch.isnan(w).any()
    assert out.abs().max() == 0 and w.abs().max() == 0
    mha = MultiHeadAttention(8, 2).eval()
    for weights in (False, True):
        y, _ = mha(torch.randn(1, 3, 8), torch.zeros(1, 3), output_attentions=weights)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("b,l,d,h", [(2, 5, 16, 4), (3, 9, 24, 3), (1, 1, 8, 8)])
def test_multihead_matches_torch(b, l, d, h):
    ours = MultiHeadAttention(d, h).eval()
    ref = torch.nn.MultiheadAttention(d, h, batch_first=True).eval()
    with torch.no_grad():  # torch also fuses q, k, v as one (3D, D) matrix: copy it across
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.out.weight)
        ref.out_proj.bias.copy_(ours.out.bias)
    x = torch.randn(b, l, d)
    keep = torch.ones(b, l, dtype=torch.long)
    keep[0, max(1, l - 2):] = 0
    y, w = ours(x, keep, output_attentions=True)
    y_fast, _ = ours(x, keep)
    y_ref, w_ref = ref(x, x, x, key_padding_mask=keep == 0, average_attn_weights=False)
    print(f"mha b={b} l={l} d={d} h={h}: max abs diff {(y - y_ref).abs().max().item():.2e}")
    assert (y - y_ref).abs().max() <= 1e-6
    assert (y_fast - y_ref).abs().max() <= 1e-6
    assert (w - w_ref).abs().max() <= 1e-6


def test_split_merge_roundtrip():
    mha = MultiHeadAttention(12, 3)
    x = torch.randn(2, 5, 12)
    assert mha.split_heads(x).shape == (2, 3, 5, 4)
    assert torch.equal(mha.merge_heads(mha.split_heads(x)), x)


def test_bad_inputs():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        mha(torch.randn(2, 4, 8), torch.ones(2, 5))
    with pytest.raises(ValueError, match="expected input"):
        mha(torch.randn(2, 4, 6))


def test_masked_softmax_is_the_one_attention_uses():
    from bertbook.exercises import ch01_attention
    from bertbook.attention import masked_softmax

    assert ch01_attention._reference_masked_softmax is masked_softmax  # the exercise's reference is the package's
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    mask = torch.tensor([[[1, 1, 1, 0, 0]], [[0, 0, 0, 0, 0]]])
    _, weights = scaled_dot_product_attention(q, k, v, mask)
    assert torch.equal(weights, masked_softmax(q @ k.transpose(-2, -1) / 2.0, mask))
    assert torch.equal(weights[1], torch.zeros(3, 5))  # nothing kept: zeros, not NaN


def test_only_boolean_or_01_masks_are_read_as_keep_masks():
    from bertbook.attention import expand_padding_mask, masked_softmax
    from bertbook.bert import BertConfig, BertModel

    q, k, v = torch.randn(1, 2, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    # torch adds a float mask to the scores: [0, -1e4, -1e4] keeps key 0 there; read as a keep-mask
    # it would keep keys 1 and 2. Neither reading is silently chosen.
    with pytest.raises(ValueError, match="Additive float masks"):
        scaled_dot_product_attention(q, k, v, torch.tensor([0.0, -1e4, -1e4]))
    with pytest.raises(ValueError, match="NaN"):
        masked_softmax(torch.randn(1, 3), torch.tensor([[1.0, float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="attention_mask must be boolean or hold only 0 and 1"):
        expand_padding_mask(torch.tensor([[1, 2, 0]]), 1, 3)
    # a 0/1 float mask is a keep-mask, the same as its boolean twin
    keep = torch.tensor([1.0, 1.0, 0.0])
    assert torch.equal(scaled_dot_product_attention(q, k, v, keep)[1],
                       scaled_dot_product_attention(q, k, v, keep.bool())[1])

    model = BertModel(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=16, max_position_embeddings=8)).eval()
    ids, m = torch.tensor([[2, 5, 6, 0]]), torch.tensor([[1, 1, 1, 0]])
    with pytest.raises(ValueError, match=r"\(1 - mask\) \* -10000"):
        model(ids, (1 - m) * -10000.0)  # Hugging Face's extended mask
    with torch.no_grad():
        assert torch.equal(model(ids, m.float()).last_hidden_state, model(ids, m.bool()).last_hidden_state)
