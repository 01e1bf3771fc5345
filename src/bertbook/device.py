"""Where to run: CUDA, Apple's MPS or the CPU, and mixed precision where it pays."""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, ContextManager, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Union

import torch
from torch import Tensor, nn


def get_device(prefer: Optional[str] = None) -> torch.device:
    """`prefer` if given, else cuda, then mps, then cpu."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def to_device(batch: Mapping[str, Any], device: torch.device) -> Dict[str, Any]:
    """Move every tensor of a batch dict to `device`; other values are kept as they are."""
    # non_blocking overlaps the copy with compute only for pinned memory (a DataLoader's
    # pin_memory=True); the book's batches are not pinned, and for them it is an ordinary copy
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _native_bf16(device: Union[str, torch.device] = "cuda") -> bool:
    """Whether a CUDA GPU computes in bf16 natively: compute capability 8.0 or newer (A100, L4, H100).
    A T4 (7.5) only emulates bf16, slowly, and there fp16 with loss scaling is the faster choice."""
    is_bf16_supported = torch.cuda.is_bf16_supported
    # By default torch counts emulation as support (True on a T4); ask without it where torch can.
    if "including_emulation" in inspect.signature(is_bf16_supported).parameters:
        return bool(is_bf16_supported(including_emulation=False))
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    return major >= 8


def autocast_dtype(device: Union[str, torch.device]) -> Optional[torch.dtype]:
    """bf16 on CUDA GPUs with native bf16, fp16 on older ones (T4), None (fp32) elsewhere."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.bfloat16 if _native_bf16(device) else torch.float16


def autocast(device: Union[str, torch.device], enabled: Optional[bool] = None) -> ContextManager:
    """Mixed-precision context: on by default on CUDA, off on the CPU (bf16 matmuls are slow on
    most CPUs, and fp32 keeps the book's CPU numbers exact)."""
    device = torch.device(device)
    dtype = autocast_dtype(device)
    if enabled is None:
        enabled = dtype is not None
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16)


def needs_grad_scaler(device: Union[str, torch.device]) -> bool:
    """fp16 (not bf16) needs loss scaling to keep small gradients from underflowing."""
    return autocast_dtype(device) == torch.float16


# The CPU features that change how fast (and, through the kernels chosen, how exactly) a model
# trains and runs on the CPU: 256- and 512-bit vectors, the 8-bit multiply-add (VNNI), and AMX.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags() -> Optional[Set[str]]:
    """The flags of this CPU as /proc/cpuinfo lists them (its first processor); None where there is
    no such file (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return None


def machine_record() -> Dict[str, Any]:
    """This machine as a checkpoint or a pack of checkpoints records it: the torch version, and
    for each of `CPU_FLAGS` whether the CPU has it ("unknown" where the flags cannot be read)."""
    flags = cpu_flags()
    return {"torch": torch.__version__,
            "cpu_flags": "unknown" if flags is None else {name: name in flags for name in CPU_FLAGS}}


def can_read_back(x: Tensor) -> bool:
    """Whether an input check may read tensor values (min, max, any) back to Python: only on the
    CPU and outside `torch.compile`. On a GPU reading a value waits for every queued kernel, and
    under `torch.compile` it breaks the graph; there such checks are left out."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


@contextlib.contextmanager
def evaluating(models: Sequence[nn.Module], device: Optional[Union[str, torch.device]] = None
               ) -> Iterator[List[nn.Module]]:
    """`models` in eval mode, and on `device` if one is given, for the block; afterwards each is
    back in the mode and on the device it had: measuring or exporting a model must not change the
    caller's. Yields the models."""
    before = [(m, next(m.parameters(), None), m.training) for m in models]
    before = [(m, None if p is None else p.device, training) for m, p, training in before]
    try:
        yield [(m if device is None else m.to(device)).eval() for m in models]
    finally:
        for m, where, training in before:
            if where is not None:
                m.to(where)
            m.train(training)
