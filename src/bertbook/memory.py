"""An estimate of a stage's GPU memory when it trains, from its configuration alone (nothing is run).

Three parts, in bytes:

* the model's state: float32 weights, their gradients and AdamW's two moments, 16 bytes per
  trained parameter, plus 4 per parameter of a frozen teacher;
* the activations kept for the backward pass of each layer: s·b·h·(34 + 5·a·s/h) bytes for a
  sequence of s tokens, batch b, width h and a heads, with 16-bit activations (mixed precision)
  and the feed-forward 4·h wide, as Korthikanti et al. (2022, "Reducing Activation Recomputation in
  Large Transformer Models", section 4.1) count them; the 5·a·s² term is the attention
  scores, their softmax and its dropout mask, which grow with the square of the length;
* the vocabulary-sized logits at the masked positions (15% of the tokens), in float32 for the loss:
  the logits, their softmax and their gradient, and as much again for a teacher's soft targets.

It leaves out the CUDA context and the allocator's slack (a few hundred MB) and the embeddings'
and heads' own activations, so read it as a floor, to the nearest gigabyte.
"""
from __future__ import annotations

from typing import Dict, Optional

from .bert import BertConfig

MASKED_SHARE = 0.15


def encoder_parameters(config: BertConfig) -> int:
    """Parameters of the embeddings and the encoder layers (the heads' own weights are tied or small)."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h * i + i + h + 4 * h  # attention, feed-forward, two LayerNorms
    return embeddings + layers * layer


def layer_activation_bytes(config: BertConfig, batch: int, seq_len: int) -> float:
    """Activations one encoder layer keeps for backward: s·b·h·(34 + 5·a·s/h) bytes (16-bit)."""
    s, b, h, a = seq_len, batch, config.hidden_size, config.num_attention_heads
    return s * b * h * (34 + 5 * a * s / h)


def training_memory(config: BertConfig, batch: int, seq_len: int, mlm: bool = True,
                    teacher: Optional[BertConfig] = None) -> Dict[str, float]:
    """The estimate, in bytes, of training a model of `config` on batches of `batch` x `seq_len`
    tokens: {"state", "activations", "logits", "total"}. `mlm`: the loss has vocabulary-sized
    logits at the masked positions; `teacher`: a frozen teacher runs beside it (distillation)."""
    if batch < 1 or seq_len < 1:
        raise ValueError(f"batch and seq_len must be positive, got {batch} and {seq_len}")
    state = 16 * encoder_parameters(config) + (4 * encoder_parameters(teacher) if teacher else 0)
    acts = config.num_hidden_layers * layer_activation_bytes(config, batch, seq_len)
    logits = 0.0
    if mlm:
        masked = MASKED_SHARE * batch * seq_len
        logits = 3 * 4 * masked * config.vocab_size * (2 if teacher else 1)
    return {"state": state, "activations": acts, "logits": logits, "total": state + acts + logits}
