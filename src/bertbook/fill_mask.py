"""What an MLM model really predicts: its top tokens at each `[MASK]` of a sentence, and the same
sentences side by side for several models (chapters 5, 6 and 9).

Accuracy over thousands of positions can hide a model that always answers "the"; a few sentences
with the predictions in a row cannot.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch
from torch import nn

from .device import evaluating

Prediction = List[Tuple[str, float]]  # (token, probability), best first


@torch.no_grad()
def fill_mask(model: nn.Module, tokenizer: Any, text: str, k: int = 5) -> List[Prediction]:
    """The `k` most likely tokens and their probabilities at each `[MASK]` of `text`, in order.

    `model`: a bertbook BertForPreTraining or DistilBertForMaskedLM; `text` is tokenized by
    `tokenizer` as one segment, `[CLS] text [SEP]`, and must hold at least one `[MASK]`."""
    mask = tokenizer.mask_token
    if not isinstance(text, str):
        raise TypeError(f"text must be a string with a {mask} in it, got {type(text).__name__}")
    vocab = model.config.vocab_size
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab:
        raise ValueError(f"k must be an int from 1 to the vocabulary size {vocab}, got {k!r}")
    if mask not in text:
        raise ValueError(f"fill_mask needs a {mask} in the text, got {text!r}")
    max_len = model.config.max_position_embeddings
    enc = tokenizer(text, truncation=True, max_length=max_len, return_tensors="pt")
    ids = enc["input_ids"]  # (1, L)
    at = (ids[0] == tokenizer.mask_token_id).nonzero().flatten()
    if not len(at):
        raise ValueError(f"the {mask} of {text!r} lies beyond the model's {max_len} positions")
    device = next(model.parameters()).device
    with evaluating([model]):  # the caller's model keeps its mode
        logits = model(ids.to(device), enc["attention_mask"].to(device)).logits[0, at]  # (masks, V)
    probs = logits.float().softmax(-1)
    top = probs.topk(k, dim=-1)
    return [[(tokenizer.convert_ids_to_tokens(int(i)), float(p)) for p, i in zip(ps, ix)]
            for ps, ix in zip(top.values, top.indices)]


def side_by_side(models: Mapping[str, Tuple[nn.Module, Any]], sentences: Sequence[str],
                 k: int = 3) -> List[Dict[str, str]]:
    """One row per sentence (its first `[MASK]`), one column per model: its top `k` tokens with
    their probabilities. `models` maps a name to (model, tokenizer)."""
    rows = []
    for text in sentences:
        row = {"sentence": text}
        for name, (model, tok) in models.items():
            shown = text.replace("[MASK]", tok.mask_token)
            row[name] = ", ".join(f"{t} {p:.2f}" for t, p in fill_mask(model, tok, shown, k)[0])
        rows.append(row)
    return rows


def format_table(rows: Sequence[Mapping[str, str]]) -> str:
    """`side_by_side`'s rows as a plain-text table, one block per sentence."""
    lines = []
    for row in rows:
        lines.append(row["sentence"])
        width = max(len(name) for name in row if name != "sentence")
        lines += [f"    {name:<{width}}  {preds}" for name, preds in row.items() if name != "sentence"]
    return "\n".join(lines)
