"""Classification batches (chapter 7): token ids encoded once, grouped by length and padded.

Examples of similar length share a batch, so little compute goes to padding (about half the time of
padding everything to the maximum). Each batch carries `index`, the examples' positions, so that
values computed once per example (a teacher's logits) can be looked up for any batch order.
"""
from __future__ import annotations

import operator
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

Batch = Dict[str, Tensor]


def encode_texts(texts: Sequence[str], tokenizer, max_length: int = 64) -> List[List[int]]:
    """Token ids with [CLS] ... [SEP], truncated to `max_length`, one list per text (no padding)."""
    if isinstance(texts, str):
        raise TypeError("encode_texts expects a list of texts, got a single string")
    if len(texts) == 0:
        raise ValueError("encode_texts got an empty data set")
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def _class_index(label, i: int) -> int:
    """A label as a class index: an int (a NumPy int too), not 1.0 or "1", which int() would take."""
    try:
        if isinstance(label, bool):
            raise TypeError
        return operator.index(label)
    except TypeError:
        raise TypeError(f"labels must be class indices (ints), got {label!r} for example {i}") from None


def make_batches(input_ids: Sequence[Sequence[int]], labels: Optional[Sequence[int]] = None,
                 batch_size: int = 32, pad_token_id: int = 0, group_by_length: bool = True,
                 shuffle: bool = True, seed: int = 0) -> List[Batch]:
    """Padded batches: `input_ids`, `attention_mask` (B, L) with L the batch's longest example,
    `labels` (B,) if given, and `index` (B,): positions in `input_ids`.

    group_by_length: sort shuffled chunks of 50 batches by length, cut them into batches, then
    shuffle the batches (the "length-grouped sampler" of `transformers`).
    """
    n = len(input_ids)
    if n == 0:
        raise ValueError("make_batches got an empty data set")
    if labels is not None and len(labels) != n:
        raise ValueError(f"{n} examples but {len(labels)} labels")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
    if group_by_length:
        chunk = 50 * batch_size
        order = [i for c in range(0, n, chunk)
                 for i in sorted(order[c:c + chunk], key=lambda i: len(input_ids[i]))]
    groups = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if shuffle and group_by_length:  # otherwise every epoch would go from short to long
        groups = [groups[i] for i in torch.randperm(len(groups), generator=g).tolist()]
    batches = []
    for idx in groups:
        L = max(len(input_ids[i]) for i in idx)
        ids = torch.full((len(idx), L), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), L), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, :len(input_ids[i])] = torch.as_tensor(input_ids[i])
            mask[r, :len(input_ids[i])] = 1
        b = {"input_ids": ids, "attention_mask": mask, "index": torch.tensor(idx)}
        if labels is not None:
            b["labels"] = torch.as_tensor([_class_index(labels[i], i) for i in idx])
        batches.append(b)
    return batches
