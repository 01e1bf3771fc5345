"""What a masked-language model's predictions are worth (chapters 4 to 6): accuracy and loss at
every kind of masked position, and the baseline of always guessing the most frequent token.

`[MASK]` positions are the honest measure: at the 10% of selected positions left unchanged a model
can copy its input. Batches are those of `bertbook.masking.PretrainingCollator`: `labels` hold
the original id where a position was selected and -100 (`IGNORE_INDEX`) elsewhere.
"""
from __future__ import annotations

import inspect
from collections import Counter
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .device import evaluating, to_device
from .masking import IGNORE_INDEX

Batch = Mapping[str, Tensor]


def check_pretraining_batch(batch: Batch) -> None:
    """A pretraining batch has `input_ids`, `attention_mask` and `labels`: a clear error otherwise."""
    missing = [k for k in ("input_ids", "attention_mask", "labels") if k not in batch]
    if missing:
        raise ValueError(f"pretraining batch is missing keys {missing}; got {sorted(batch)}")


KINDS = ("mask", "random", "unchanged")


def position_kinds(batch: Batch, mask_token_id: int) -> Dict[str, Tensor]:
    """Split the labelled positions of a batch by what the input shows there: `mask` ([MASK]),
    `random` (another token) and `unchanged` (the answer itself). Each value is a (N,) bool
    tensor over the N labelled positions, in the order of `labels[labels != -100]`. A random
    replacement that happened to draw the original token shows the answer, so it counts as
    unchanged: that is what the model sees."""
    selected = batch["labels"] != IGNORE_INDEX
    shown, answer = batch["input_ids"][selected], batch["labels"][selected]
    is_mask = shown == mask_token_id
    same = shown == answer
    return {"mask": is_mask, "random": ~is_mask & ~same, "unchanged": ~is_mask & same}


@torch.no_grad()
def evaluate_pretraining(model: nn.Module, batches: Iterable[Batch],
                         device: Optional[Union[str, torch.device]] = None,
                         mask_token_id: Optional[int] = None) -> Dict[str, float]:
    """Held-out `mlm_accuracy` and `mlm_loss` over all selected positions, and for a model with an
    NSP head `nsp_accuracy`, `nsp_loss`. With `mask_token_id` also, separately for the positions
    that show `[MASK]`, a random token or the unchanged token (`position_kinds`):
    `mask_accuracy`, `mask_loss`, `random_accuracy`, `random_loss`, `unchanged_accuracy`,
    `unchanged_loss` and the counts `mask_n`, `random_n`, `unchanged_n`. The `[MASK]` positions are
    the honest measure: at the unchanged 10% a model can copy its input.

    Works for DistilBertForMaskedLM too (batch keys it does not take, token types and NSP labels,
    are dropped). Use batches masked once with a fixed seed, so that every evaluation sees the
    same masks.

    Runs in eval mode on `device` (default: the model's); the batches are moved there, and
    afterwards the caller's model is back on its device, in its mode."""
    device = next(model.parameters()).device if device is None else torch.device(device)
    with evaluating([model], device):
        return _evaluate_pretraining(model, batches, device, mask_token_id)


def _evaluate_pretraining(model: nn.Module, batches: Iterable[Batch], device: torch.device,
                          mask_token_id: Optional[int]) -> Dict[str, float]:
    accepted = set(inspect.signature(model.forward).parameters)
    sums: Dict[str, float] = Counter()
    for batch in batches:
        check_pretraining_batch(batch)
        batch = to_device(batch, device)
        out = model(**{k: v for k, v in batch.items() if k in accepted})
        labels = batch["labels"][batch["labels"] != IGNORE_INDEX]
        correct = out.logits.argmax(-1) == labels  # (N,)
        losses = F.cross_entropy(out.logits.float(), labels, reduction="none")  # (N,)
        sums["mlm_correct"] += correct.sum().item()
        sums["mlm_loss"] += losses.sum().item()
        sums["mlm_n"] += labels.numel()
        if mask_token_id is not None:
            for kind, where in position_kinds(batch, mask_token_id).items():
                sums[f"{kind}_correct"] += correct[where].sum().item()
                sums[f"{kind}_loss"] += losses[where].sum().item()
                sums[f"{kind}_n"] += int(where.sum())
        if out.nsp_loss is not None:
            nsl = batch["next_sentence_label"]
            sums["nsp_correct"] += (out.seq_relationship_logits.argmax(-1) == nsl).sum().item()
            sums["nsp_loss"] += out.nsp_loss.item() * nsl.numel()
            sums["nsp_n"] += nsl.numel()
    if not sums["mlm_n"]:
        raise ValueError("evaluate_pretraining got no masked positions (empty data set?)")
    res = {"mlm_accuracy": sums["mlm_correct"] / sums["mlm_n"], "mlm_loss": sums["mlm_loss"] / sums["mlm_n"]}
    if mask_token_id is not None:
        for kind in KINDS:
            n = sums[f"{kind}_n"]
            res[f"{kind}_n"] = int(n)
            res[f"{kind}_accuracy"] = sums[f"{kind}_correct"] / n if n else float("nan")
            res[f"{kind}_loss"] = sums[f"{kind}_loss"] / n if n else float("nan")
    if sums["nsp_n"]:
        res.update(nsp_accuracy=sums["nsp_correct"] / sums["nsp_n"], nsp_loss=sums["nsp_loss"] / sums["nsp_n"])
    return res


def most_frequent_token(train_token_ids: Iterable[Sequence[int]], special_ids: Sequence[int] = ()) -> int:
    """The most frequent non-special token of the training text."""
    counts: Counter = Counter()
    for ids in train_token_ids:
        counts.update(ids)
    for s in special_ids:
        counts.pop(s, None)
    if not counts:
        raise ValueError("unigram_baseline got no training tokens (empty data set?)")
    return counts.most_common(1)[0][0]


def constant_guess_accuracy(token: int, eval_batches: Iterable[Batch],
                            mask_token_id: Optional[int] = None) -> Dict[str, float]:
    """Accuracy of always guessing `token`: over all selected positions (`all`) and, with
    `mask_token_id`, at each kind of position of `position_kinds` (`mask`, `random`, `unchanged`)."""
    hits: Dict[str, int] = Counter()
    for batch in eval_batches:
        labels = batch["labels"][batch["labels"] != IGNORE_INDEX]
        right = labels == token
        hits["all_hit"] += int(right.sum())
        hits["all_n"] += labels.numel()
        if mask_token_id is not None:
            for kind, where in position_kinds(batch, mask_token_id).items():
                hits[f"{kind}_hit"] += int(right[where].sum())
                hits[f"{kind}_n"] += int(where.sum())
    if not hits["all_n"]:
        raise ValueError("unigram_baseline got no masked held-out positions")
    kinds = ("all",) + (KINDS if mask_token_id is not None else ())
    return {k: hits[f"{k}_hit"] / hits[f"{k}_n"] if hits[f"{k}_n"] else float("nan") for k in kinds}


def unigram_baseline(train_token_ids: Iterable[Sequence[int]], eval_batches: Iterable[Batch],
                     special_ids: Sequence[int] = (), mask_token_id: Optional[int] = None
                     ) -> Tuple[int, float]:
    """(token id, accuracy) of always guessing the most frequent training token: the plateau a
    model reaches by learning only token frequencies. The accuracy is over all selected held-out
    positions, or with `mask_token_id` over the `[MASK]` positions only (the honest baseline for
    the `mask_accuracy` of `evaluate_pretraining`)."""
    eval_batches = list(eval_batches)
    top = most_frequent_token(train_token_ids, special_ids)
    acc = constant_guess_accuracy(top, eval_batches, mask_token_id)
    return top, acc["all" if mask_token_id is None else "mask"]
