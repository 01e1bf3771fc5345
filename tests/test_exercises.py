"""The graded checks of bertbook.exercises: right answers pass, typical wrong answers fail with a
message a student can act on (which input, what was expected, what came back, a hint)."""
import math

import pytest
import torch

from bertbook import exercises as ex
from bertbook.bert import BertConfig


# --- right answers, written independently of the package ----------------------------------------

def masked_softmax(scores, mask):
    keep = mask.bool()
    scores = scores.masked_fill(~keep, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(weights, nan=0.0).masked_fill(~keep, 0.0)


def attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = masked_softmax(scores, torch.ones_like(scores) if mask is None else mask)
    return weights @ v, weights


def split_heads(x, num_heads):
    b, l, d = x.shape
    return x.reshape(b, l, num_heads, d // num_heads).permute(0, 2, 1, 3)


def merge_heads(x):
    b, h, l, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, l, h * d)


def encoder_layer_forward(layer, x, attention_mask):
    if layer.pre_norm:
        x = x + layer.attention(layer.attention_norm(x), attention_mask)[0]
        return x + layer.ffn(layer.ffn_norm(x))
    x = layer.attention_norm(x + layer.attention(x, attention_mask)[0])
    return layer.ffn_norm(x + layer.ffn(x))


def encoder_count(num_layers, hidden_size, num_heads, intermediate_size, pre_norm=False):
    d, i = hidden_size, intermediate_size
    per_layer = (4 * d * d + 4 * d) + (2 * d * i + i + d) + 2 * 2 * d
    return num_layers * per_layer + (2 * d if pre_norm else 0)


def bert_count(c):
    d, v = c.hidden_size, c.vocab_size
    embeddings = (v + c.max_position_embeddings + c.type_vocab_size) * d + 2 * d
    encoder = encoder_count(c.num_hidden_layers, d, c.num_attention_heads, c.intermediate_size)
    pooler = d * d + d
    mlm = d * d + d + 2 * d + v
    nsp = 2 * d + 2
    return embeddings + encoder + pooler + mlm + nsp


def bert_embeddings(emb, input_ids, token_type_ids):
    positions = torch.arange(input_ids.shape[1])
    x = emb.word_embeddings(input_ids) + emb.position_embeddings(positions)
    return emb.LayerNorm(x + emb.token_type_embeddings(token_type_ids))


RIGHT = [
    (ex.check_masked_softmax, (masked_softmax,)),
    (ex.check_attention, (attention,)),
    (ex.check_split_merge_heads, (split_heads, merge_heads)),
    (ex.check_encoder_layer, (encoder_layer_forward,)),
    (ex.check_encoder_num_parameters, (encoder_count,)),
    (ex.check_bert_num_parameters, (bert_count,)),
    (ex.check_bert_embeddings, (bert_embeddings,)),
]


@pytest.mark.parametrize("check, answer", RIGHT, ids=[c.__name__ for c, _ in RIGHT])
def test_right_answers_pass_with_one_stable_line(check, answer, capsys):
    check(*answer)
    out = capsys.readouterr().out
    assert out.startswith(f"✓ {check.__name__}: ") and out.endswith(" cases passed\n"), out


def test_a_check_leaves_the_callers_random_stream_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    ex.check_split_merge_heads(split_heads, merge_heads)
    ex.check_encoder_layer(encoder_layer_forward)
    assert torch.equal(torch.rand(3), expected)


# --- wrong answers --------------------------------------------------------------------------------

def failure(check, *answer):
    with pytest.raises(ex.ExerciseFailed) as info:
        check(*answer)
    return str(info.value)


def test_not_implemented_says_so():
    def masked_softmax(scores, mask):
        # YOUR CODE HERE
        raise NotImplementedError()

    msg = failure(ex.check_masked_softmax, masked_softmax)
    assert "not implemented yet" in msg and "NotImplementedError" in msg


def test_attention_without_scaling_is_caught_with_a_hint():
    def unscaled(q, k, v, mask=None):
        weights = masked_softmax(q @ k.transpose(-2, -1), torch.ones(1) if mask is None else mask)
        return weights @ v, weights

    msg = failure(ex.check_attention, unscaled)
    assert "case 1 of 6" in msg and "for input:" in msg and "expected:" in msg and "got:" in msg
    assert "without* the 1/√d_k scaling" in msg


def test_attention_scaled_by_d_instead_of_sqrt_d():
    def by_d(q, k, v, mask=None):
        weights = masked_softmax(q @ k.transpose(-2, -1) / q.shape[-1],
                                 torch.ones(1) if mask is None else mask)
        return weights @ v, weights

    assert "not 1/d_k" in failure(ex.check_attention, by_d)


def test_attention_returning_only_the_output():
    msg = failure(ex.check_attention, lambda q, k, v, mask=None: attention(q, k, v, mask)[0])
    assert "expected a tuple of 2 values" in msg


def test_masked_softmax_nan_on_a_fully_masked_row():
    def nan_rows(scores, mask):
        return scores.masked_fill(mask == 0, float("-inf")).softmax(-1)

    msg = failure(ex.check_masked_softmax, nan_rows)
    assert "fully masked query row" in msg and "got NaN" in msg


def test_masked_softmax_inverted_mask():
    msg = failure(ex.check_masked_softmax, lambda s, m: masked_softmax(s, m == 0))
    assert "1/True means keep" in msg


def test_masked_softmax_without_max_subtraction_overflows():
    def naive(scores, mask):
        e = scores.exp() * mask
        return e / e.sum(-1, keepdim=True).clamp(min=1e-30)

    msg = failure(ex.check_masked_softmax, naive)
    assert "large scores" in msg


def test_split_heads_without_transpose():
    def wrong_split(x, num_heads):
        b, l, d = x.shape
        return x.reshape(b, num_heads, l, d // num_heads)

    msg = failure(ex.check_split_merge_heads, wrong_split, merge_heads)
    assert "split_heads failed" in msg and "mixes positions across heads" in msg


def test_a_crash_in_the_students_code_is_reported_with_the_input():
    msg = failure(ex.check_split_merge_heads, split_heads, lambda x: x.view(x.shape[0], x.shape[2], -1, 5))
    assert "merge_heads failed on case 1" in msg and "an exception, RuntimeError" in msg


def test_encoder_layer_pre_ln_for_post_ln():
    def always_pre(layer, x, attention_mask):
        x = x + layer.attention(layer.attention_norm(x), attention_mask)[0]
        return x + layer.ffn(layer.ffn_norm(x))

    msg = failure(ex.check_encoder_layer, always_pre)
    assert "post-LN, no mask" in msg and "x = norm(x + sublayer(x))" in msg


def test_encoder_layer_without_residuals():
    def no_residual(layer, x, attention_mask):
        if layer.pre_norm:
            x = layer.attention(layer.attention_norm(x), attention_mask)[0]
            return layer.ffn(layer.ffn_norm(x))
        x = layer.attention_norm(layer.attention(x, attention_mask)[0])
        return layer.ffn_norm(layer.ffn(x))

    assert "residual connections are missing" in failure(ex.check_encoder_layer, no_residual)


def test_encoder_count_without_layernorm():
    msg = failure(ex.check_encoder_num_parameters,
                  lambda n, d, h, i, pre_norm=False: encoder_count(n, d, h, i, pre_norm) - n * 4 * d
                  - (2 * d if pre_norm else 0))
    assert "off by -16 (too few)" in msg and "LayerNorm parameters are missing" in msg


def test_encoder_count_with_heads_in_the_formula():
    msg = failure(ex.check_encoder_num_parameters,
                  lambda n, d, h, i, pre_norm=False: encoder_count(n, d, h, i, pre_norm) * h)
    assert "more heads" in msg or "2 heads" in msg


def test_bert_count_with_the_tied_decoder_counted_twice():
    msg = failure(ex.check_bert_num_parameters, lambda c: bert_count(c) + c.vocab_size * c.hidden_size)
    assert "(tied): count it once" in msg and "off by 40 (too many)" in msg


def test_bert_count_without_nsp():
    msg = failure(ex.check_bert_num_parameters, lambda c: bert_count(c) - 2 * c.hidden_size - 2)
    assert "NSP head is missing" in msg


def test_an_ambiguous_mistake_gets_the_hint_that_explains_every_case():
    # With two segment types the segment table (2·D) costs as much as a LayerNorm (2·D);
    # the three-segment case tells them apart.
    msg = failure(ex.check_bert_num_parameters, lambda c: bert_count(c) - c.type_vocab_size * c.hidden_size)
    assert "segment (token type) embeddings are missing" in msg
    msg = failure(ex.check_bert_num_parameters, lambda c: bert_count(c) - 2 * c.hidden_size)
    assert "a LayerNorm (2·D) is missing" in msg


def test_bert_embeddings_without_segments():
    def no_segments(emb, input_ids, token_type_ids):
        positions = torch.arange(input_ids.shape[1])
        return emb.LayerNorm(emb.word_embeddings(input_ids) + emb.position_embeddings(positions))

    msg = failure(ex.check_bert_embeddings, no_segments)
    assert "segment embeddings are missing" in msg


def test_a_check_never_passes_a_non_function():
    assert "expected a function" in failure(ex.check_attention, 42)


def test_base_bert_count_is_about_110m():
    assert 109e6 < bert_count(BertConfig()) < 111e6
