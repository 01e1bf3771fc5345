"""What every training loop of the book shares: AdamW with warm-up and linear decay, mixed
precision (bf16 autocast, or fp16 with a gradient scaler on GPUs without bf16), gradient
clipping, seeding, the batches cycled, and the running metrics with their progress bar.

`TrainStep` bundles one optimiser step's machinery so that `pretrain`, `distill` and `finetune`
each read as "compute the loss, call `opt.step(loss)`"; `RunningMetrics` is what they log.
"""
from __future__ import annotations

import itertools
import random
from collections import Counter
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from . import distributed as dist
from .device import autocast, autocast_dtype, get_device, needs_grad_scaler

History = Dict[str, List[float]]  # what a training loop returns: one list per metric


def seed_everything(seed: int) -> None:
    """Seed python and torch (CPU and CUDA) so that runs are reproducible. Two lines of our own
    rather than `transformers.set_seed` (which seeds the same generators, plus NumPy's, which no
    loop here draws from): they let a wrong seed (a float, a bool, a string) fail with a clear message."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    torch.manual_seed(seed)


def cycle(batches: Iterable[Any], min_rows: int = 1) -> Iterator[Any]:
    """Iterate over `batches` again and again (a DataLoader reshuffles and re-masks each pass).
    With `min_rows` > 1 (`distributed.parts`: the processes and micro-steps a batch is split
    into) a batch dict with fewer rows, such as a short last batch, is skipped."""
    empty = True
    for _ in itertools.count():
        for b in batches:
            if min_rows > 1 and dist.batch_rows(b) < min_rows:
                continue
            empty = False
            yield b
        if empty:
            if min_rows > 1:
                raise ValueError(f"no batch of the training data has the {min_rows} rows that world size x "
                                 "grad_accum needs: use a larger batch_size")
            raise ValueError("the training data is empty: no batches to train on")


def param_groups(model: nn.Module, weight_decay: float):
    """Weight decay on matrices only: biases and LayerNorm weights (1-D) are not decayed, as in BERT."""
    seen, decay, no_decay = set(), [], []
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class TrainStep:
    """AdamW + `get_linear_schedule_with_warmup` + clipping + (bf16 | fp16 + GradScaler) autocast.

    Not just an optimiser: one training step's whole machinery. Use `with opt.autocast(): loss = ...`
    then `opt.step(loss)`; with gradient accumulation, `opt.backward(loss)` for each micro-batch,
    then `opt.update()`.
    """

    def __init__(self, model: nn.Module, steps: int, lr: float, warmup: float = 0.1,
                 weight_decay: float = 0.01, max_grad_norm: Optional[float] = 1.0,
                 device: Optional[Union[str, torch.device]] = None, amp: Optional[bool] = None):
        from transformers import get_linear_schedule_with_warmup

        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {warmup}")
        self.model, self.max_grad_norm = model, max_grad_norm
        self.device = get_device(None if device is None else str(device))
        # amp=None: on where it pays (CUDA), off on the CPU; see bertbook.device.
        self.amp = autocast_dtype(self.device) is not None if amp is None else bool(amp)
        self.optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr,
                                           betas=(0.9, 0.999), eps=1e-6)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, int(warmup * steps), steps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and needs_grad_scaler(self.device))

    def autocast(self):
        return autocast(self.device, enabled=self.amp)

    def step(self, loss: Tensor) -> float:
        """Backward, unscale, clip, step, schedule; returns the gradient norm before clipping."""
        self.backward(loss)
        return self.update()

    def backward(self, loss: Tensor) -> None:
        """Accumulate the gradients of `loss` (one micro-batch of a gradient accumulation)."""
        if not torch.isfinite(loss):
            step = self.scheduler.last_epoch + 1  # the optimiser step this loss is for
            raise FloatingPointError(f"the loss is {loss.item()} at step {step}: lower the learning rate or "
                                     "check the data")
        self.scaler.scale(loss).backward()

    def update(self) -> float:
        """Unscale, clip, step, schedule, zero the gradients; returns the norm before clipping."""
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        if self.max_grad_norm:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        else:
            norm = torch.zeros(())
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]


class RunningMetrics:
    """The sums a training loop adds up between two logging steps, and its progress bar.

    `add(name=value, ...)` after each micro-batch; `end_step(step)` after each optimiser step
    returns None, or, every `log_every` steps and at the last, the window's `sums` added over the
    processes (under torchrun) plus `n`, the steps in the window, and starts a new window. Use it
    as a context manager (the bar closes at the end)."""

    def __init__(self, steps: int, sums: Sequence[str], log_every: int = 10, desc: str = "train",
                 progress: bool = True):
        from tqdm.auto import tqdm

        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ValueError(f"log_every must be a positive int, got {log_every!r}")
        self.steps, self.sums, self.log_every = steps, tuple(sums), log_every
        self.window: Dict[str, float] = Counter()
        self.bar = tqdm(total=steps, desc=desc, disable=not (progress and dist.is_main()), leave=False)

    def add(self, **values: float) -> None:
        for k, v in values.items():
            self.window[k] += v

    def end_step(self, step: int) -> Optional[Dict[str, float]]:
        self.window["n"] += 1
        self.bar.update(1)
        if step % self.log_every and step != self.steps:
            return None
        total = dict(zip(self.sums, dist.all_reduce_sum([self.window[k] for k in self.sums])))
        total["n"] = self.window["n"]
        self.window = Counter()
        return total

    def __enter__(self) -> "RunningMetrics":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


def maybe_compile(model: nn.Module, compile: bool) -> nn.Module:
    """`torch.compile(model)` when asked (GPU runs); the returned module shares the weights."""
    if not compile:
        return model
    # dynamic=True: the number of masked positions changes from batch to batch.
    return torch.compile(model, dynamic=True)
