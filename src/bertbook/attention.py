"""Scaled dot-product attention and multi-head attention (chapter 1).

Shapes: B batch, H heads, Lq / Lk query / key lengths, D model width, d = D / H head width.

Masks are keep-masks, as the `attention_mask` of Hugging Face's tokenizers: boolean, or numbers that
are all 0 or 1, where 1 (True) means "attend" and 0 (False) means "padding". Anything else is
refused (`keep_mask`), because it has another meaning elsewhere: torch's own
`scaled_dot_product_attention` *adds* a float mask to the scores, and Hugging Face's models turn the
padding mask into such an additive one, (1 - mask) * -10000. Read as a keep-mask, that one would
keep exactly the padded keys. The values are checked where reading them back is free (eager mode
on the CPU, `device.can_read_back`); on a GPU or under `torch.compile` only the dtype is.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .device import can_read_back


def keep_mask(mask: Tensor, name: str = "attention_mask") -> Tensor:
    """`mask` as a boolean keep-mask (True = attend), same shape. A boolean mask is returned as it
    is; a numeric one must hold only 0 and 1. Anything else, an additive float mask such as
    (1 - mask) * -10000 or a NaN, is a ValueError naming `name`."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(mask).__name__}")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise TypeError(f"{name} must be boolean or hold 0 and 1, got dtype {mask.dtype}")
    if can_read_back(mask):
        if mask.is_floating_point() and bool(mask.isnan().any()):
            raise ValueError(f"{name} holds NaN: a mask must be boolean or hold only 0 and 1 (1 = attend)")
        wrong = (mask != 0) & (mask != 1)
        if bool(wrong.any()):
            seen = sorted(set(mask[wrong].flatten()[:1000].tolist()))[:3]
            raise ValueError(
                f"{name} must be boolean or hold only 0 and 1 (1 = attend, 0 = padding), got values such "
                f"as {seen}. Additive float masks, added to the scores (torch's float attn_mask, Hugging "
                f"Face's extended mask (1 - mask) * -10000), are not accepted: pass the 0/1 padding mask")
    return mask != 0


def expand_padding_mask(attention_mask: Tensor, batch: int, key_len: int) -> Tensor:
    """Turn a (B, Lk) padding mask into a boolean (B, 1, 1, Lk) mask that broadcasts over heads
    and queries. A mask that is already 3-D (B, Lq, Lk) or 4-D is only checked and cast. The mask
    must be boolean or 0/1 (`keep_mask`)."""
    if attention_mask.dim() == 2:
        if attention_mask.shape != (batch, key_len):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected (batch, seq_len) = "
                f"({batch}, {key_len})"
            )
        attention_mask = attention_mask[:, None, None, :]
    elif attention_mask.dim() == 3:
        attention_mask = attention_mask[:, None, :, :]
    elif attention_mask.dim() != 4:
        raise ValueError(f"attention_mask must be 2-D, 3-D or 4-D, got {attention_mask.dim()}-D")
    if attention_mask.shape[-1] != key_len:
        raise ValueError(
            f"attention_mask's last dimension is {attention_mask.shape[-1]}, but there are {key_len} keys"
        )
    return keep_mask(attention_mask)


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """softmax(scores) over the last dimension where `mask` (boolean or 0/1, broadcastable to
    `scores`; True/1 = keep) keeps a position; masked positions get weight 0, and a row with nothing
    kept is all zeros (not NaN). Any other mask is refused (`keep_mask`)."""
    keep = keep_mask(mask, "mask")
    # The most negative finite number instead of -inf: a fully masked row stays finite.
    scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1).masked_fill(~keep, 0.0)


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attention_mask: Optional[Tensor] = None,
    dropout_p: float = 0.0,
) -> Tuple[Tensor, Tensor]:
    """softmax(q kᵀ / √d) v, written out so that the weights can be returned.

    q: (..., Lq, d), k: (..., Lk, d), v: (..., Lk, dv); attention_mask: boolean or 0/1, broadcastable
    to (..., Lq, Lk), True/1 = keep. Unlike torch's function of the same name, a float mask is not
    added to the scores: one that is not 0/1 is refused (`keep_mask`). Returns (output (..., Lq, dv), weights (..., Lq, Lk)).
    A query row whose keys are all masked gets all-zero weights and a zero output (not NaN),
    as `torch.nn.functional.scaled_dot_product_attention` does.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if attention_mask is not None:
        weights = masked_softmax(scores, keep_mask(attention_mask))
    else:
        weights = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection.

    The fused weight is the concatenation [W_q; W_k; W_v] of shape (3D, D), so Hugging Face's
    separate `query`, `key`, `value` weights load by concatenation (see `bertbook.hf`).
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})"
            )
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=bias)
        self.out = nn.Linear(hidden_size, hidden_size, bias=bias)

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, H, L, d)"""
        b, l, _ = x.shape
        return x.view(b, l, self.num_heads, self.head_dim).transpose(1, 2)

    @staticmethod
    def merge_heads(x: Tensor) -> Tensor:
        """(B, H, L, d) -> (B, L, D)"""
        b, h, l, d = x.shape
        return x.transpose(1, 2).reshape(b, l, h * d)

    def forward(
        self,
        x: Tensor,
        attention_mask: Optional[Tensor] = None,
        output_attentions: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """x: (B, L, D); attention_mask: (B, L) padding mask or (B, L, L). Returns ((B, L, D), weights
        (B, H, L, L) if output_attentions else None)."""
        if x.dim() != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(f"expected input (batch, seq_len, {self.hidden_size}), got {tuple(x.shape)}")
        b, l, _ = x.shape
        q, k, v = (self.split_heads(t) for t in self.qkv(x).chunk(3, dim=-1))
        mask = None if attention_mask is None else expand_padding_mask(attention_mask, b, l)
        p = self.dropout if self.training else 0.0
        if output_attentions:
            out, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p)
        else:
            # The fused kernel (flash / memory-efficient on GPU) when no weights are needed.
            out, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p), None
        return self.out(self.merge_heads(out)), weights

    def relations(self, x: Tensor, attention_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """The heads' two self-relations as log-probabilities, without dropout (MiniLM, Wang et al.
        2020): the attention distribution log softmax(q kᵀ / √d) and the value relation
        log softmax(v vᵀ / √d). x: (B, L, D), the attention's input; attention_mask: (B, L).
        Returns two (B, H, L, L) tensors; masked keys get the most negative finite log-probability."""
        b, l, _ = x.shape
        q, k, v = (self.split_heads(t) for t in self.qkv(x).chunk(3, dim=-1))
        out = []
        for left, right in ((q, k), (v, v)):
            scores = left @ right.transpose(-2, -1) / math.sqrt(self.head_dim)
            if attention_mask is not None:
                keep = expand_padding_mask(attention_mask, b, l)
                scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
            out.append(scores.log_softmax(dim=-1))
        return out[0], out[1]
