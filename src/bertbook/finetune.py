"""Fine-tuning for sentence classification (chapter 7), optionally distilling a teacher's soft labels.

The batches are `bertbook.batching`'s (importable from here too): built once, grouped by length,
each with `index`, the examples' positions, so that a teacher's logits, computed once before
training, can be looked up for any batch order.

A *transfer set* is a second list of batches without labels: text the teacher labels with its soft
labels (Hinton et al., 2015; Tang et al., 2019). `finetune` mixes both kinds in one shuffled stream
and gives each batch the loss of its kind (`batch_loss`).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .batching import Batch, encode_texts, make_batches  # noqa: F401  (chapter 7 imports them from here)
from .bert import BertForSequenceClassification, BertModel, check_class_labels
from .distill import check_temperature, classification_kd_loss, soft_target_loss
from . import distributed as dist
from .device import evaluating, to_device
from .training import History, RunningMetrics, TrainStep, seed_everything

def classifier_from_pretrained(bert: Union[BertModel, "DistilBertModel"], num_labels: int = 2,
                               pooling: str = "cls", seed: int = 0
                               ) -> Union[BertForSequenceClassification, "DistilBertForSequenceClassification"]:
    """A classifier whose encoder is a copy of the pretrained `bert` and whose head is freshly
    initialised (seeded): a BertForSequenceClassification for a BertModel, a
    DistilBertForSequenceClassification for a DistilBertModel (e.g. a distilled MLM student's
    `.distilbert`). `pooling`: "cls" (the [CLS] vector, BertConfig's default and transformers'
    classifiers') or "mean" (over the non-padding tokens)."""
    from .distilbert import DistilBertForSequenceClassification, DistilBertModel

    if isinstance(bert, BertModel):
        cls, body = BertForSequenceClassification, "bert"
    elif isinstance(bert, DistilBertModel):
        cls, body = DistilBertForSequenceClassification, "distilbert"
    else:
        raise TypeError(f"expected a bertbook BertModel or DistilBertModel, got {type(bert).__name__}")
    config = dataclasses.replace(bert.config, num_labels=num_labels, classifier_pooling=pooling)  # validated
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
    """(N, C) logits on the CPU in example order (by each batch's `index`), run in eval mode on
    `device` (default: the model's). The batches may be anywhere: they are moved to that device.
    Afterwards the caller's model is back on its device, in its mode."""
    device = next(model.parameters()).device if device is None else torch.device(device)
    rows, idx = [], []
    with evaluating([model], device):
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
    """Accuracy over the batches' `labels` (by `predict_logits`: inputs moved to the model's
    device, the model left as it was)."""
    correct = total = 0
    logits = predict_logits(model, batches, device)
    for b in batches:
        correct += int((logits[b["index"]].argmax(-1) == b["labels"]).sum())
        total += b["labels"].numel()
    return correct / total


def batch_loss(logits: Tensor, batch: Mapping[str, Tensor], teacher_logits: Optional[Tensor] = None,
               alpha: float = 0.1, temperature: float = 2.0, pseudo_labels: bool = False) -> Tensor:
    """The loss of one batch, by what the batch carries.

    A labelled batch (`labels` (B,)): cross-entropy without a teacher, else α·CE + (1 − α)·T²·KL.
    An unlabelled batch (a transfer batch: no `labels`): the teacher's soft labels alone,
    T²·KL(teacher ‖ student), since there is no label to share the weight with; with
    `pseudo_labels`, cross-entropy on the teacher's hard labels (its argmax), as if they were labels.
    logits, teacher_logits: (B, C), the teacher's rows for this batch's examples. Returns a scalar.
    """
    if "labels" in batch:
        if teacher_logits is None:
            check_class_labels(batch["labels"], logits.shape[-1])
            return torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
        return classification_kd_loss(logits.float(), teacher_logits, batch["labels"], alpha, temperature)
    if teacher_logits is None:
        raise ValueError("a batch without labels needs the teacher's logits: it has nothing else to learn from")
    if pseudo_labels:
        return torch.nn.functional.cross_entropy(logits.float(), teacher_logits.argmax(-1))
    return soft_target_loss(logits.float(), teacher_logits, temperature)


def _check_logits(logits: Tensor, batches: Sequence[Batch], num_labels: int, what: str) -> None:
    n = 1 + max(int(b["index"].max()) for b in batches)
    if logits.dim() != 2 or logits.shape[0] < n or logits.shape[-1] != num_labels:
        raise ValueError(f"{what} {tuple(logits.shape)} do not cover {n} examples x {num_labels} labels")
    bad = (~torch.isfinite(logits)).any(-1).nonzero().flatten()
    if len(bad):
        raise FloatingPointError(f"{what} hold NaN or inf for {len(bad)} examples (first: {bad[:5].tolist()}): "
                                 "every loss they enter would be NaN; check the teacher")


def finetune(
    model: nn.Module,
    train_batches: Sequence[Batch],
    epochs: int = 2,
    lr: float = 1e-4,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    teacher: Optional[nn.Module] = None,
    teacher_logits: Optional[Tensor] = None,
    alpha: float = 0.1,
    temperature: float = 2.0,
    log_every: int = 10,
    device: Optional[Union[str, torch.device]] = None,
    amp: Optional[bool] = None,
    seed: int = 0,
    progress: bool = True,
    transfer_batches: Sequence[Batch] = (),
    transfer_logits: Optional[Tensor] = None,
    pseudo_labels: bool = False,
    grad_accum: int = 1,
) -> History:
    """Fine-tune a sequence classifier on `train_batches` (from `make_batches`, with labels) for
    `epochs` passes, batch order reshuffled each epoch.

    Without a teacher the loss is cross-entropy. With `teacher` (a classifier, run once over the
    training batches before training) or precomputed `teacher_logits` (N, C) it is
    α·CE + (1 − α)·T²·KL(teacher ‖ student). The defaults are the book's (`configs.FinetuneSettings`):
    2 epochs, lr 1e-4, α = 0.1, T = 2.

    `transfer_batches` (from `make_batches` without labels; their own `index` into
    `transfer_logits` (M, C), or the teacher run once over them) add unlabelled text: each epoch is
    one stream of the labelled and the transfer batches shuffled together (seeded by `seed`), each
    batch with its own loss (`batch_loss`): T²·KL alone on a transfer batch, or with
    `pseudo_labels` cross-entropy on the teacher's argmax. Without transfer batches the stream is
    the labelled batches alone, in an order set by `seed` and their number only.

    Returns the history: `step`, `loss` (all batches), `accuracy` (running, on the labelled
    batches; NaN for a logging window without one), `lr`, and `seconds`. `grad_accum` and
    `torchrun`: as in `bertbook.pretrain.pretrain` (each rank takes its rows of every batch; a batch
    with fewer rows than processes x `grad_accum` is left out).
    """
    if len(train_batches) == 0:
        raise ValueError("finetune got an empty data set: no training batches")
    if "labels" not in train_batches[0]:
        raise ValueError("finetune needs batches with labels (make_batches(..., labels=...))")
    if any("labels" in b for b in transfer_batches):
        raise ValueError("transfer batches must not carry labels: the transfer set is unlabelled "
                         "(make_batches(ids) without labels)")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    check_temperature(temperature)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if transfer_batches and teacher is None and (teacher_logits is None or transfer_logits is None):
        raise ValueError("transfer batches need a teacher (or teacher_logits and transfer_logits): "
                         "without labels the teacher's are all they have")
    dist.check_grad_accum(grad_accum)
    split = dist.parts(grad_accum)
    if split > 1:  # a batch too short to give every rank and micro-step a row is left out
        train_batches = [b for b in train_batches if dist.batch_rows(b) >= split]
        transfer_batches = [b for b in transfer_batches if dist.batch_rows(b) >= split]
        if not train_batches:
            raise ValueError(f"no training batch has the {split} rows that world size x grad_accum needs: "
                             "use a larger batch_size")
    seed_everything(seed + dist.rank())  # dropout differs per rank; the batch order has its own generator
    n_labelled, n_transfer = len(train_batches), len(transfer_batches)
    steps = epochs * (n_labelled + n_transfer)
    opt = TrainStep(model, steps, lr, warmup, weight_decay, max_grad_norm, device, amp)
    if teacher is not None and teacher.config.num_labels != model.config.num_labels:
        raise ValueError(f"teacher has {teacher.config.num_labels} labels, student {model.config.num_labels}")
    if teacher is not None and teacher_logits is None:
        teacher_logits = predict_logits(teacher, train_batches, opt.device)  # once, not every epoch
    if teacher is not None and n_transfer and transfer_logits is None:
        transfer_logits = predict_logits(teacher, transfer_batches, opt.device)
    if teacher_logits is not None:
        _check_logits(teacher_logits, train_batches, model.config.num_labels, "teacher_logits")
        teacher_logits = teacher_logits.to(opt.device)
    if n_transfer:
        _check_logits(transfer_logits, transfer_batches, model.config.num_labels, "transfer_logits")
        transfer_logits = transfer_logits.to(opt.device)
    model.to(opt.device).train()
    run = dist.wrap(model, opt.device)
    world = dist.world_size()
    g = torch.Generator().manual_seed(seed)
    hist: History = {k: [] for k in ("step", "loss", "accuracy", "lr")}
    step, t0 = 0, time.perf_counter()
    with RunningMetrics(steps, ("loss", "correct", "seen"), log_every, "finetune", progress) as metrics:
        for _ in range(epochs):
            # One stream: positions < n_labelled are labelled batches, the rest transfer batches.
            for i in torch.randperm(n_labelled + n_transfer, generator=g).tolist():
                if i < n_labelled:
                    batch, rows = train_batches[i], teacher_logits
                else:
                    batch, rows = transfer_batches[i - n_labelled], transfer_logits
                n_rows = torch.tensor(batch["input_ids"].shape[0])
                micros = dist.micro_batches(batch, grad_accum)
                for a, micro in enumerate(micros):
                    micro = to_device(micro, opt.device)
                    # this micro-batch's share of the batch (1.0 for one process: the loss unchanged)
                    w = dist.share(torch.tensor(micro["input_ids"].shape[0]), n_rows).to(opt.device)
                    with dist.no_sync(run, a < len(micros) - 1):
                        with opt.autocast():
                            logits = _forward(run, micro).logits
                            loss = batch_loss(logits, micro, None if rows is None else rows[micro["index"]],
                                              alpha, temperature, pseudo_labels) * w
                        opt.backward(loss)
                    metrics.add(loss=loss.item() / world)
                    if "labels" in micro:
                        metrics.add(correct=int((logits.argmax(-1) == micro["labels"]).sum()),
                                    seen=micro["labels"].numel())
                opt.update()
                step += 1
                total = metrics.end_step(step)
                if total is not None:
                    hist["step"].append(step)
                    hist["loss"].append(total["loss"] / total["n"])
                    hist["accuracy"].append(total["correct"] / total["seen"] if total["seen"] else float("nan"))
                    hist["lr"].append(opt.lr)
    hist["seconds"] = [time.perf_counter() - t0]
    model.eval()
    return hist
