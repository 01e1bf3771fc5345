"""Data-parallel training under `torchrun` (appendix): the same loops, several processes.

`python -m bertbook ...` runs one process, as always. `torchrun --nproc_per_node=N -m bertbook ...`
starts N; each calls `init()`, which reads RANK / WORLD_SIZE / LOCAL_RANK from the environment and
joins the process group (`gloo` on the CPU, `nccl` on CUDA). Then:

* Every rank builds the same global batch (the data pipeline has its own seeded generators) and
  keeps its own rows of it (`shard`), so a setting's `batch_size` is the global batch whatever the
  number of processes, and the cache keys do not depend on it.
* Each rank's loss is weighted by its share of the global batch (`share`): DDP averages the
  gradients over the ranks, so the averaged gradient is the gradient of the global batch's loss,
  the same as one process computes (up to float rounding; dropout draws differ per rank).
* Logging, progress bars, evaluation and cache writes happen on rank 0 only (`is_main`).
* A batch with fewer rows than world size x gradient accumulation (`parts`), such as the short
  last batch of an epoch, cannot give every rank and micro-step a row: the loops skip it. With one
  process and no accumulation every batch is used.

Outside `torchrun` every function here is a no-op: rank 0 of a world of 1.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from typing import Any, Dict, Iterator, List, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Rank 0, the process that logs, evaluates and writes the cache."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init(timeout_minutes: float = 60.0) -> bool:
    """Join the process group that `torchrun` describes in the environment; True if distributed.

    `gloo` on the CPU, `nccl` on CUDA (each process on the GPU of its LOCAL_RANK). Idempotent;
    without torchrun's variables it does nothing and returns False."""
    if is_initialized():
        return True
    if not launched_by_torchrun():
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    else:
        backend = "gloo"
    # A long timeout: rank 0 evaluates and writes checkpoints while the others wait at a barrier.
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return True


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(timeout_minutes: float = 60.0) -> Iterator[bool]:
    """`init()` for the block (yields whether distributed), then leave the group.

    On success every rank meets at a barrier before the group is destroyed: a rank that finished
    first must not tear down gloo's connections while another still uses them (seen as a SIGABRT
    at exit, "terminate called without an active exception"). On an error the rank leaves at
    once, without the barrier, so that torchrun sees it fail and stops the others instead of
    leaving this one waiting for up to the timeout."""
    if is_initialized():  # someone else's group: theirs to leave
        yield True
        return
    distributed = init(timeout_minutes)
    try:
        yield distributed
    except BaseException:
        shutdown()
        raise
    barrier()
    shutdown()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. trains a tokenizer and caches it), then the others run
    it (and find the cache filled)."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def all_ranks_agree(flag: bool) -> bool:
    """True only if `flag` is true on every rank (e.g. 'the checkpoint is in my cache')."""
    if not is_initialized():
        return flag
    t = torch.tensor([1 if flag else 0], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def all_reduce_sum(values: Sequence[float]) -> List[float]:
    """Sum a few numbers over the ranks (running metrics at a logging step)."""
    if not is_initialized():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.tolist()


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def check_grad_accum(grad_accum: int) -> None:
    """The loops' `grad_accum` must be a positive int (micro-batches per optimiser step)."""
    if isinstance(grad_accum, bool) or not isinstance(grad_accum, int) or grad_accum < 1:
        raise ValueError(f"grad_accum must be a positive int, got {grad_accum!r}")


def rows(batch_size: int, parts: int, index: int) -> slice:
    """The rows of a batch of `batch_size` that part `index` of `parts` takes: contiguous, sizes
    differing by at most one (as `torch.tensor_split`). Raises if a part would be empty."""
    if batch_size < parts:
        raise ValueError(f"a batch of {batch_size} rows cannot be split into {parts} parts "
                         f"(world size x gradient accumulation): use a larger batch_size")
    start = index * (batch_size // parts) + min(index, batch_size % parts)
    return slice(start, start + batch_size // parts + (1 if index < batch_size % parts else 0))


def batch_rows(batch: Mapping[str, Any]) -> int:
    """The number of rows of a batch dict: the first dimension its tensors share."""
    sizes = {v.shape[0] for v in batch.values() if isinstance(v, Tensor) and v.dim() > 0}
    if len(sizes) != 1:
        raise ValueError(f"cannot shard a batch whose tensors disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()


def parts(grad_accum: int = 1) -> int:
    """How many parts a global batch is cut into: world size x gradient accumulation. A batch with
    fewer rows (the short last batch of an epoch) cannot be split, and the loops skip it."""
    return world_size() * grad_accum


def shard(batch: Mapping[str, Any], parts: int, index: int) -> Dict[str, Any]:
    """Part `index` of `parts` of a batch dict: the same rows of every tensor whose first
    dimension is the batch (B, ...) -> (B_part, ...); other values are kept as they are."""
    sl = rows(batch_rows(batch), parts, index)
    return {k: v[sl] if isinstance(v, Tensor) and v.dim() > 0 else v for k, v in batch.items()}


def micro_batches(batch: Mapping[str, Any], grad_accum: int = 1) -> List[Dict[str, Any]]:
    """This rank's micro-batches of a global batch: the global batch is cut into
    world_size x grad_accum parts; micro-step a of rank r takes part a * world_size + r."""
    w, r = world_size(), rank()
    return [shard(batch, w * grad_accum, a * w + r) for a in range(grad_accum)]


def share(local: Tensor, total: Tensor) -> Tensor:
    """The weight of a local loss (a mean over `local` items) in the global mean over `total`
    items, times the world size, because DDP divides the summed gradients by it."""
    return local.to(torch.float32) / total.clamp(min=1).to(torch.float32) * world_size()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel(model) when distributed, else the model itself."""
    if not is_initialized():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # No buffer sync at each forward: our models register no buffers (positions are computed in
    # forward), and rank 0's evaluation runs the bare module while the others wait. (torch >= 2.13
    # names the switch forward_sync_buffers; older releases broadcast_buffers.)
    import inspect
    key = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
           else "broadcast_buffers")
    return DistributedDataParallel(model, device_ids=ids, **{key: False})


def no_sync(model: nn.Module, skip: bool):
    """DDP's `no_sync()` for the micro-steps before the last of a gradient accumulation."""
    if skip and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


def provenance(batch_size: int, grad_accum: int = 1) -> Dict[str, int]:
    """What the info of a checkpoint records about how it was trained."""
    w = world_size()
    return {"world_size": w, "global_batch_size": batch_size, "grad_accum": grad_accum,
            "per_device_batch_size": -(-batch_size // (w * grad_accum))}
