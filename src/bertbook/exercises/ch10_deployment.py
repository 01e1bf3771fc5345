"""Chapter 10, int8 quantisation: per-row symmetric int8 weights."""
from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import Tensor

from ._harness import ExerciseFailed, Case, Hint, run_check, _seeded

__all__ = ["check_quantize_per_channel"]


_INT8_EPS = torch.finfo(torch.float32).eps  # PyTorch's floor on a scale (a row of zeros)


def _quantize_rows(weight: Tensor, scales: Tensor, clamp: bool = True, rounding=torch.round,
                   divide: bool = False) -> Tensor:
    # PyTorch multiplies by the reciprocal of the scale; dividing rounds a few exact ties the other way
    q = rounding(weight / scales[:, None] if divide else weight * (1.0 / scales)[:, None])
    return (q.clamp(-128, 127) if clamp else q).to(torch.int8)


def _reference_quantize_per_channel(weight: Tensor) -> Tuple[Tensor, Tensor]:
    """Symmetric int8, one scale per output row: scale_i = max(max_j |W_ij| / 127.5, eps),
    q_ij = clamp(round(W_ij · (1 / scale_i)), −128, 127), in float32: bit for bit the int8 weights
    of PyTorch's per-channel dynamic quantisation (tests/test_exercises_ch10.py checks that)."""
    scales = (weight.abs().amax(dim=1) / 127.5).clamp(min=_INT8_EPS)
    return _quantize_rows(weight, scales), scales


def _per_channel_wrong(mistake: str):
    def wrong(weight: Tensor) -> Tuple[Tensor, Tensor]:
        amax = weight.abs().amax(dim=1)
        if mistake == "per_tensor":
            scales = (weight.abs().max() / 127.5).clamp(min=_INT8_EPS).expand(weight.shape[0]).clone()
            return _quantize_rows(weight, scales), scales
        if mistake == "columns":
            scales = (weight.abs().amax(dim=0) / 127.5).clamp(min=_INT8_EPS)
            return (weight / scales).round().clamp(-128, 127).to(torch.int8), scales
        scales = ((amax / 127) if mistake == "div127" else (amax / 127.5)).clamp(min=_INT8_EPS)
        if mistake == "no_clamp":
            return _quantize_rows(weight, scales, clamp=False), scales
        if mistake == "floor":
            return _quantize_rows(weight, scales, rounding=torch.floor), scales
        if mistake == "trunc":
            return _quantize_rows(weight, scales, rounding=torch.trunc), scales
        return _quantize_rows(weight, scales), scales
    return wrong


def _as_int8(quantize: Callable[[Tensor], Tuple[Tensor, Tensor]]) -> Callable[[Tensor], Tuple[Tensor, Tensor]]:
    """The student's function, with a clear failure when q is not int8 (e.g. the dequantised weights).
    W / scale and W · (1 / scale) are both accepted: they differ only where W / scale is an exact
    tie (a row's negative extreme, −127.5), which float rounding sends to −127 or −128."""
    def checked(weight: Tensor):
        out = quantize(weight)
        if isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[0], Tensor):
            q, scales = out
            if q.dtype != torch.int8:
                raise ExerciseFailed(
                    f"check_quantize_per_channel: q has dtype {q.dtype}; return the integers as int8 "
                    f"(q.to(torch.int8)), not the dequantised weights q * scale.")
            right_q, right_scales = _reference_quantize_per_channel(weight)
            if isinstance(scales, Tensor) and scales.shape == right_scales.shape and q.shape == right_q.shape \
                    and torch.allclose(scales.double(), right_scales.double(), rtol=1e-6, atol=0) \
                    and torch.equal(q, _quantize_rows(weight, right_scales, divide=True)):
                return right_q, scales  # the division convention: the same answer
        return out
    checked.__name__ = getattr(quantize, "__name__", "your function")
    return checked


def check_quantize_per_channel(quantize_per_channel: Callable[[Tensor], Tuple[Tensor, Tensor]]) -> None:
    """Exercise 10.1: ``quantize_per_channel(weight)`` for a weight matrix (out, in): symmetric int8
    with one scale per output row. Returns ``(q, scales)``: q int8 (out, in), scales float (out,),
    scale_i = max_j |W_ij| / 127.5 (floored at float32's eps for a row of zeros), q_ij =
    clamp(round(W_ij / scale_i), −128, 127), as PyTorch's per-channel symmetric quantisation."""
    with _seeded(1001):
        uneven = torch.randn(6, 10) * torch.tensor([0.02, 0.5, 3.0, 0.1, 1.0, 8.0])[:, None]
        zero_row = torch.randn(4, 7)
        zero_row[2] = 0.0
        cases = [
            Case("a 4 x 8 matrix of N(0, 1) weights", (torch.randn(4, 8),)),
            Case("rows of very different sizes (0.02 to 8): one scale per row matters here", (uneven,)),
            Case("a 16 x 32 matrix of small weights (N(0, 0.05), as in a trained layer)", (0.05 * torch.randn(16, 32),)),
            Case("one row: a matrix of shape 1 x 12", (torch.randn(1, 12),)),
            Case("a row of zeros: its scale must not be 0 (PyTorch floors it at float32's eps)", (zero_row,)),
            Case("a column vector, 5 x 1: each row's only weight is its own maximum", (torch.randn(5, 1),)),
        ]
    hints = [
        Hint(_per_channel_wrong("per_tensor"),
             "all your scales are equal: one scale for the whole matrix is per-tensor quantisation. "
             "Per channel means one scale per output row: weight.abs().amax(dim=1) / 127.5."),
        Hint(_per_channel_wrong("columns"),
             "your scales are per column (dim=0): the channels are the output rows of the weight "
             "(out, in), so take the maximum over dim=1."),
        Hint(_per_channel_wrong("div127"),
             "divide the row's max |w| by 127.5, not 127: PyTorch (and ONNX Runtime) spread 255 steps "
             "over [−max, max]; the maximum itself maps to 127.5 and is clamped to 127."),
        Hint(_per_channel_wrong("no_clamp"),
             "each row's largest weight maps to 127.5, which rounds to 128: int8 cannot hold it (it "
             "wraps to −128). Clamp to [−128, 127] before casting to int8."),
        Hint(_per_channel_wrong("floor"), "round to the nearest integer (torch.round), not down (floor)."),
        Hint(_per_channel_wrong("trunc"), "round to the nearest integer (torch.round); casting to int8 "
             "without rounding truncates towards zero."),
    ]
    run_check("check_quantize_per_channel", _as_int8(quantize_per_channel), _reference_quantize_per_channel,
              cases, hints, atol=0.0, rtol=1e-6)
