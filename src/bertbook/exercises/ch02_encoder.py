"""Chapter 2, the encoder: one encoder layer's forward, the parameter count of an encoder."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ..encoder import Encoder, EncoderLayer
from ._harness import Case, Hint, run_check, _seeded

__all__ = ["check_encoder_layer", "check_encoder_num_parameters"]


def _random_layer(hidden: int, heads: int, inter: int, pre_norm: bool) -> EncoderLayer:
    layer = EncoderLayer(hidden, heads, inter, dropout=0.1, attention_dropout=0.1, pre_norm=pre_norm)
    with torch.no_grad():
        # LayerNorm starts as the identity affine map (γ=1, β=0): randomise it, so that a forgotten
        # or misplaced LayerNorm changes the result.
        for norm in (layer.attention_norm, layer.ffn_norm):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0.0, 0.5)
    return layer.eval()  # dropout off: the forward pass is deterministic


def _reference_layer(layer: EncoderLayer, x: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
    return layer.eval()(x, attention_mask)[0]


def _layer_swapped_norm(layer: EncoderLayer, x: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
    layer.pre_norm = not layer.pre_norm
    return layer.eval()(x, attention_mask)[0]


def _layer_no_residual(layer: EncoderLayer, x: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
    if layer.pre_norm:
        x = layer.attention(layer.attention_norm(x), attention_mask)[0]
        return layer.ffn(layer.ffn_norm(x))
    x = layer.attention_norm(layer.attention(x, attention_mask)[0])
    return layer.ffn_norm(layer.ffn(x))


def check_encoder_layer(encoder_layer_forward: Callable[..., Tensor]) -> None:
    """Exercise 2.1: ``encoder_layer_forward(layer, x, attention_mask)``: the forward pass of a
    ``bertbook.EncoderLayer`` (post-LN or pre-LN, as ``layer.pre_norm`` says) from its parts
    ``layer.attention``, ``layer.attention_norm``, ``layer.ffn``, ``layer.ffn_norm``; returns (B, L, D)."""
    with _seeded(201):
        pad = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
        cases = [
            Case("post-LN, no mask", (_random_layer(8, 2, 16, False), torch.randn(2, 4, 8), None)),
            Case("post-LN, padding mask", (_random_layer(8, 2, 16, False), torch.randn(2, 5, 8), pad)),
            Case("post-LN, one token", (_random_layer(12, 3, 24, False), torch.randn(1, 1, 12), None)),
            Case("pre-LN, no mask", (_random_layer(8, 2, 16, True), torch.randn(2, 4, 8), None)),
            Case("pre-LN, padding mask", (_random_layer(16, 4, 32, True), torch.randn(2, 5, 16), pad)),
        ]
    hints = [
        Hint(_layer_swapped_norm,
             "you put LayerNorm in the other place. Post-LN (BERT, layer.pre_norm False): "
             "x = norm(x + sublayer(x)). Pre-LN (layer.pre_norm True): x = x + sublayer(norm(x))."),
        Hint(_layer_no_residual,
             "the residual connections are missing: add the sub-block's input to its output."),
    ]
    run_check("check_encoder_layer", encoder_layer_forward, _reference_layer, cases, hints, atol=1e-5)


def _encoder_count(num_layers, hidden_size, num_heads, intermediate_size, pre_norm=False) -> int:
    # Built on the meta device: shapes only, no memory, so even BERT-large costs nothing.
    with torch.device("meta"):
        enc = Encoder(num_layers, hidden_size, num_heads, intermediate_size, pre_norm=pre_norm)
    return sum(p.numel() for p in enc.parameters())


def _encoder_count_minus(per_layer: Callable[[int, int], int], final: Callable[[int], int] = lambda d: 0):
    def wrong(num_layers, hidden_size, num_heads, intermediate_size, pre_norm=False):
        right = _encoder_count(num_layers, hidden_size, num_heads, intermediate_size, pre_norm)
        extra = final(hidden_size) if pre_norm else 0
        return right - num_layers * per_layer(hidden_size, intermediate_size) - extra
    return wrong


def check_encoder_num_parameters(count: Callable[..., int]) -> None:
    """Exercise 2.2: ``count(num_layers, hidden_size, num_heads, intermediate_size, pre_norm=False)``:
    the number of parameters of ``bertbook.Encoder`` with those sizes, from a formula."""
    cases = [
        Case("1 layer, D=4, 1 head, I=8", (1, 4, 1, 8)),
        Case("2 layers, D=8, 2 heads, I=32", (2, 8, 2, 32)),
        Case("2 layers, D=8, 4 heads, I=32 (more heads)", (2, 8, 4, 32)),
        Case("pre-LN: 3 layers, D=16, 4 heads, I=64", (3, 16, 4, 64), {"pre_norm": True}),
        Case("BERT-base's encoder: 12 layers, D=768, 12 heads, I=3072", (12, 768, 12, 3072)),
        Case("BERT-large's encoder: 24 layers, D=1024, 16 heads, I=4096", (24, 1024, 16, 4096)),
    ]
    hints = [
        Hint(_encoder_count_minus(lambda d, i: 4 * d + d + i),
             "the bias vectors are missing: each nn.Linear(n_in, n_out) has n_in·n_out weights "
             "plus n_out biases."),
        Hint(_encoder_count_minus(lambda d, i: 4 * d, lambda d: 2 * d),
             "the LayerNorm parameters are missing: each LayerNorm has a scale γ and a shift β of "
             "size D, and every layer has two LayerNorms (pre-LN adds a final one)."),
        Hint(_encoder_count_minus(lambda d, i: 0, lambda d: 2 * d),
             "for pre-LN, the stack ends with one more LayerNorm (2·D parameters)."),
        Hint(_encoder_count_minus(lambda d, i: d * d + d),
             "one of the four attention projections is missing: queries, keys, values *and* the "
             "output projection are each D×D (+ D biases)."),
    ]
    run_check("check_encoder_num_parameters", count, _encoder_count, cases, hints)
