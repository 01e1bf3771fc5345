"""One benchmark harness for classifiers (chapter 10): accuracy, size on disk and CPU latency.

Latency is timed with `torch.utils.benchmark.Timer.blocked_autorange` (it picks the number of runs,
reports the median and the interquartile range), after one untimed warm-up call, with the thread
count stated. Two shapes: batch 1 over real reviews one at a time (their own lengths, no padding),
and one batch of 32 × 64 tokens. `measure_all` times several models in turn, several rounds over,
so that a slow spell of a shared machine falls on all of them rather than on one.
"""
from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .device import cpu_flags, evaluating

Batch = Mapping[str, Tensor]
Predict = Callable[[Batch], Tensor]  # a batch dict -> logits (B, C)


def torch_predict(model: nn.Module) -> Predict:
    """Our classifier (float or int8) as a batch -> logits function on the CPU (this harness
    measures CPU accuracy and latency; the batches are CPU tensors), run in eval mode without
    autograd. The model's own mode is left as it is: a model in training mode is switched to eval
    for each call and back. A model with parameters off the CPU (on a GPU, as the pipeline returns
    them there) is left where it is: a CPU copy in eval mode, made here, is run instead."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        model = copy.deepcopy(model).cpu().eval()

    def predict(batch: Batch) -> Tensor:
        # a model already in eval mode (the usual case) is timed without the switch
        with torch.inference_mode(), evaluating([model]) if model.training else contextlib.nullcontext():
            return model(batch["input_ids"], batch["attention_mask"]).logits

    return predict


def size_mb(model_or_path: Union[nn.Module, str]) -> float:
    """Megabytes (10^6 bytes) on disk: of a file (an ONNX model), or of a model's state dict saved
    with `torch.save` (which also stores int8 packed weights, unlike safetensors)."""
    if isinstance(model_or_path, str):
        if not os.path.exists(model_or_path):
            raise FileNotFoundError(f"no file at {model_or_path!r}")
        return os.path.getsize(model_or_path) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "weights.pt")
        torch.save(model_or_path.state_dict(), path)
        return os.path.getsize(path) / 1e6


def cpu_has_vnni() -> Optional[bool]:
    """Whether this CPU has the VNNI instructions (AVX512_VNNI or AVX_VNNI: an 8-bit multiply-add in
    one step, which int8 kernels use), from the flags in /proc/cpuinfo; None where there is no such
    file (not Linux). The int8 speed-ups of chapter 10 depend on it."""
    flags = cpu_flags()
    return None if flags is None else bool({"avx512_vnni", "avx_vnni"} & flags)


def accuracy(predict: Predict, batches: Sequence[Batch]) -> float:
    """Share of the examples of labelled `batches` whose argmax logit is the label."""
    right = total = 0
    for b in batches:
        right += int((predict(b).argmax(-1) == b["labels"]).sum())
        total += b["labels"].numel()
    if total == 0:
        raise ValueError("accuracy over an empty set of batches")
    return right / total


def latency(predict: Predict, batches: Sequence[Batch], threads: Optional[int] = None,
            min_run_time: float = 1.0) -> Dict[str, float]:
    """Milliseconds per batch: `predict` over `batches` (in turn) is timed as one statement, and
    the time divided by the number of batches. Returns `median_ms`, `iqr_ms` (over the timed
    blocks), `times_ms` (each block's time per batch), `runs` (statements timed) and `threads`."""
    from torch.utils import benchmark

    if not batches:
        raise ValueError("latency needs at least one batch")
    threads = threads or torch.get_num_threads()

    def run_all() -> None:
        for b in batches:
            predict(b)

    run_all()  # warm-up, not timed (first-call allocations, ONNX Runtime's lazy initialisation)
    timer = benchmark.Timer(stmt="run_all()", globals={"run_all": run_all}, num_threads=threads)
    m = timer.blocked_autorange(min_run_time=min_run_time)
    n = len(batches)
    return {"median_ms": 1e3 * m.median / n, "iqr_ms": 1e3 * m.iqr / n, "times_ms": [1e3 * t / n for t in m.times],
            "runs": m.number_per_run * len(m.times), "threads": threads}


def single_reviews(batches: Sequence[Batch], n: int = 64) -> List[Batch]:
    """The first `n` examples of `batches` as batches of one, cut to their real length (batch 1 at
    real review lengths)."""
    out = []
    for b in batches:
        for i in range(b["input_ids"].shape[0]):
            length = int(b["attention_mask"][i].sum())
            out.append({"input_ids": b["input_ids"][i:i + 1, :length],
                        "attention_mask": b["attention_mask"][i:i + 1, :length]})
            if len(out) == n:
                return out
    return out


def fixed_batch(vocab_size: int, batch_size: int = 32, seq_len: int = 64, seed: int = 0) -> Batch:
    """A (batch_size, seq_len) batch of random ordinary ids, no padding: the shape of the 32 × 64 row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (batch_size, seq_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _median_iqr(xs: Sequence[float]) -> Tuple[float, float]:
    q1, q2, q3 = torch.tensor(list(xs), dtype=torch.float64).quantile(torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
    return q2, q3 - q1


def time_in_turn(jobs: Mapping[Any, Tuple[Predict, Sequence[Batch]]], rounds: int = 1,
                 threads: Optional[int] = None, min_run_time: float = 1.0) -> Dict[Any, List[Dict[str, Any]]]:
    """Time every job (key -> (predict, batches)) with `latency`, one after the other, `rounds`
    times over, so that a busy spell of the machine slows them alike: key -> one `latency` result
    per round."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    results: Dict[Any, List[Dict[str, Any]]] = {key: [] for key in jobs}
    for _ in range(rounds):
        for key, (predict, batches) in jobs.items():
            results[key].append(latency(predict, batches, threads, min_run_time))
    return results


def measure_all(variants: Mapping[Any, Tuple[Predict, float]], test_batches: Sequence[Batch], vocab_size: int,
                threads: Optional[int] = None, min_run_time: float = 1.0, shape: Tuple[int, int] = (32, 64),
                rounds: int = 1) -> List[Dict[str, Any]]:
    """One row per `variants` entry (key -> (predict, MB)), in order: `accuracy` on `test_batches`,
    `mb`, and the latencies at batch 1 (real reviews) and at `shape` (`ms_batch32`, whatever the
    shape, so that rows of every scale have the same keys). The variants are timed in turn, `rounds`
    times over; `ms_*` is the median and `ms_*_iqr` the interquartile range of all the timed blocks
    of all rounds, `ms_*_rounds` each round's median."""
    shapes = {"batch1": single_reviews(test_batches), "batch32": [fixed_batch(vocab_size, *shape)]}
    times = time_in_turn({(key, label): (predict, batches) for key, (predict, _) in variants.items()
                          for label, batches in shapes.items()}, rounds, threads, min_run_time)
    rows = []
    for key, (predict, mb) in variants.items():
        row: Dict[str, Any] = {"accuracy": accuracy(predict, test_batches), "mb": mb}
        for label in shapes:
            ts = times[(key, label)]
            median, iqr = _median_iqr([x for t in ts for x in t["times_ms"]])
            row.update({f"ms_{label}": median, f"ms_{label}_iqr": iqr,
                        f"ms_{label}_rounds": [t["median_ms"] for t in ts]})
        rows.append(row)
    return rows


def measure(predict: Predict, size: float, test_batches: Sequence[Batch], vocab_size: int,
            threads: Optional[int] = None, min_run_time: float = 1.0, shape: Tuple[int, int] = (32, 64),
            **row: Any) -> Dict[str, Any]:
    """One row of the table for one model: `row`'s labels (e.g. model=..., format=...) plus what
    `measure_all` measures, in one round."""
    return {**row, **measure_all({None: (predict, size)}, test_batches, vocab_size, threads, min_run_time, shape)[0]}
