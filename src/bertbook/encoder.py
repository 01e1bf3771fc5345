"""The Transformer encoder (chapter 2): feed-forward block, one layer, a stack of layers.

BERT puts LayerNorm after each residual addition ("post-LN"); many later models put it before
each sub-block ("pre-LN"), which trains more stably without warm-up. Both are here.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from .attention import MultiHeadAttention


class FeedForward(nn.Module):
    """Position-wise FFN: Linear(D -> I), GELU, Linear(I -> D). (B, L, D) -> (B, L, D)."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        # BERT's GELU is the exact one, x·Φ(x), not the tanh approximation.
        return self.fc2(F.gelu(self.fc1(x)))


class EncoderLayer(nn.Module):
    """Self-attention and FFN, each wrapped in dropout + residual + LayerNorm."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        layer_norm_eps: float = 1e-12,
        pre_norm: bool = False,
    ):
        super().__init__()
        self.pre_norm = pre_norm
        self.attention = MultiHeadAttention(hidden_size, num_heads, dropout=attention_dropout)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.ffn = FeedForward(hidden_size, intermediate_size)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, attention_mask: Optional[Tensor] = None, output_attentions: bool = False
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """x: (B, L, D) -> ((B, L, D), attention weights (B, H, L, L) or None)."""
        if self.pre_norm:
            a, w = self.attention(self.attention_norm(x), attention_mask, output_attentions)
            x = x + self.dropout(a)
            x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        else:
            a, w = self.attention(x, attention_mask, output_attentions)
            x = self.attention_norm(x + self.dropout(a))
            x = self.ffn_norm(x + self.dropout(self.ffn(x)))
        return x, w

    def relations(self, x: Tensor, attention_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """The self-attention's relations for this layer's input x (B, L, D), as
        `MultiHeadAttention.relations`: two (B, H, L, L) log-probability tensors."""
        return self.attention.relations(self.attention_norm(x) if self.pre_norm else x, attention_mask)


class Encoder(nn.Module):
    """A stack of `num_layers` encoder layers. With pre_norm a final LayerNorm closes the stack,
    since the last layer's output has not been normalised."""

    def __init__(
        self,
        num_layers: int,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        layer_norm_eps: float = 1e-12,
        pre_norm: bool = False,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(hidden_size, num_heads, intermediate_size, dropout, attention_dropout,
                         layer_norm_eps, pre_norm)
            for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps) if pre_norm else None

    def forward(
        self,
        x: Tensor,
        attention_mask: Optional[Tensor] = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> Tuple[Tensor, Optional[List[Tensor]], Optional[List[Tensor]]]:
        """x: (B, L, D). Returns (last hidden state (B, L, D), hidden states: the input and each
        layer's output, L+1 tensors of (B, L, D) or None, attentions: one (B, H, L, L) per layer or None)."""
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for layer in self.layers:
            x, w = layer(x, attention_mask, output_attentions)
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(w)
        if self.final_norm is not None:
            x = self.final_norm(x)
            if output_hidden_states:
                hidden_states[-1] = x
        return x, hidden_states, attentions
