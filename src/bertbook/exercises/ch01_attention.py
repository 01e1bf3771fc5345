"""Chapter 1, attention: masked softmax, scaled dot-product attention, splitting and merging heads."""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Callable, Tuple

import torch
from torch import Tensor

from ..attention import MultiHeadAttention, keep_mask as _keep, masked_softmax, scaled_dot_product_attention
from ._harness import Case, Hint, run_check, _seeded

__all__ = ["check_masked_softmax", "check_attention", "check_split_merge_heads"]


_reference_masked_softmax = masked_softmax  # what bertbook.attention.scaled_dot_product_attention uses


def check_masked_softmax(masked_softmax: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Exercise 1.1: ``masked_softmax(scores, mask)``: softmax over the last dimension where
    ``mask`` (broadcastable to ``scores``; 1/True = keep, 0/False = padding) is kept; padded
    positions get weight 0 and a fully masked row is all zeros (not NaN)."""
    with _seeded(101):
        full = torch.ones(1, 1, 4)
        pad2 = torch.tensor([[[1, 1, 1, 0, 0]], [[1, 1, 1, 1, 0]]])
        row_masked = torch.tensor([[[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]])
        cases = [
            Case("no padding", (torch.randn(1, 3, 4), full)),
            Case("padding: the last keys are masked", (torch.randn(2, 3, 5), pad2)),
            Case("a fully masked query row (expect all zeros there)", (torch.randn(1, 3, 4), row_masked)),
            Case("a boolean mask (True = keep)", (torch.randn(2, 2, 5), pad2.bool())),
            Case("large scores (±300): exp overflows unless you subtract the maximum",
                 (300 * torch.randn(2, 3, 5), pad2)),
            Case("4-D scores with heads, mask of shape (B, 1, 1, Lk)",
                 (torch.randn(2, 2, 3, 5), pad2[:, None])),
        ]
    hints = [
        Hint(lambda s, m: s.softmax(-1),
             "the mask was not applied: padded keys must get weight 0."),
        Hint(lambda s, m: _reference_masked_softmax(s, ~_keep(m)),
             "you masked the wrong positions: in our convention 1/True means keep, 0/False means padding."),
        Hint(lambda s, m: s.masked_fill(~_keep(m), float("-inf")).softmax(-1),
             "a fully masked row has no key left, and the softmax of all -inf is 0/0 = NaN: "
             "set the weights of masked positions to 0 after the softmax (masked_fill)."),
        Hint(lambda s, m: s.masked_fill(~_keep(m), torch.finfo(s.dtype).min).softmax(-1),
             "padded keys get weight 0, but a fully masked row must be all zeros as well: set the "
             "masked weights to 0 after the softmax."),
        Hint(lambda s, m: s.masked_fill(~_keep(m), -1e9).softmax(-1),
             "padded keys get weight 0, but a fully masked row must be all zeros as well: set the "
             "masked weights to 0 after the softmax."),
    ]
    run_check("check_masked_softmax", masked_softmax, _reference_masked_softmax, cases, hints)


def _attention_unscaled(q, k, v, mask=None):
    return scaled_dot_product_attention(q * math.sqrt(q.shape[-1]), k, v, mask)


def _attention_divided_by_d(q, k, v, mask=None):
    return scaled_dot_product_attention(q / math.sqrt(q.shape[-1]), k, v, mask)


def check_attention(attention: Callable[..., Tuple[Tensor, Tensor]]) -> None:
    """Exercise 1.2: ``attention(q, k, v, mask=None) -> (output, weights)``, scaled dot-product
    attention as in ``bertbook.attention.scaled_dot_product_attention``."""
    with _seeded(102):
        pad = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])[:, None, :]  # (B, 1, Lk)
        row_masked = torch.ones(1, 3, 6, dtype=torch.bool)
        row_masked[0, 1] = False
        cases = [
            Case("no mask, d_k = 16", (torch.randn(2, 4, 16), torch.randn(2, 6, 16), torch.randn(2, 6, 16))),
            Case("no mask, d_k = 64 (the scaling matters more)",
                 (torch.randn(1, 3, 64), torch.randn(1, 5, 64), torch.randn(1, 5, 8))),
            Case("padding mask of shape (B, 1, Lk)",
                 (torch.randn(2, 4, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 8), pad)),
            Case("a fully masked query row (its output must be zeros, not NaN)",
                 (torch.randn(1, 3, 8), torch.randn(1, 6, 8), torch.randn(1, 6, 4), row_masked)),
            Case("heads: q, k, v of shape (B, H, L, d), mask (B, 1, 1, Lk)",
                 (torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 4), pad[:, None])),
            Case("one query, one key", (torch.randn(1, 1, 4), torch.randn(1, 1, 4), torch.randn(1, 1, 4))),
        ]
    hints = [
        Hint(_attention_unscaled,
             "your result matches attention *without* the 1/√d_k scaling: divide the scores "
             "q @ kᵀ by math.sqrt(d_k), where d_k = q.shape[-1]."),
        Hint(_attention_divided_by_d,
             "your result matches attention with the scores divided by d_k: the scale is 1/√d_k, "
             "not 1/d_k."),
        Hint(lambda q, k, v, mask=None: scaled_dot_product_attention(q, k, v),
             "the mask was ignored: padded keys must get weight 0."),
    ]
    run_check("check_attention", attention, scaled_dot_product_attention, cases, hints)


def _reference_split(x: Tensor, num_heads: int) -> Tensor:
    # MultiHeadAttention.split_heads only reads num_heads and head_dim from the module; a stand-in
    # avoids building (and randomly initialising) a whole module for it.
    heads = SimpleNamespace(num_heads=num_heads, head_dim=x.shape[-1] // num_heads)
    return MultiHeadAttention.split_heads(heads, x)


def check_split_merge_heads(split_heads: Callable[[Tensor, int], Tensor],
                            merge_heads: Callable[[Tensor], Tensor]) -> None:
    """Exercise 1.3: ``split_heads(x, num_heads)``: (B, L, D) -> (B, H, L, D/H) and
    ``merge_heads(x)``: (B, H, L, d) -> (B, L, H·d), as in ``MultiHeadAttention``."""
    with _seeded(103):
        split_cases = [
            Case("B=1, L=3, D=4, 2 heads", (torch.arange(12.0).view(1, 3, 4), 2)),
            Case("B=2, L=5, D=12, 3 heads", (torch.randn(2, 5, 12), 3)),
            Case("one head: only a new axis", (torch.randn(2, 4, 6), 1)),
            Case("as many heads as features (d = 1)", (torch.randn(1, 3, 4), 4)),
        ]
        merge_cases = [
            Case("B=1, H=2, L=3, d=2", (torch.arange(12.0).view(1, 2, 3, 2),)),
            Case("B=2, H=3, L=5, d=4", (torch.randn(2, 3, 5, 4),)),
            Case("one head", (torch.randn(2, 1, 4, 6),)),
        ]
    split_hints = [
        Hint(lambda x, h: x.reshape(x.shape[0], h, x.shape[1], x.shape[2] // h),
             "you reshaped (B, L, D) straight into (B, H, L, d): that mixes positions across heads. "
             "View it as (B, L, H, d) first, then swap the L and H axes with .transpose(1, 2)."),
    ]
    merge_hints = [
        Hint(lambda x: x.reshape(x.shape[0], x.shape[2], -1),
             "you reshaped (B, H, L, d) straight into (B, L, D): that mixes positions across heads. "
             "Swap back with .transpose(1, 2) first (then .reshape, since the result is not contiguous)."),
    ]
    n = run_check("split_heads", split_heads, _reference_split, split_cases, split_hints, quiet=True)
    n += run_check("merge_heads", merge_heads, MultiHeadAttention.merge_heads, merge_cases, merge_hints,
                   quiet=True)
    # The round trip must give back the input: merge_heads(split_heads(x)) == x.
    roundtrip = [Case("merge_heads(split_heads(x, 4)) must return x", (torch.arange(48.0).view(2, 3, 8), 4))]
    n += run_check("merge_heads(split_heads(x))", lambda x, h: merge_heads(split_heads(x, h)),
                   lambda x, h: x, roundtrip, quiet=True)
    print(f"✓ check_split_merge_heads: {n} cases passed")
