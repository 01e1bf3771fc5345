"""The harness every check shares: cases, hints, the comparison and the failure report."""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..bert import BertConfig
from ..encoder import EncoderLayer


class ExerciseFailed(AssertionError):
    """A graded check failed. The message says which input, what was expected and what came back."""


@dataclass
class Case:
    """One input for a check: a label a student can read, and the arguments of the function."""

    label: str
    args: Tuple[Any, ...] = ()
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Hint:
    """A known mistake. When the student's result agrees with ``wrong(*args, **kwargs)`` (and not
    with the reference), ``message`` is added to the failure."""

    wrong: Callable[..., Any]
    message: str


def _fmt_number(x: Any) -> str:
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.4g}"
    return repr(x)


def _fmt_nested(values: Any) -> str:
    if isinstance(values, list):
        return "[" + ", ".join(_fmt_nested(v) for v in values) + "]"
    if isinstance(values, float):
        return f"{values:.4f}"
    return str(values)


def describe(x: Any, max_numel: int = 48) -> str:
    """A short, readable description of a value: small tensors in full (4 decimals), bigger ones
    by shape, dtype and range."""
    if isinstance(x, Tensor):
        shape = tuple(x.shape)
        if x.device.type == "meta":
            return f"tensor of shape {shape} on the meta device"
        if x.numel() <= max_numel:
            values = x.detach().cpu()
            values = values.int() if values.dtype == torch.bool else values
            return f"tensor of shape {shape}: {_fmt_nested(values.tolist())}"
        finite = x.detach().float()
        finite = finite[torch.isfinite(finite)]
        rng = f", values in [{finite.min():.4f}, {finite.max():.4f}]" if finite.numel() else ""
        return f"tensor of shape {shape}, dtype {x.dtype}{rng}"
    if isinstance(x, (tuple, list)):
        inner = ", ".join(describe(v, max_numel) for v in x)
        return f"({inner})" if isinstance(x, tuple) else f"[{inner}]"
    if isinstance(x, BertConfig):
        return (f"BertConfig(vocab_size={x.vocab_size}, hidden_size={x.hidden_size}, "
                f"num_hidden_layers={x.num_hidden_layers}, num_attention_heads={x.num_attention_heads}, "
                f"intermediate_size={x.intermediate_size}, max_position_embeddings="
                f"{x.max_position_embeddings}, type_vocab_size={x.type_vocab_size})")
    if isinstance(x, EncoderLayer):
        a = x.attention
        return (f"EncoderLayer(hidden_size={a.hidden_size}, num_heads={a.num_heads}, "
                f"intermediate_size={x.ffn.fc1.out_features}, pre_norm={x.pre_norm})")
    if isinstance(x, nn.Module):
        return type(x).__name__
    if x is None:
        return "None"
    return _fmt_number(x)


def compare(expected: Any, got: Any, atol: float = 1e-5, rtol: float = 1e-4, where: str = "") -> Optional[str]:
    """None when ``got`` matches ``expected``; otherwise a sentence saying how they differ."""
    at = f" in {where}" if where else ""
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return (f"expected a tuple of {len(expected)} values{at}, got a {type(got).__name__} "
                    f"(return all of them, e.g. `return output, weights`)")
        if len(got) != len(expected):
            return f"expected {len(expected)} values{at}, got {len(got)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            problem = compare(e, g, atol, rtol, f"{where}[{i}]" if where else f"returned value [{i}]")
            if problem:
                return problem
        return None
    if isinstance(expected, Tensor):
        if not isinstance(got, Tensor):
            return f"expected a tensor{at}, got a {type(got).__name__}"
        if tuple(got.shape) != tuple(expected.shape):
            return f"shape{at} is {tuple(got.shape)}, expected {tuple(expected.shape)}"
        e, g = expected.detach().double().cpu(), got.detach().double().cpu()
        bad_nan = torch.isnan(g) & ~torch.isnan(e)
        if bad_nan.any():
            idx = tuple(int(i) for i in bad_nan.nonzero()[0])
            return f"got NaN{at} at index {idx}, where {e[idx].item():.4f} was expected"
        if not torch.allclose(g, e, atol=atol, rtol=rtol, equal_nan=True):
            err = (g - e).abs().nan_to_num(float("inf"))
            idx = tuple(int(i) for i in (err == err.max()).nonzero()[0])
            return (f"values differ{at}: the largest difference is at index {idx}: expected "
                    f"{e[idx].item():.4f}, got {g[idx].item():.4f} (tolerance {atol:g} + {rtol:g}·|expected|)")
        return None
    if isinstance(expected, bool) or not isinstance(expected, (int, float)):
        return None if got == expected else f"expected {describe(expected)}{at}, got {describe(got)}"
    if isinstance(got, Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return f"expected a number{at}, got a {type(got).__name__}"
    if isinstance(expected, int) and isinstance(got, float) and not got.is_integer():
        return f"expected a whole number{at}, got {got}"
    if isinstance(expected, float):
        wrong = abs(got - expected) > atol + rtol * abs(expected)
    else:
        wrong = got != expected
    if wrong:
        diff = got - expected
        return f"off by {_fmt_number(diff)}{at} ({'too many' if diff > 0 else 'too few'})"
    return None


def _copy(args: Tuple[Any, ...], kwargs: Dict[str, Any]):
    # Each function gets its own copy, so an in-place edit of an input cannot leak from one to the
    # other (and cannot make a wrong answer look right).
    return copy.deepcopy(args), copy.deepcopy(kwargs)


def run_check(
    name: str,
    student: Callable[..., Any],
    reference: Callable[..., Any],
    cases: Sequence[Case],
    hints: Sequence[Hint] = (),
    atol: float = 1e-5,
    rtol: float = 1e-4,
    quiet: bool = False,
) -> int:
    """Compare ``student`` with ``reference`` on every case; raise ExerciseFailed on the first
    difference, print ``✓ name: N cases passed`` when all agree (unless ``quiet``)."""
    if not callable(student):
        raise ExerciseFailed(f"{name}: expected a function, got {type(student).__name__}")
    with _seeded(0):  # any randomness in a check leaves the notebook's random stream alone
        n = _run_cases(name, student, reference, cases, hints, atol, rtol)
    if not quiet:
        print(f"✓ {name}: {n} cases passed")
    return n


def _call_student(name: str, fn: Callable[..., Any], args: Tuple[Any, ...], failure: str,
                  kwargs: Optional[Dict[str, Any]] = None) -> Any:
    """Call the student's function. NotImplementedError becomes "not implemented yet"; any other
    exception becomes a failure that shows it after `failure` (the case, its input, what was expected)."""
    try:
        return fn(*args, **(kwargs or {}))
    except NotImplementedError:
        raise ExerciseFailed(
            f"{name}: `{getattr(fn, '__name__', 'your function')}` is not implemented yet (it raised "
            f"NotImplementedError). Replace `raise NotImplementedError()` with your code and run its cell again."
        ) from None
    except Exception as err:  # the student's bug: show it together with the input
        raise ExerciseFailed(f"{failure}\n  got:       an exception, {type(err).__name__}: {err}") from err


def _run_cases(name, student, reference, cases, hints, atol, rtol) -> int:
    for i, case in enumerate(cases, 1):
        args, kwargs = _copy(case.args, case.kwargs)
        with torch.no_grad():
            expected = reference(*args, **kwargs)
        args, kwargs = _copy(case.args, case.kwargs)
        with torch.no_grad():
            got = _call_student(name, student, args, kwargs=kwargs, failure=(
                f"{name} failed on case {i} of {len(cases)} ({case.label}):\n"
                f"  for input: {_describe_inputs(case, reference)}\n"
                f"  expected:  {describe(expected)}"))
        problem = compare(expected, got, atol, rtol)
        if problem is None:
            continue
        lines = [
            f"{name} failed on case {i} of {len(cases)} ({case.label}):",
            f"  for input: {_describe_inputs(case, reference)}",
            f"  expected:  {describe(expected)}",
            f"  got:       {describe(got)}",
            f"  problem:   {problem}",
        ]
        hint = _best_hint(student, case, got, cases, hints, atol, rtol)
        if hint is not None:
            lines.append(f"  hint:      {hint.message}")
        raise ExerciseFailed("\n".join(lines))
    return len(cases)


def _matches(fn: Callable[..., Any], case: Case, got: Any, atol: float, rtol: float) -> bool:
    args, kwargs = _copy(case.args, case.kwargs)
    try:
        with torch.no_grad():
            return compare(fn(*args, **kwargs), got, atol, rtol) is None
    except Exception:
        return False


def _best_hint(student, failed: Case, got, cases, hints, atol, rtol) -> Optional[Hint]:
    """The known mistake that explains the student's answer: it must reproduce the failing case, and
    when several do (two mistakes can cost the same number of parameters on one input), the one
    that reproduces the student's answers on the most other cases wins."""
    candidates = [h for h in hints if _matches(h.wrong, failed, got, atol, rtol)]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    answers = []
    for case in cases:
        args, kwargs = _copy(case.args, case.kwargs)
        try:
            with torch.no_grad():
                answers.append((case, student(*args, **kwargs)))
        except Exception:
            continue
    scores = [sum(_matches(h.wrong, c, a, atol, rtol) for c, a in answers) for h in candidates]
    return candidates[scores.index(max(scores))]


def _describe_inputs(case: Case, reference: Callable[..., Any]) -> str:
    # Name the arguments after the reference's parameters (the student's own names may differ,
    # and a check never inspects the student's code).
    try:
        names = [p.name for p in inspect.signature(reference).parameters.values()]
    except (TypeError, ValueError):
        names = []
    names += [f"argument {i + 1}" for i in range(len(names), len(case.args))]
    parts = [f"{n} = {describe(a)}" for n, a in zip(names, case.args)]
    parts += [f"{k} = {describe(v)}" for k, v in case.kwargs.items()]
    return "\n             ".join(parts)


class _seeded:
    """Fix the random numbers of a check without touching the notebook's own random stream."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=[])
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        return self._fork.__exit__(*exc)


def _check_failed(name: str, i: int, n: int, label: str, inputs: str, expected: str, got: str,
                  problem: str, hint: Optional[str] = None) -> ExerciseFailed:
    lines = [f"{name} failed on case {i} of {n} ({label}):", f"  for input: {inputs}",
             f"  expected:  {expected}", f"  got:       {got}", f"  problem:   {problem}"]
    if hint:
        lines.append(f"  hint:      {hint}")
    return ExerciseFailed("\n".join(lines))
