"""Fine-tuning for sentence classification (chapter 7), optionally distilling a teacher's soft labels.

Batches are built once from token ids: grouped by length (examples of similar length share a batch,
so little compute goes to padding: about half the time of padding everything to the maximum) and
each carries `index`, the examples' positions, so that a teacher's logits, computed once before
training, can be looked up for any batch order.
"""
from __future__ import annotations

import copy
import time
from collections import Counter
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .bert import BertForSequenceClassification, BertModel
from .distill import check_temperature, classification_kd_loss
from .training import Optimizer, seed_everything, to_device

Batch = Dict[str, Tensor]
History = Dict[str, List[float]]


def encode_texts(texts: Sequence[str], tokenizer, max_length: int = 64) -> List[List[int]]:
    """Token ids with [CLS] ... [SEP], truncated to `max_length`, one list per text (no padding)."""
    if isinstance(texts, str):
        raise TypeError("encode_texts expects a list of texts, got a single string")
    if len(texts) == 0:
        raise ValueError("encode_texts got an empty data set")
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


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
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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
            b["labels"] = torch.as_tensor([int(labels[i]) for i in idx])
        batches.append(b)
    return batches


def classifier_from_pretrained(bert: Union[BertModel, "DistilBertModel"], num_labels: int = 2,
                               pooling: str = "mean", seed: int = 0
                               ) -> Union[BertForSequenceClassification, "DistilBertForSequenceClassification"]:
    """A classifier whose encoder is a copy of the pretrained `bert` and whose head is freshly
    initialised (seeded): a BertForSequenceClassification for a BertModel, a
    DistilBertForSequenceClassification for a DistilBertModel (e.g. a distilled MLM student's
    `.distilbert`)."""
    from .distilbert import DistilBertForSequenceClassification, DistilBertModel

    if isinstance(bert, BertModel):
        cls, body = BertForSequenceClassification, "bert"
    elif isinstance(bert, DistilBertModel):
        cls, body = DistilBertForSequenceClassification, "distilbert"
    else:
        raise TypeError(f"expected a bertbook BertModel or DistilBertModel, got {type(bert).__name__}")
    config = copy.deepcopy(bert.config)
    config.num_labels, config.classifier_pooling = num_labels, pooling
    config.__post_init__()  # re-validate the changed fields
    torch.manual_seed(seed)
    model = cls(config)
    own = getattr(model, body).state_dict()
    src = {k: v for k, v in bert.state_dict().items() if k in own}
    getattr(model, body).load_state_dict({**own, **src})  # a pooler-less encoder keeps the fresh pooler
    return model


def _forward(model: nn.Module, batch: Mapping[str, Tensor]):
    # Single-sentence input: BERT's token types default to 0, DistilBERT has none.
    return model(batch["input_ids"], batch["attention_mask"])


@torch.no_grad()
def predict_logits(model: nn.Module, batches: Sequence[Mapping[str, Tensor]],
                   device: Optional[Union[str, torch.device]] = None) -> Tensor:
    """(N, C) logits in example order (by each batch's `index`), in eval mode."""
    device = next(model.parameters()).device if device is None else torch.device(device)
    model.to(device).eval()
    rows, idx = [], []
    for b in batches:
        b = to_device(b, device)
        rows.append(_forward(model, b).logits.float().cpu())
        idx.append(b["index"].cpu())
    if not rows:
        raise ValueError("predict_logits got no batches")
    logits, idx = torch.cat(rows), torch.cat(idx)
    out = torch.empty_like(logits)
    out[idx] = logits
    return out


def evaluate_classifier(model: nn.Module, batches: Sequence[Mapping[str, Tensor]],
                        device: Optional[Union[str, torch.device]] = None) -> float:
    """Accuracy over the batches' `labels`."""
    correct = total = 0
    logits = predict_logits(model, batches, device)
    for b in batches:
        correct += int((logits[b["index"]].argmax(-1) == b["labels"]).sum())
        total += b["labels"].numel()
    return correct / total


def finetune(
    model: nn.Module,
    train_batches: Sequence[Batch],
    epochs: int = 1,
    lr: float = 1e-4,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    teacher: Optional[nn.Module] = None,
    teacher_logits: Optional[Tensor] = None,
    alpha: float = 0.5,
    temperature: float = 2.0,
    log_every: int = 10,
    device: Optional[Union[str, torch.device]] = None,
    amp: Optional[bool] = None,
    seed: int = 0,
    progress: bool = True,
) -> History:
    """Fine-tune a sequence classifier on `train_batches` (from `make_batches`, with labels) for
    `epochs` passes, batch order reshuffled each epoch.

    Without a teacher the loss is cross-entropy. With `teacher` (a classifier, run once over the
    training batches before training) or precomputed `teacher_logits` (N, C) it is
    α·CE + (1 − α)·T²·KL(teacher ‖ student). Returns the history: `step`, `loss`, `accuracy`
    (running, on the training batches), `lr`, and `seconds`.
    """
    if len(train_batches) == 0:
        raise ValueError("finetune got an empty data set: no training batches")
    if "labels" not in train_batches[0]:
        raise ValueError("finetune needs batches with labels (make_batches(..., labels=...))")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    check_temperature(temperature)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    seed_everything(seed)
    steps = epochs * len(train_batches)
    opt = Optimizer(model, steps, lr, warmup, weight_decay, max_grad_norm, device, amp)
    if teacher is not None and teacher_logits is None:
        if teacher.config.num_labels != model.config.num_labels:
            raise ValueError(f"teacher has {teacher.config.num_labels} labels, student "
                             f"{model.config.num_labels}")
        teacher_logits = predict_logits(teacher, train_batches, opt.device)  # once, not every epoch
    if teacher_logits is not None:
        n = 1 + max(int(b["index"].max()) for b in train_batches)
        if teacher_logits.shape[0] < n or teacher_logits.shape[-1] != model.config.num_labels:
            raise ValueError(f"teacher_logits {tuple(teacher_logits.shape)} do not cover {n} examples "
                             f"x {model.config.num_labels} labels")
        teacher_logits = teacher_logits.to(opt.device)
    model.to(opt.device).train()
    g = torch.Generator().manual_seed(seed)
    hist: History = {k: [] for k in ("step", "loss", "accuracy", "lr")}
    window: Dict[str, float] = Counter()
    step, t0 = 0, time.perf_counter()
    from tqdm.auto import tqdm
    with tqdm(total=steps, desc="finetune", disable=not progress, leave=False) as bar:
        for _ in range(epochs):
            for i in torch.randperm(len(train_batches), generator=g).tolist():
                batch = to_device(train_batches[i], opt.device)
                with opt.autocast():
                    logits = _forward(model, batch).logits
                    if teacher_logits is None:
                        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
                    else:
                        loss = classification_kd_loss(logits.float(), teacher_logits[batch["index"]],
                                                      batch["labels"], alpha, temperature)
                opt.step(loss)
                step += 1
                window["loss"] += loss.item()
                window["correct"] += int((logits.argmax(-1) == batch["labels"]).sum())
                window["seen"] += batch["labels"].numel()
                window["n"] += 1
                if step % log_every == 0 or step == steps:
                    hist["step"].append(step)
                    hist["loss"].append(window["loss"] / window["n"])
                    hist["accuracy"].append(window["correct"] / window["seen"])
                    hist["lr"].append(opt.lr)
                    window = Counter()
                bar.update(1)
    hist["seconds"] = [time.perf_counter() - t0]
    model.eval()
    return hist
