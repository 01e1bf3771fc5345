"""Checks for the graded exercises of the book.

Every graded exercise asks the student for a function; the cell after it calls a check from
this module, e.g. ``check_masked_softmax(masked_softmax)``. A check

* runs the student's function and the reference from ``bertbook`` on several inputs — random
  ones (from a fixed seed, so a re-run says the same thing) and edge cases (padding, a fully
  masked row, ...) — and compares the results with a tolerance;
* on the first difference raises :class:`ExerciseFailed` (an ``AssertionError``), saying for which
  input, what was expected and what came back, plus a hint when the answer matches a known
  mistake (attention without the 1/√d_k scaling, a tied weight counted twice, ...);
* reports a function that still raises ``NotImplementedError`` as "not implemented yet";
* on success prints one stable line, ``✓ check_name: N cases passed``.

A check only calls the function: it never reads the student's source code.

Adding a check (for a later chapter)::

    def check_my_thing(student_fn):
        cases = [Case("a short description of the input", args=(...,)), ...]
        hints = [Hint(wrong_fn, "what the student probably did, and how to fix it")]
        run_check("check_my_thing", student_fn, reference_fn, cases, hints=hints)

``reference_fn`` should call into ``bertbook`` (so the book's code and the grading agree) and
``wrong_fn`` takes the same arguments and reproduces a typical mistake.
"""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import MultiHeadAttention, masked_softmax, scaled_dot_product_attention
from .bert import BertConfig, BertEmbeddings, BertForPreTraining
from .encoder import Encoder, EncoderLayer
from .masking import IGNORE_INDEX

__all__ = [
    "ExerciseFailed", "Case", "Hint", "run_check", "compare", "describe",
    "check_masked_softmax", "check_attention", "check_split_merge_heads",
    "check_encoder_layer", "check_encoder_num_parameters",
    "check_bert_num_parameters", "check_bert_embeddings",
]


# ---------------------------------------------------------------------------------------------
# the shared harness
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# chapter 1: attention
# ---------------------------------------------------------------------------------------------

def _keep(mask: Tensor) -> Tensor:
    return mask if mask.dtype == torch.bool else mask != 0


_reference_masked_softmax = masked_softmax  # what bertbook.attention.scaled_dot_product_attention uses


def check_masked_softmax(masked_softmax: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Exercise 1.1: ``masked_softmax(scores, mask)``: softmax over the last dimension where
    ``mask`` (broadcastable to ``scores``; 1/True = keep, 0/False = padding) is kept; padded
    positions get weight 0 and a fully masked row is all zeros (not NaN)."""
    with _seeded(101):
        full = torch.ones(1, 1, 4)
        pad2 = torch.tensor([[[1, 1, 1, 0, 0]], [[1, 1, 1, 1, 0]]])
        row_masked = torch.tensor([[[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]])
        cases = [
            Case("no padding", (torch.randn(1, 3, 4), full)),
            Case("padding: the last keys are masked", (torch.randn(2, 3, 5), pad2)),
            Case("a fully masked query row (expect all zeros there)", (torch.randn(1, 3, 4), row_masked)),
            Case("a boolean mask (True = keep)", (torch.randn(2, 2, 5), pad2.bool())),
            Case("large scores (±300): exp overflows unless you subtract the maximum",
                 (300 * torch.randn(2, 3, 5), pad2)),
            Case("4-D scores with heads, mask of shape (B, 1, 1, Lk)",
                 (torch.randn(2, 2, 3, 5), pad2[:, None])),
        ]
    hints = [
        Hint(lambda s, m: s.softmax(-1),
             "the mask was not applied: padded keys must get weight 0."),
        Hint(lambda s, m: _reference_masked_softmax(s, ~_keep(m)),
             "you masked the wrong positions: in our convention 1/True means keep, 0/False means padding."),
        Hint(lambda s, m: s.masked_fill(~_keep(m), float("-inf")).softmax(-1),
             "a fully masked row has no key left, and the softmax of all -inf is 0/0 = NaN: "
             "set the weights of masked positions to 0 after the softmax (masked_fill)."),
        Hint(lambda s, m: s.masked_fill(~_keep(m), torch.finfo(s.dtype).min).softmax(-1),
             "padded keys get weight 0, but a fully masked row must be all zeros as well: set the "
             "masked weights to 0 after the softmax."),
        Hint(lambda s, m: s.masked_fill(~_keep(m), -1e9).softmax(-1),
             "padded keys get weight 0, but a fully masked row must be all zeros as well: set the "
             "masked weights to 0 after the softmax."),
    ]
    run_check("check_masked_softmax", masked_softmax, _reference_masked_softmax, cases, hints)


def _attention_unscaled(q, k, v, mask=None):
    return scaled_dot_product_attention(q * math.sqrt(q.shape[-1]), k, v, mask)


def _attention_divided_by_d(q, k, v, mask=None):
    return scaled_dot_product_attention(q / math.sqrt(q.shape[-1]), k, v, mask)


def check_attention(attention: Callable[..., Tuple[Tensor, Tensor]]) -> None:
    """Exercise 1.2: ``attention(q, k, v, mask=None) -> (output, weights)``, scaled dot-product
    attention as in ``bertbook.attention.scaled_dot_product_attention``."""
    with _seeded(102):
        pad = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])[:, None, :]  # (B, 1, Lk)
        row_masked = torch.ones(1, 3, 6, dtype=torch.bool)
        row_masked[0, 1] = False
        cases = [
            Case("no mask, d_k = 16", (torch.randn(2, 4, 16), torch.randn(2, 6, 16), torch.randn(2, 6, 16))),
            Case("no mask, d_k = 64 (the scaling matters more)",
                 (torch.randn(1, 3, 64), torch.randn(1, 5, 64), torch.randn(1, 5, 8))),
            Case("padding mask of shape (B, 1, Lk)",
                 (torch.randn(2, 4, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 8), pad)),
            Case("a fully masked query row (its output must be zeros, not NaN)",
                 (torch.randn(1, 3, 8), torch.randn(1, 6, 8), torch.randn(1, 6, 4), row_masked)),
            Case("heads: q, k, v of shape (B, H, L, d), mask (B, 1, 1, Lk)",
                 (torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 4), pad[:, None])),
            Case("one query, one key", (torch.randn(1, 1, 4), torch.randn(1, 1, 4), torch.randn(1, 1, 4))),
        ]
    hints = [
        Hint(_attention_unscaled,
             "your result matches attention *without* the 1/√d_k scaling: divide the scores "
             "q @ kᵀ by math.sqrt(d_k), where d_k = q.shape[-1]."),
        Hint(_attention_divided_by_d,
             "your result matches attention with the scores divided by d_k: the scale is 1/√d_k, "
             "not 1/d_k."),
        Hint(lambda q, k, v, mask=None: scaled_dot_product_attention(q, k, v),
             "the mask was ignored: padded keys must get weight 0."),
    ]
    run_check("check_attention", attention, scaled_dot_product_attention, cases, hints)


def _reference_split(x: Tensor, num_heads: int) -> Tensor:
    # MultiHeadAttention.split_heads only reads num_heads and head_dim from the module; a stand-in
    # avoids building (and randomly initialising) a whole module for it.
    heads = SimpleNamespace(num_heads=num_heads, head_dim=x.shape[-1] // num_heads)
    return MultiHeadAttention.split_heads(heads, x)


def check_split_merge_heads(split_heads: Callable[[Tensor, int], Tensor],
                            merge_heads: Callable[[Tensor], Tensor]) -> None:
    """Exercise 1.3: ``split_heads(x, num_heads)``: (B, L, D) -> (B, H, L, D/H) and
    ``merge_heads(x)``: (B, H, L, d) -> (B, L, H·d), as in ``MultiHeadAttention``."""
    with _seeded(103):
        split_cases = [
            Case("B=1, L=3, D=4, 2 heads", (torch.arange(12.0).view(1, 3, 4), 2)),
            Case("B=2, L=5, D=12, 3 heads", (torch.randn(2, 5, 12), 3)),
            Case("one head: only a new axis", (torch.randn(2, 4, 6), 1)),
            Case("as many heads as features (d = 1)", (torch.randn(1, 3, 4), 4)),
        ]
        merge_cases = [
            Case("B=1, H=2, L=3, d=2", (torch.arange(12.0).view(1, 2, 3, 2),)),
            Case("B=2, H=3, L=5, d=4", (torch.randn(2, 3, 5, 4),)),
            Case("one head", (torch.randn(2, 1, 4, 6),)),
        ]
    split_hints = [
        Hint(lambda x, h: x.reshape(x.shape[0], h, x.shape[1], x.shape[2] // h),
             "you reshaped (B, L, D) straight into (B, H, L, d): that mixes positions across heads. "
             "View it as (B, L, H, d) first, then swap the L and H axes with .transpose(1, 2)."),
    ]
    merge_hints = [
        Hint(lambda x: x.reshape(x.shape[0], x.shape[2], -1),
             "you reshaped (B, H, L, d) straight into (B, L, D): that mixes positions across heads. "
             "Swap back with .transpose(1, 2) first (then .reshape, since the result is not contiguous)."),
    ]
    n = run_check("split_heads", split_heads, _reference_split, split_cases, split_hints, quiet=True)
    n += run_check("merge_heads", merge_heads, MultiHeadAttention.merge_heads, merge_cases, merge_hints,
                   quiet=True)
    # The round trip must give back the input: merge_heads(split_heads(x)) == x.
    roundtrip = [Case("merge_heads(split_heads(x, 4)) must return x", (torch.arange(48.0).view(2, 3, 8), 4))]
    n += run_check("merge_heads(split_heads(x))", lambda x, h: merge_heads(split_heads(x, h)),
                   lambda x, h: x, roundtrip, quiet=True)
    print(f"✓ check_split_merge_heads: {n} cases passed")


# ---------------------------------------------------------------------------------------------
# chapter 2: the encoder
# ---------------------------------------------------------------------------------------------

def _random_layer(hidden: int, heads: int, inter: int, pre_norm: bool) -> EncoderLayer:
    layer = EncoderLayer(hidden, heads, inter, dropout=0.1, attention_dropout=0.1, pre_norm=pre_norm)
    with torch.no_grad():
        # LayerNorm starts as the identity affine map (γ=1, β=0): randomise it, so that a forgotten
        # or misplaced LayerNorm changes the result.
        for norm in (layer.attention_norm, layer.ffn_norm):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0.0, 0.5)
    return layer.eval()  # dropout off: the forward pass is deterministic


def _reference_layer(layer: EncoderLayer, x: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
    return layer.eval()(x, attention_mask)[0]


def _layer_swapped_norm(layer: EncoderLayer, x: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
    layer.pre_norm = not layer.pre_norm
    return layer.eval()(x, attention_mask)[0]


def _layer_no_residual(layer: EncoderLayer, x: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
    if layer.pre_norm:
        x = layer.attention(layer.attention_norm(x), attention_mask)[0]
        return layer.ffn(layer.ffn_norm(x))
    x = layer.attention_norm(layer.attention(x, attention_mask)[0])
    return layer.ffn_norm(layer.ffn(x))


def check_encoder_layer(encoder_layer_forward: Callable[..., Tensor]) -> None:
    """Exercise 2.1: ``encoder_layer_forward(layer, x, attention_mask)``: the forward pass of a
    ``bertbook.EncoderLayer`` (post-LN or pre-LN, as ``layer.pre_norm`` says) from its parts
    ``layer.attention``, ``layer.attention_norm``, ``layer.ffn``, ``layer.ffn_norm``; returns (B, L, D)."""
    with _seeded(201):
        pad = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
        cases = [
            Case("post-LN, no mask", (_random_layer(8, 2, 16, False), torch.randn(2, 4, 8), None)),
            Case("post-LN, padding mask", (_random_layer(8, 2, 16, False), torch.randn(2, 5, 8), pad)),
            Case("post-LN, one token", (_random_layer(12, 3, 24, False), torch.randn(1, 1, 12), None)),
            Case("pre-LN, no mask", (_random_layer(8, 2, 16, True), torch.randn(2, 4, 8), None)),
            Case("pre-LN, padding mask", (_random_layer(16, 4, 32, True), torch.randn(2, 5, 16), pad)),
        ]
    hints = [
        Hint(_layer_swapped_norm,
             "you put LayerNorm in the other place. Post-LN (BERT, layer.pre_norm False): "
             "x = norm(x + sublayer(x)). Pre-LN (layer.pre_norm True): x = x + sublayer(norm(x))."),
        Hint(_layer_no_residual,
             "the residual connections are missing: add the sub-block's input to its output."),
    ]
    run_check("check_encoder_layer", encoder_layer_forward, _reference_layer, cases, hints, atol=1e-5)


def _encoder_count(num_layers, hidden_size, num_heads, intermediate_size, pre_norm=False) -> int:
    # Built on the meta device: shapes only, no memory, so even BERT-large costs nothing.
    with torch.device("meta"):
        enc = Encoder(num_layers, hidden_size, num_heads, intermediate_size, pre_norm=pre_norm)
    return sum(p.numel() for p in enc.parameters())


def _encoder_count_minus(per_layer: Callable[[int, int], int], final: Callable[[int], int] = lambda d: 0):
    def wrong(num_layers, hidden_size, num_heads, intermediate_size, pre_norm=False):
        right = _encoder_count(num_layers, hidden_size, num_heads, intermediate_size, pre_norm)
        extra = final(hidden_size) if pre_norm else 0
        return right - num_layers * per_layer(hidden_size, intermediate_size) - extra
    return wrong


def check_encoder_num_parameters(count: Callable[..., int]) -> None:
    """Exercise 2.2: ``count(num_layers, hidden_size, num_heads, intermediate_size, pre_norm=False)``:
    the number of parameters of ``bertbook.Encoder`` with those sizes, from a formula."""
    cases = [
        Case("1 layer, D=4, 1 head, I=8", (1, 4, 1, 8)),
        Case("2 layers, D=8, 2 heads, I=32", (2, 8, 2, 32)),
        Case("2 layers, D=8, 4 heads, I=32 (more heads)", (2, 8, 4, 32)),
        Case("pre-LN: 3 layers, D=16, 4 heads, I=64", (3, 16, 4, 64), {"pre_norm": True}),
        Case("BERT-base's encoder: 12 layers, D=768, 12 heads, I=3072", (12, 768, 12, 3072)),
        Case("BERT-large's encoder: 24 layers, D=1024, 16 heads, I=4096", (24, 1024, 16, 4096)),
    ]
    hints = [
        Hint(_encoder_count_minus(lambda d, i: 4 * d + d + i),
             "the bias vectors are missing: each nn.Linear(n_in, n_out) has n_in·n_out weights "
             "plus n_out biases."),
        Hint(_encoder_count_minus(lambda d, i: 4 * d, lambda d: 2 * d),
             "the LayerNorm parameters are missing: each LayerNorm has a scale γ and a shift β of "
             "size D, and every layer has two LayerNorms (pre-LN adds a final one)."),
        Hint(_encoder_count_minus(lambda d, i: 0, lambda d: 2 * d),
             "for pre-LN, the stack ends with one more LayerNorm (2·D parameters)."),
        Hint(_encoder_count_minus(lambda d, i: d * d + d),
             "one of the four attention projections is missing: queries, keys, values *and* the "
             "output projection are each D×D (+ D biases)."),
    ]
    run_check("check_encoder_num_parameters", count, _encoder_count, cases, hints)


# ---------------------------------------------------------------------------------------------
# chapter 3: BERT
# ---------------------------------------------------------------------------------------------

def _bert_count(config: BertConfig) -> int:
    with torch.device("meta"):
        model = BertForPreTraining(config)
    return model.num_parameters()  # counts the tied decoder weight once


def _bert_count_plus(extra: Callable[[BertConfig], int]):
    return lambda config: _bert_count(config) + extra(config)


def check_bert_num_parameters(count: Callable[[BertConfig], int]) -> None:
    """Exercise 3.1: ``count(config)``: the number of parameters of ``BertForPreTraining(config)``
    from a formula (the MLM decoder shares its weight with the word embeddings)."""
    cases = [
        Case("a tiny BERT", (BertConfig(vocab_size=10, hidden_size=4, num_hidden_layers=1,
                                        num_attention_heads=1, intermediate_size=8,
                                        max_position_embeddings=6),)),
        Case("a small BERT", (BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=64,
                                         max_position_embeddings=32),)),
        Case("three segment types", (BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2,
                                                num_attention_heads=2, intermediate_size=32,
                                                max_position_embeddings=16, type_vocab_size=3),)),
        Case("BERT-base", (BertConfig(),)),
        Case("BERT-large", (BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                       intermediate_size=4096),)),
    ]
    hints = [
        Hint(_bert_count_plus(lambda c: c.vocab_size * c.hidden_size),
             "you counted the MLM decoder's V×D weight, but it *is* the word-embedding matrix "
             "(tied): count it once."),
        Hint(_bert_count_plus(lambda c: -c.vocab_size),
             "the MLM head's output bias (one per vocabulary entry, V numbers) is missing: only the "
             "decoder *weight* is tied."),
        Hint(_bert_count_plus(lambda c: -(c.hidden_size ** 2 + c.hidden_size)),
             "one D×D dense layer (+ D biases) is missing: the pooler, or the MLM head's transform."),
        Hint(_bert_count_plus(lambda c: -(2 * c.hidden_size + 2)),
             "the NSP head is missing: a Linear(D, 2), 2·D weights and 2 biases."),
        Hint(_bert_count_plus(lambda c: -2 * c.hidden_size),
             "a LayerNorm (2·D) is missing: the embeddings and the MLM head each have one, and so does "
             "every encoder layer (two each)."),
        Hint(_bert_count_plus(lambda c: -c.type_vocab_size * c.hidden_size),
             "the segment (token type) embeddings are missing: type_vocab_size × D."),
        Hint(_bert_count_plus(lambda c: -c.max_position_embeddings * c.hidden_size),
             "the position embeddings are missing: max_position_embeddings × D."),
    ]
    run_check("check_bert_num_parameters", count, _bert_count, cases, hints)


def _random_embeddings(config: BertConfig) -> BertEmbeddings:
    emb = BertEmbeddings(config)
    with torch.no_grad():
        for table in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings):
            table.weight.normal_()
        emb.LayerNorm.weight.uniform_(0.5, 1.5)
        emb.LayerNorm.bias.normal_(0.0, 0.5)
    return emb.eval()


def _reference_embeddings(emb: BertEmbeddings, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
    return emb.eval()(input_ids, token_type_ids)


def _embeddings_without(part: str):
    def wrong(emb: BertEmbeddings, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1])
        x = emb.word_embeddings(input_ids)
        if part != "positions":
            x = x + emb.position_embeddings(positions)
        if part != "segments":
            x = x + emb.token_type_embeddings(token_type_ids)
        return x if part == "norm" else emb.LayerNorm(x)
    return wrong


def check_bert_embeddings(bert_embeddings: Callable[..., Tensor]) -> None:
    """Exercise 3.2: ``bert_embeddings(emb, input_ids, token_type_ids)``: BERT's input
    representation from the parts of a ``bertbook.BertEmbeddings`` (``word_embeddings``,
    ``position_embeddings``, ``token_type_embeddings``, ``LayerNorm``); dropout is off."""
    with _seeded(301):
        config = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=16, max_position_embeddings=12)
        emb = _random_embeddings(config)
        ids = torch.tensor([[2, 7, 7, 3, 9, 3], [2, 5, 3, 0, 0, 0]])
        segs = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]])
        cases = [
            Case("one segment", (emb, ids, torch.zeros_like(ids))),
            Case("two segments, padding", (emb, ids, segs)),
            Case("the same token at two positions", (emb, torch.tensor([[4, 4, 4]]), torch.tensor([[0, 0, 1]]))),
            Case("a sequence as long as max_position_embeddings",
                 (emb, torch.randint(0, 20, (1, 12)), torch.randint(0, 2, (1, 12)))),
        ]
    hints = [
        Hint(_embeddings_without("positions"), "the position embeddings are missing: without them "
             "the model cannot tell word order. Add emb.position_embeddings(torch.arange(L))."),
        Hint(_embeddings_without("segments"), "the segment embeddings are missing: add "
             "emb.token_type_embeddings(token_type_ids)."),
        Hint(_embeddings_without("norm"), "the sum must go through emb.LayerNorm."),
    ]
    run_check("check_bert_embeddings", bert_embeddings, _reference_embeddings, cases, hints)


# ---------------------------------------------------------------------------------------------
# chapter 4: pretraining data
# ---------------------------------------------------------------------------------------------
# Masking and NSP sampling are random, so these two checks cannot compare outputs one to one.
# They check what must hold for every draw (labels, special tokens, untouched positions) exactly,
# and the frequencies (15% selected, 80/10/10, 50% random B) statistically on many tokens, next to
# what the package's own implementation gives on the same input.
import functools  # noqa: E402
import random  # noqa: E402

__all__ += ["check_mask_tokens", "check_nsp_pair"]

def _check_failed(name: str, i: int, n: int, label: str, inputs: str, expected: str, got: str,
                  problem: str, hint: Optional[str] = None) -> ExerciseFailed:
    lines = [f"{name} failed on case {i} of {n} ({label}):", f"  for input: {inputs}",
             f"  expected:  {expected}", f"  got:       {got}", f"  problem:   {problem}"]
    if hint:
        lines.append(f"  hint:      {hint}")
    return ExerciseFailed("\n".join(lines))


def _mlm_batch(batch: int, length: int, vocab_size: int, special: Sequence[int], pad: int,
               cls: int, sep: int) -> Tensor:
    """Random sequences laid out as ``[CLS] A [SEP] B [SEP]`` followed by padding."""
    allowed = torch.tensor([t for t in range(vocab_size) if t not in set(special)])
    ids = allowed[torch.randint(len(allowed), (batch, length))]
    for row in range(batch):
        n = int(torch.randint(5, length + 1, ()))  # real length, the rest is padding
        cut = int(torch.randint(2, n - 1, ()))
        ids[row, 0], ids[row, cut], ids[row, n - 1] = cls, sep, sep
        ids[row, n:] = pad
    return ids


def _mask_counts(ids: Tensor, masked: Tensor, labels: Tensor, mask_id: int) -> Dict[str, int]:
    selected = labels != IGNORE_INDEX
    return {"selected": int(selected.sum()),
            "mask": int((selected & (masked == mask_id)).sum()),
            "kept": int((selected & (masked == ids)).sum()),
            "random": int((selected & (masked != mask_id) & (masked != ids)).sum())}


def check_mask_tokens(mask_tokens_fn: Callable[..., Tuple[Tensor, Tensor]]) -> None:
    """Exercise 4.1: ``mask_tokens(input_ids, vocab_size, mask_token_id, special_token_ids,
    mlm_probability=0.15) -> (masked_ids, labels)``: BERT's masking, as in
    ``bertbook.masking.mask_tokens``. Checked exactly for what holds on every draw, and
    statistically (within about 5 standard deviations) for the 15% / 80-10-10 frequencies."""
    from .masking import mask_tokens as reference

    name = "check_mask_tokens"
    if not callable(mask_tokens_fn):
        raise ExerciseFailed(f"{name}: expected a function, got {type(mask_tokens_fn).__name__}")
    ours = [0, 1, 2, 3, 4]                 # [PAD] [UNK] [CLS] [SEP] [MASK], as in our tokenizer
    berts = [0, 100, 101, 102, 103]        # the same tokens in Google's BERT vocabulary
    with _seeded(401):
        cases = [
            ("512 sequences of up to 128 tokens with [CLS], [SEP] and padding; vocabulary 1,000, "
             "special ids 0-4", _mlm_batch(512, 128, 1000, ours, 0, 2, 3), 1000, 4, ours, 0.15),
            ("BERT's own ids: [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103; vocabulary "
             "30,522; mlm_probability 0.3", _mlm_batch(256, 64, 30522, berts, 0, 101, 102), 30522,
             103, berts, 0.3),
            ("a tiny vocabulary of 12 ids, 5 of them special: random tokens must avoid them",
             _mlm_batch(512, 32, 12, ours, 0, 2, 3), 12, 4, ours, 0.15),
            ("a sequence without any special token", torch.randint(5, 500, (1, 4000)), 500, 4, ours, 0.15),
            ("only [CLS], [SEP] and padding: nothing can be selected",
             torch.tensor([[2, 3, 3, 0, 0, 0], [2, 3, 3, 0, 0, 0]]), 1000, 4, ours, 0.15),
        ]
    n = len(cases)
    with _seeded(402):
        for i, (label, ids, vocab, mask_id, special, p) in enumerate(cases, 1):
            args = f"input_ids of shape {tuple(ids.shape)}, vocab_size={vocab:,}, mask_token_id={mask_id}, " \
                   f"special_token_ids={special}, mlm_probability={p}"
            ref_counts = _mask_counts(ids, *reference(ids, vocab, mask_id, special, p), mask_id)
            given = ids.clone()
            out = _call_student(name, mask_tokens_fn, (given, vocab, mask_id, list(special), p), failure=(
                f"{name} failed on case {i} of {n} ({label}):\n  for input: {args}\n"
                f"  expected:  (masked_ids, labels), two tensors of shape {tuple(ids.shape)}"))
            fail = functools.partial(_check_failed, name, i, n, label, args)
            shape = tuple(ids.shape)
            if not (isinstance(out, (tuple, list)) and len(out) == 2
                    and all(isinstance(t, Tensor) for t in out)):
                raise fail(f"(masked_ids, labels), two tensors of shape {shape}", describe(out),
                           "return a tuple of two tensors: `return masked, labels`")
            masked, labels = out
            for what, t in (("masked_ids", masked), ("labels", labels)):
                if tuple(t.shape) != shape:
                    raise fail(f"{what} of shape {shape}", f"shape {tuple(t.shape)}",
                               f"{what} must have the shape of input_ids")
                if t.dtype.is_floating_point or t.dtype == torch.bool:
                    raise fail(f"{what} as integer token ids (torch.long)", f"dtype {t.dtype}",
                               f"{what} holds token ids: keep the dtype of input_ids (torch.long)")
            if not torch.equal(given, ids):
                raise fail("input_ids left as they were", "input_ids changed in place",
                           "your function modified its input; work on a copy (input_ids.clone())")
            bad = (labels != IGNORE_INDEX) & (labels != ids)
            if bad.any():
                pos = tuple(int(x) for x in bad.nonzero()[0])
                hint = None
                if bool(((labels == mask_id) & bad).any()):
                    hint = ("labels hold [MASK]: they must hold the ORIGINAL id, the token the model "
                            "has to predict. Build labels from input_ids, not from the masked copy.")
                elif bool((labels[bad] == 0).all()):
                    hint = "positions without a prediction get -100 (cross-entropy's ignore_index), not 0."
                raise fail(f"labels[{pos}] = -100 or the original id {int(ids[pos])}",
                           f"labels[{pos}] = {int(labels[pos])}",
                           "labels must be the original id where a token is selected and -100 "
                           "everywhere else", hint)
            selected = labels != IGNORE_INDEX
            is_special = torch.isin(ids, torch.tensor(special))
            if (selected & is_special).any():
                pos = tuple(int(x) for x in (selected & is_special).nonzero()[0])
                raise fail("special tokens are never selected (label -100)",
                           f"the special id {int(ids[pos])} at {pos} selected",
                           "a special token ([PAD], [CLS], [SEP], ...) was selected for prediction",
                           f"exclude every id in special_token_ids (here {special}), e.g. with "
                           f"torch.isin(input_ids, torch.tensor(special_token_ids)); do not assume "
                           f"the special ids are 0-4.")
            changed = ~selected & (masked != ids)
            if changed.any():
                pos = tuple(int(x) for x in changed.nonzero()[0])
                hint = None
                if (~selected & ~is_special).sum() and changed.sum() > 0.5 * (~selected & ~is_special).sum():
                    hint = ("it looks as if the 80/10/10 replacement was applied to every token: "
                            "only the selected 15% may change.")
                elif not bool((masked[changed] == mask_id).any()):
                    hint = ("the tokens replaced by a random token have no label. Every selected token, "
                            "whether it became [MASK], a random token or stayed, keeps its original id "
                            "in labels: only the [MASK]ed tokens were labelled.")
                raise fail(f"masked_ids[{pos}] = {int(ids[pos])} (not selected: unchanged)",
                           f"masked_ids[{pos}] = {int(masked[pos])}",
                           "a token that is not selected (label -100) was changed", hint)
            rand = selected & (masked != ids) & (masked != mask_id)
            wrong_rand = rand & ((masked < 0) | (masked >= vocab) | torch.isin(masked, torch.tensor(special)))
            if wrong_rand.any():
                pos = tuple(int(x) for x in wrong_rand.nonzero()[0])
                raise fail("random replacements are ordinary tokens: not special, in [0, vocab_size)",
                           f"masked_ids[{pos}] = {int(masked[pos])}",
                           "a random replacement is a special token or lies outside the vocabulary",
                           f"draw the random tokens among the ids in [0, {vocab}) that are not in "
                           f"special_token_ids = {special}.")
            eligible = int((~is_special).sum())
            if eligible == 0:
                continue
            c = _mask_counts(ids, masked, labels, mask_id)
            n_allowed = vocab - len(special)
            # a random draw can hit the original token: it then counts as "kept"
            stats = [("share of the non-special tokens selected", c["selected"], eligible, p,
                      ref_counts["selected"] / eligible)]
            if c["selected"]:
                expect = {"mask": 0.8, "random": 0.1 * (1 - 1 / n_allowed), "kept": 0.1 + 0.1 / n_allowed}
                words = {"mask": "selected tokens replaced by [MASK]",
                         "random": "selected tokens replaced by a random token",
                         "kept": "selected tokens left unchanged"}
                stats += [(f"share of the {words[k]}", c[k], c["selected"], expect[k],
                           ref_counts[k] / max(ref_counts["selected"], 1)) for k in ("mask", "random", "kept")]
            for what, k, total, q, ref in stats:
                share, sd = k / total, math.sqrt(q * (1 - q) / total)
                if abs(share - q) > 5 * sd + 0.002:
                    hint = None
                    if what.startswith("share of the selected tokens replaced by [MASK]") and share > 0.97:
                        hint = ("every selected token became [MASK]. Draw a second, independent random "
                                "number per token: below 0.8 -> [MASK], 0.8 to 0.9 -> a random token, "
                                "above 0.9 -> unchanged (reusing the selection's number gives 100% [MASK]).")
                    elif "non-special tokens selected" in what and abs(share - 0.8 * p) < 5 * sd + 0.002:
                        hint = ("only the [MASK]ed tokens were labelled: the random and unchanged ones "
                                "are selected too and need their label.")
                    elif "non-special tokens selected" in what and abs(share - p) > 0.2 * p:
                        hint = (f"select each non-special token with probability mlm_probability, the "
                                f"argument (here {p}), not a fixed 0.15.")
                    raise fail(f"{what} ≈ {q:.3f} (bertbook's mask_tokens on this input: {ref:.3f})",
                               f"{share:.3f} ({k:,} of {total:,})",
                               f"{share:.3f} is more than 5 standard deviations ({sd:.4f}) away "
                               f"from {q:.3f}", hint)
            if i == 1:  # dynamic masking: a second call draws a new mask
                again = mask_tokens_fn(ids.clone(), vocab, mask_id, list(special), p)
                if torch.equal(again[1], labels):
                    raise fail("a new random mask on every call", "the same mask twice",
                               "two calls selected exactly the same tokens",
                               "do not set a seed inside the function: BERT draws a fresh mask for "
                               "every batch (dynamic masking), from torch's random stream.")
    print(f"✓ {name}: {n} cases passed")


def _nsp_documents(lengths: Sequence[int]) -> list:
    return [[f"doc {d}, sentence {s}." for s in range(n)] for d, n in enumerate(lengths)]


def check_nsp_pair(sample_nsp_pair: Callable[..., Tuple[str, str, int]]) -> None:
    """Exercise 4.2: ``sample_nsp_pair(documents, d, i, rng) -> (a, b, label)``: A is sentence
    ``i`` of document ``d`` (never its last sentence); with probability 1/2 B is a random sentence
    of another document and label 1, otherwise B is sentence ``i + 1`` and label 0 (Hugging
    Face's ``next_sentence_label``). All randomness comes from ``rng`` (a ``random.Random``)."""
    name = "check_nsp_pair"
    if not callable(sample_nsp_pair):
        raise ExerciseFailed(f"{name}: expected a function, got {type(sample_nsp_pair).__name__}")
    cases = [("6 documents of 3 to 12 sentences", _nsp_documents([3, 12, 5, 8, 4, 10])),
             ("only 2 documents: a random B must come from the other one", _nsp_documents([6, 9])),
             ("a one-sentence document among others (it can only give a random B)",
              _nsp_documents([7, 1, 5, 4]))]
    n_draws = 2000
    for ci, (label, docs) in enumerate(cases, 1):
        where = {s: (d, k) for d, doc in enumerate(docs) for k, s in enumerate(doc)}
        inputs = f"documents of {[len(d) for d in docs]} sentences (sentence k of document d is " \
                 f"'doc d, sentence k.'), {n_draws:,} calls with random (d, i)"
        fail = functools.partial(_check_failed, name, ci, len(cases), label, inputs)
        driver = random.Random(400 + ci)
        queries = [(d, driver.randrange(len(docs[d]) - 1))
                   for d in (driver.choice([j for j, doc in enumerate(docs) if len(doc) > 1])
                             for _ in range(n_draws))]
        runs = []
        for _ in range(2):  # twice with the same seed: the answers must be the same
            rng, answers = random.Random(4), []
            for d, i in queries:
                answers.append(_call_student(name, sample_nsp_pair, (docs, d, i, rng), failure=(
                    f"{name} failed on case {ci} of {len(cases)} ({label}):\n"
                    f"  for input: documents of {[len(x) for x in docs]} sentences, d={d}, i={i}\n"
                    f"  expected:  (a, b, label)")))
            runs.append(answers)
        answers = runs[0]
        for (d, i), out in zip(queries, answers):  # the form of every answer first
            at = f"d={d}, i={i}"
            if not (isinstance(out, (tuple, list)) and len(out) == 3):
                raise fail("(a, b, label)", f"{describe(out)} for {at}",
                           "return a tuple of three: `return a, b, label`")
            a, b, lab = out
            if isinstance(lab, bool) or not isinstance(lab, int) or lab not in (0, 1):
                raise fail("label 0 or 1 (a Python int)", f"label {lab!r} for {at}",
                           "the label must be the int 0 (B follows A) or 1 (B is random)")
            if a != docs[d][i]:
                raise fail(f"a = {docs[d][i]!r} for {at}", f"a = {a!r}",
                           "A must be sentence i of document d: documents[d][i]")
            if not isinstance(b, str) or b not in where:
                raise fail("b is a sentence of the documents", f"b = {b!r} for {at}",
                           "B must be one sentence (a string) taken from the documents")
        if all((where[o[1]] == (d, i + 1)) == (o[2] == 1) for (d, i), o in zip(queries, answers)):
            (d, i), (a, b, lab) = next(((q, o) for q, o in zip(queries, answers) if o[2] == 1))
            raise fail(f"label 0 with the next sentence as b (for d={d}, i={i})",
                       f"label 1 with b = {b!r}, the next sentence (and label 0 for every random b)",
                       "the labels are the wrong way round",
                       "your labels are swapped: in Hugging Face's convention (and ours) "
                       "0 = B really follows A (IsNext), 1 = B is random (NotNext).")
        for (d, i), (a, b, lab) in zip(queries, answers):
            at = f"d={d}, i={i}"
            bd, bk = where[b]
            if lab == 0 and (bd, bk) != (d, i + 1):
                raise fail(f"with label 0, b = the next sentence {docs[d][i + 1]!r} (for {at})",
                           f"b = {b!r}, label 0", "label 0 means B is the sentence right after A")
            if lab == 1 and bd == d:
                raise fail(f"with label 1, b from a document other than d={d}", f"b = {b!r} (for {at})",
                           "a random B came from A's own document",
                           "pick the random document among the others (j != d): a sentence from "
                           "A's own document may be about the same thing, or even the real next one.")
        if runs[0] != runs[1]:
            raise fail("the same answers for the same rng seed", "different answers",
                       "two runs with rng = random.Random(4) gave different pairs",
                       "draw every random number from the rng argument (rng.random(), rng.choice, "
                       "rng.randrange), not from the module `random` or torch.")
        k = sum(o[2] for o in answers)
        share, sd = k / n_draws, math.sqrt(0.25 / n_draws)
        if abs(share - 0.5) > 5 * sd:
            raise fail("about half of the pairs random (label 1)", f"{share:.3f} ({k:,} of {n_draws:,})",
                       f"{share:.3f} is more than 5 standard deviations ({sd:.4f}) away from 0.5",
                       "choose a random B with probability 1/2: `if rng.random() < 0.5:`")
        rand_docs = {where[o[1]][0] for o in answers if o[2] == 1}
        rand_pos = {where[o[1]][1] for o in answers if o[2] == 1}
        if len(rand_docs) < len(docs):
            missing = sorted(set(range(len(docs))) - rand_docs)
            raise fail("random B's from every document", f"no random B from documents {missing}",
                       "some documents never gave a random B",
                       "choose the other document uniformly at random, e.g. "
                       "rng.choice([j for j in range(len(documents)) if j != d]).")
        if len(rand_pos) < 3:
            raise fail("random B's from any sentence of the other document",
                       f"random B's only at sentence positions {sorted(rand_pos)}",
                       "the random B is always the same sentence of its document",
                       "pick a random sentence of the other document, e.g. rng.choice(documents[j]).")
    print(f"✓ {name}: {len(cases)} cases passed")


# ---------------------------------------------------------------------------------------------
# chapter 7: distilling a fine-tuned classifier
# ---------------------------------------------------------------------------------------------

__all__ += ["check_classification_kd_loss"]


def _reference_kd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
                       alpha: float, temperature: float) -> Tensor:
    from .distill import classification_kd_loss

    return classification_kd_loss(student_logits, teacher_logits, labels, alpha, temperature)


def _kl_teacher_student(s: Tensor, t: Tensor, temperature: float) -> Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) summed over classes, averaged over rows (no T² factor)."""
    log_p_t, log_p_s = F.log_softmax(t / temperature, -1), F.log_softmax(s / temperature, -1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean()


def _kd_variant(mistake: str):
    def wrong(s: Tensor, t: Tensor, y: Tensor, alpha: float, temperature: float) -> Tensor:
        T = temperature
        ce = F.cross_entropy(s, y)
        kl = _kl_teacher_student(s, t, T) * T ** 2
        if mistake == "no_T2":
            kl = _kl_teacher_student(s, t, T)
        elif mistake == "divided_T2":
            kl = _kl_teacher_student(s, t, T) / T ** 2
        elif mistake == "swapped":
            log_p_t, log_p_s = F.log_softmax(t / T, -1), F.log_softmax(s / T, -1)
            kl = (log_p_s.exp() * (log_p_s - log_p_t)).sum(-1).mean() * T ** 2
        elif mistake == "alpha_swapped":
            return (1 - alpha) * ce + alpha * kl
        elif mistake == "student_not_softened":
            log_p_t, log_p_s = F.log_softmax(t / T, -1), F.log_softmax(s, -1)
            kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean() * T ** 2
        elif mistake == "teacher_not_softened":
            log_p_t, log_p_s = F.log_softmax(t, -1), F.log_softmax(s / T, -1)
            kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean() * T ** 2
        elif mistake == "mean_over_classes":
            kl = kl / s.shape[-1]
        elif mistake == "ce_softened":
            ce = F.cross_entropy(s / T, y)
        elif mistake == "soft_cross_entropy":  # H(p_t, p_s) without the teacher's entropy: not 0 at s = t
            log_p_t, log_p_s = F.log_softmax(t / T, -1), F.log_softmax(s / T, -1)
            kl = -(log_p_t.exp() * log_p_s).sum(-1).mean() * T ** 2
        return alpha * ce + (1 - alpha) * kl
    return wrong


def check_classification_kd_loss(kd_loss: Callable[..., Tensor]) -> None:
    """Exercise 7.1: ``kd_loss(student_logits, teacher_logits, labels, alpha, temperature)``:
    α·CE(student_logits, labels) + (1 − α)·T²·KL(softmax(t/T) ‖ softmax(s/T)), the KL summed over
    the classes and averaged over the batch, as ``bertbook.distill.classification_kd_loss``.
    Returns a scalar tensor."""
    with _seeded(701):
        def logits(b: int, c: int, scale: float = 2.0) -> Tensor:
            return scale * torch.randn(b, c)

        cases = [
            Case("B=6, 2 classes, alpha=0.5, T=2", (logits(6, 2), logits(6, 2), torch.randint(0, 2, (6,)), 0.5, 2.0)),
            Case("B=8, 5 classes, alpha=0.5, T=4 (a high temperature)",
                 (logits(8, 5), logits(8, 5), torch.randint(0, 5, (8,)), 0.5, 4.0)),
            Case("alpha=0: the teacher's soft labels only, T=2",
                 (logits(6, 3), logits(6, 3), torch.randint(0, 3, (6,)), 0.0, 2.0)),
            Case("alpha=0.8: mostly the hard labels, T=3",
                 (logits(5, 4), logits(5, 4), torch.randint(0, 4, (5,)), 0.8, 3.0)),
            Case("T=1 (no softening), alpha=0.3",
                 (logits(7, 2), logits(7, 2), torch.randint(0, 2, (7,)), 0.3, 1.0)),
            Case("a confident teacher (logits of size ~8), 3 classes, alpha=0.2, T=2",
                 (logits(6, 3), logits(6, 3, 8.0), torch.randint(0, 3, (6,)), 0.2, 2.0)),
            Case("one example, 2 classes, alpha=0.5, T=2",
                 (logits(1, 2), logits(1, 2), torch.tensor([1]), 0.5, 2.0)),
        ]
    hints = [
        Hint(_kd_variant("no_T2"),
             "the factor T² on the KL term is missing: the soft term's gradients shrink as 1/T², "
             "so multiply the KL by temperature ** 2 to keep its weight independent of T."),
        Hint(_kd_variant("divided_T2"), "the KL term must be *multiplied* by T², not divided by it."),
        Hint(_kd_variant("swapped"),
             "your KL goes the wrong way: KL(student ‖ teacher). Distillation uses KL(teacher ‖ student) "
             "= Σ p_t (log p_t − log p_s), the teacher's probabilities as the weights. With F.kl_div, "
             "the FIRST argument is the student's log-probabilities, the second the teacher's "
             "(F.kl_div(log_p_s, log_p_t, log_target=True))."),
        Hint(_kd_variant("alpha_swapped"),
             "alpha is on the wrong term: alpha weighs the cross-entropy with the true labels, "
             "1 − alpha the teacher's soft labels."),
        Hint(_kd_variant("student_not_softened"),
             "the student's logits must be divided by T too: both distributions are softmax(logits / T)."),
        Hint(_kd_variant("teacher_not_softened"),
             "the teacher's logits must be divided by T too: both distributions are softmax(logits / T)."),
        Hint(_kd_variant("mean_over_classes"),
             "your KL is averaged over the classes as well as the examples (F.kl_div's default "
             "reduction='mean'): sum over the classes and average over the batch, reduction='batchmean'."),
        Hint(_kd_variant("ce_softened"),
             "the cross-entropy with the true labels uses the plain logits, not logits / T."),
        Hint(_kd_variant("soft_cross_entropy"),
             "you computed the cross-entropy −Σ p_t log p_s instead of the KL divergence: subtract the "
             "teacher's entropy, i.e. use Σ p_t (log p_t − log p_s) (the gradient is the same, the value is not)."),
    ]
    run_check("check_classification_kd_loss", kd_loss, _reference_kd_loss, cases, hints, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# chapters 5 and 6: pretraining and distillation
# ---------------------------------------------------------------------------------------------

__all__ += ["check_mlm_loss_accuracy", "check_lr_schedule", "check_distillation_loss",
            "check_student_layers"]


def _reference_mlm_loss_accuracy(logits: Tensor, labels: Tensor) -> Tuple[Tensor, float]:
    # The package's MLM loss (bertbook.bert.mlm_logits_and_loss) on logits that are already computed
    # (an identity head), and the accuracy as bertbook.pretrain.evaluate_pretraining counts it.
    from .bert import mlm_logits_and_loss

    picked, loss = mlm_logits_and_loss(nn.Identity(), logits, labels, masked_positions_only=True)
    target = labels[labels != IGNORE_INDEX]
    return loss, (picked.argmax(-1) == target).float().mean().item()


def _mlm_wrong(mistake: str):
    def wrong(logits: Tensor, labels: Tensor):
        sel = labels != IGNORE_INDEX
        V = logits.shape[-1]
        loss, acc = _reference_mlm_loss_accuracy(logits, labels)
        if mistake == "acc_all_positions":  # unlabelled positions counted as wrong answers
            acc = (logits.argmax(-1) == labels).float().mean().item()
        elif mistake == "acc_count":
            acc = float((logits.argmax(-1)[sel] == labels[sel]).sum())
        elif mistake == "loss_all_positions":  # -100 replaced by token 0 and every position counted
            loss = F.cross_entropy(logits.reshape(-1, V), labels.clamp(min=0).reshape(-1))
        elif mistake == "loss_per_sequence":  # mean per sequence, then mean over the batch
            per = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
            per = (per * sel).sum(1) / sel.sum(1)
            loss = per.mean()
        elif mistake == "loss_sum":
            loss = F.cross_entropy(logits[sel], labels[sel], reduction="sum")
        elif mistake == "loss_over_all_count":  # summed over the masked positions, divided by B·L
            loss = F.cross_entropy(logits[sel], labels[sel], reduction="sum") / labels.numel()
        return loss, acc
    return wrong


def _mlm_case(b: int, l: int, v: int, p: float, pad: Sequence[int] = (), scale: float = 3.0):
    """Random logits (B, L, V) and labels: each non-padding position labelled with probability p;
    ``pad[i]`` padding positions at the end of row i. A third of the labelled positions are made
    right (their label is the argmax), so that the accuracy is neither 0 nor 1."""
    logits = scale * torch.randn(b, l, v)
    labels = torch.full((b, l), IGNORE_INDEX, dtype=torch.long)
    chosen = torch.rand(b, l) < p
    for i, n in enumerate(pad):
        if n:
            chosen[i, l - n:] = False
            logits[i, l - n:] = 1e4 * torch.randn(n, v)  # garbage at padding: must not count
    labels[chosen] = torch.randint(0, v, (int(chosen.sum()),))
    right = chosen & (torch.rand(b, l) < 0.35)
    labels[right] = logits.argmax(-1)[right]
    return logits, labels


def check_mlm_loss_accuracy(mlm_loss_accuracy: Callable[[Tensor, Tensor], Tuple[Tensor, float]]) -> None:
    """Exercise 5.1: ``mlm_loss_accuracy(logits, labels) -> (loss, accuracy)``: the mean
    cross-entropy and the accuracy of the argmax over the positions whose label is not -100 only.
    logits (B, L, V), labels (B, L); the loss is a 0-d tensor, the accuracy a number in [0, 1]."""
    with _seeded(501):
        one = torch.full((2, 4), IGNORE_INDEX)
        one[1, 2] = 3
        full_logits = 3 * torch.randn(2, 6, 9)
        cases = [
            Case("B=2, L=6, V=9, about 30% of the positions labelled", _mlm_case(2, 6, 9, 0.3)),
            Case("padding at the end of each row (its logits are huge garbage: they must not count)",
                 _mlm_case(3, 8, 11, 0.4, pad=(3, 0, 5))),
            Case("a single labelled position", (3 * torch.randn(2, 4, 7), one)),
            Case("every position labelled", (full_logits, full_logits.argmax(-1).roll(1, dims=1))),
            Case("rows with very different numbers of labelled positions",
                 _mlm_case(4, 16, 20, 0.5, pad=(14, 0, 10, 2))),
            Case("B=8, L=32, V=100, 15% labelled, as in BERT", _mlm_case(8, 32, 100, 0.15, pad=(0, 4, 9, 0, 20, 0, 1, 0))),
        ]
    hints = [
        Hint(_mlm_wrong("acc_all_positions"),
             "your accuracy counts every position, and an unlabelled one (label -100) can never be "
             "right: compare the argmax with the label only where labels != -100, and divide by "
             "the number of those positions."),
        Hint(_mlm_wrong("acc_count"),
             "your accuracy is the number of correct positions: divide by the number of labelled "
             "positions to get a fraction."),
        Hint(_mlm_wrong("loss_all_positions"),
             "your loss counts the unlabelled positions (as if their label were token 0): select the "
             "positions with labels != -100 first, or pass ignore_index=-100 to F.cross_entropy."),
        Hint(_mlm_wrong("loss_per_sequence"),
             "you averaged the loss per sequence and then over the batch: a sequence with 1 masked "
             "token then weighs as much as one with 20. Average over all labelled positions of the "
             "batch at once (every masked token counts the same)."),
        Hint(_mlm_wrong("loss_sum"),
             "your loss is the sum over the labelled positions: take the mean (F.cross_entropy's "
             "default reduction)."),
        Hint(_mlm_wrong("loss_over_all_count"),
             "you divided the summed loss by all B·L positions: divide by the number of labelled "
             "positions (labels != -100)."),
    ]
    run_check("check_mlm_loss_accuracy", mlm_loss_accuracy, _reference_mlm_loss_accuracy, cases, hints)


def _reference_lr_schedule(peak_lr: float, warmup_steps: int, total_steps: int) -> Tensor:
    """The learning rate of every optimiser step 0..total_steps under transformers'
    get_linear_schedule_with_warmup, which bertbook.training.Optimizer uses."""
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(()))], lr=peak_lr)
    sched = get_linear_schedule_with_warmup(opt, warmup_steps, total_steps)
    lrs = []
    for _ in range(total_steps + 1):
        lrs.append(opt.param_groups[0]["lr"])  # the rate the next opt.step() uses
        opt.step()
        sched.step()
    return torch.tensor(lrs, dtype=torch.float64)


def _all_steps(lr_at: Callable[[int, float, int, int], float]) -> Callable[[float, int, int], Tensor]:
    def schedule(peak_lr: float, warmup_steps: int, total_steps: int) -> Tensor:
        return torch.tensor([float(lr_at(s, peak_lr, warmup_steps, total_steps))
                             for s in range(total_steps + 1)], dtype=torch.float64)
    schedule.__name__ = getattr(lr_at, "__name__", "your function")
    return schedule


def _lr_wrong(mistake: str):
    def lr_at(step: int, peak: float, w: int, n: int) -> float:
        if mistake == "no_warmup":
            return peak * max(0.0, (n - step) / max(1, n - w))
        if step < w:
            if mistake == "warmup_plus_one":
                return peak * (step + 1) / w
            return peak * step / w
        if mistake == "no_decay":
            return peak
        if mistake == "decay_over_all_steps":
            return peak * max(0.0, (n - step) / n)
        if mistake == "decay_to_end_plus_one":
            return peak * max(0.0, (n - step + 1) / max(1, n - w + 1))
        return peak * max(0.0, (n - step) / max(1, n - w))
    return _all_steps(lr_at)


def check_lr_schedule(lr_at: Callable[[int, float, int, int], float]) -> None:
    """Exercise 5.2: ``lr_at(step, peak_lr, warmup_steps, total_steps)``: the learning rate of
    optimiser step ``step`` (0 = the first update) under linear warm-up from 0 to ``peak_lr``
    over ``warmup_steps`` steps, then linear decay to 0 at ``total_steps`` — exactly
    ``transformers.get_linear_schedule_with_warmup``. Checked at every step 0..total_steps."""
    cases = [
        Case("peak 1e-3, 10 warm-up steps of 100", (1e-3, 10, 100)),
        Case("peak 1.0, 1 warm-up step of 10", (1.0, 1, 10)),
        Case("no warm-up: peak 5e-4, 0 of 50", (5e-4, 0, 50)),
        Case("BERT's proportions: 10,000 warm-up steps of 1,000,000, scaled down to 40 of 400",
             (1e-4, 40, 400)),
        Case("warm-up over all but the last step: 99 of 100", (2e-3, 99, 100)),
    ]
    hints = [
        Hint(_lr_wrong("warmup_plus_one"),
             "your warm-up is one step ahead: the first update (step 0) uses learning rate 0 and step s "
             "of the warm-up uses peak_lr · s / warmup_steps."),
        Hint(_lr_wrong("no_warmup"), "the warm-up is missing: during the first warmup_steps steps the "
             "rate grows linearly from 0 to peak_lr."),
        Hint(_lr_wrong("no_decay"), "the decay is missing: after the warm-up the rate falls linearly "
             "from peak_lr to 0 at total_steps."),
        Hint(_lr_wrong("decay_over_all_steps"),
             "your decay starts from the beginning (peak_lr · (total − s) / total), so the rate is "
             "already below peak_lr when the warm-up ends: the decay runs over the remaining "
             "total_steps − warmup_steps steps only."),
        Hint(_lr_wrong("decay_to_end_plus_one"),
             "your decay is off by one: the rate must be exactly peak_lr at s = warmup_steps and 0 at "
             "s = total_steps."),
    ]
    run_check("check_lr_schedule", _all_steps(lr_at), _reference_lr_schedule, cases, hints,
              atol=1e-9, rtol=1e-6)


def _reference_distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    from .distill import soft_target_loss

    return soft_target_loss(student_logits, teacher_logits, temperature)


def _distill_wrong(mistake: str):
    def wrong(s: Tensor, t: Tensor, T: float) -> Tensor:
        ts, tt, k = T, T, T ** 2
        if mistake == "no_T2":
            k = 1.0
        elif mistake == "no_temperature":  # T² kept, but the softmaxes are not softened
            ts = tt = 1.0
        elif mistake == "student_only":
            tt = 1.0
        elif mistake == "teacher_only":
            ts = 1.0
        log_ps, log_pt = F.log_softmax(s / ts, -1), F.log_softmax(t / tt, -1)
        if mistake == "reversed":
            return k * (log_ps.exp() * (log_ps - log_pt)).sum(-1).mean()
        if mistake == "cross_entropy":
            return -k * (log_pt.exp() * log_ps).sum(-1).mean()
        if mistake == "probs_as_input":  # F.kl_div(softmax(s/T), softmax(t/T)): the input must be log-probs
            return k * F.kl_div(log_ps.exp(), log_pt.exp(), reduction="batchmean")
        kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1)
        if mistake == "mean_over_vocab":
            return k * kl.mean() / s.shape[-1]
        if mistake == "sum_over_rows":
            return k * kl.sum()
        return k * kl.mean()
    return wrong


def check_distillation_loss(distillation_loss: Callable[[Tensor, Tensor, float], Tensor]) -> None:
    """Exercise 6.1: ``distillation_loss(student_logits, teacher_logits, temperature)``: the soft-target
    term of DistilBERT, T² · KL(softmax(t/T) ‖ softmax(s/T)), the KL summed over the vocabulary and
    averaged over the N rows (masked positions), as ``bertbook.distill.soft_target_loss``.
    logits (N, V); returns a 0-d tensor."""
    with _seeded(601):
        s1, t1 = 2 * torch.randn(6, 30), 4 * torch.randn(6, 30)
        same = 3 * torch.randn(4, 50)
        cases = [
            Case("N=6 masked positions, V=30, T=2", (s1, t1, 2.0)),
            Case("the same logits at T=4", (s1, t1, 4.0)),
            Case("T=1: no softening", (2 * torch.randn(5, 12), 4 * torch.randn(5, 12), 1.0)),
            Case("a confident teacher (logits of size ~20), V=100, T=8",
                 (torch.randn(8, 100), 20 * torch.randn(8, 100), 8.0)),
            Case("a student equal to the teacher: the loss must be 0", (same.clone(), same.clone(), 2.0)),
            Case("huge logits (±300): use log_softmax, not softmax().log()",
                 (300 * torch.randn(3, 20), 300 * torch.randn(3, 20), 2.0)),
            Case("one masked position, T=0.5 (sharper than the model)",
                 (3 * torch.randn(1, 10), 3 * torch.randn(1, 10), 0.5)),
        ]
    hints = [
        Hint(_distill_wrong("no_T2"),
             "the factor T² is missing: the KL of softened distributions has gradients about 1/T² as "
             "large, so DistilBERT multiplies it by temperature ** 2."),
        Hint(_distill_wrong("no_temperature"),
             "your softmaxes are not softened: divide both the student's and the teacher's logits by "
             "the temperature before the (log-)softmax."),
        Hint(_distill_wrong("student_only"),
             "only the student's logits were divided by T: the teacher's must be softened too."),
        Hint(_distill_wrong("teacher_only"),
             "only the teacher's logits were divided by T: the student's must be softened too."),
        Hint(_distill_wrong("reversed"),
             "your KL goes the wrong way, KL(student ‖ teacher). Distillation uses KL(teacher ‖ student) "
             "= Σ p_t (log p_t − log p_s). With F.kl_div the FIRST argument is the student's "
             "log-probabilities and the second the teacher's: F.kl_div(log_p_s, log_p_t, log_target=True)."),
        Hint(_distill_wrong("cross_entropy"),
             "you computed the soft cross-entropy −Σ p_t log p_s: it has the same gradient but it is "
             "not 0 when the student equals the teacher. Subtract the teacher's entropy, "
             "Σ p_t (log p_t − log p_s)."),
        Hint(_distill_wrong("probs_as_input"),
             "F.kl_div expects LOG-probabilities as its first argument: pass log_softmax(s / T), not softmax."),
        Hint(_distill_wrong("mean_over_vocab"),
             "your KL is averaged over the vocabulary too (F.kl_div's reduction='mean'): sum over the "
             "vocabulary and average over the rows (reduction='batchmean')."),
        Hint(_distill_wrong("sum_over_rows"),
             "your loss is summed over the rows: average it over the masked positions."),
    ]
    run_check("check_distillation_loss", distillation_loss, _reference_distillation_loss, cases, hints,
              atol=1e-4, rtol=1e-4)


def _layers_wrong(mistake: str):
    def wrong(n: int) -> list:
        k = math.ceil(n / 2)
        if mistake == "even":
            return list(range(0, n, 2))
        if mistake == "odd":
            return list(range(1, n, 2))
        if mistake == "floor_k":
            k = max(1, n // 2)
        if k == 1:
            return [0]
        step = (n - 1) / (k - 1)
        if mistake == "half_up":
            return [math.floor(i * step + 0.5) for i in range(k)]
        if mistake == "truncate":
            return [int(i * step) for i in range(k)]
        return [round(i * step) for i in range(k)]
    return wrong


def _as_list(student_layers: Callable[[int], Sequence[int]]) -> Callable[[int], list]:
    def layers(num_teacher_layers: int):
        out = student_layers(num_teacher_layers)
        if isinstance(out, Tensor):
            out = out.tolist()
        return list(out) if isinstance(out, (list, tuple, range)) else out
    layers.__name__ = getattr(student_layers, "__name__", "your function")
    return layers


def check_student_layers(student_layers: Callable[[int], Sequence[int]]) -> None:
    """Exercise 6.2: ``student_layers(num_teacher_layers)``: the teacher layers that initialise the
    student, as ``bertbook.distilbert.default_student_layers``: k = ⌈n/2⌉ layers at
    round(i·(n − 1)/(k − 1)), i = 0..k−1 (Python's round), so the first and last are always kept."""
    from .distilbert import default_student_layers

    cases = [Case(f"a {n}-layer teacher{note}", (n,)) for n, note in (
        (12, " (BERT-base: DistilBERT took [0, 2, 4, 7, 9, 11])"), (4, " (the book's teacher)"),
        (6, ""), (24, " (BERT-large)"), (5, " (an odd number)"), (10, ""), (2, ""), (1, ""))]
    hints = [
        Hint(_layers_wrong("even"), "every other layer from 0 (0, 2, 4, ...) never reaches the teacher's "
             "last layer, the one whose output the MLM head was trained on: spread the k layers evenly "
             "from 0 to n − 1."),
        Hint(_layers_wrong("odd"), "layers 1, 3, 5, ... skip the teacher's first layer: spread the k "
             "layers evenly from 0 to n − 1, both ends included."),
        Hint(_layers_wrong("floor_k"), "for an odd number of teacher layers the student gets ⌈n/2⌉ "
             "layers (math.ceil(n / 2)), not n // 2."),
        Hint(_layers_wrong("half_up"), "your positions are right except at exact halves: Python's round "
             "rounds a half to the even integer (round(2.5) == 2), which is what the package uses."),
        Hint(_layers_wrong("truncate"), "int() truncates (int(6.6) == 6): round the positions "
             "i·(n − 1)/(k − 1) to the nearest integer with round()."),
    ]
    run_check("check_student_layers", _as_list(student_layers), default_student_layers, cases, hints)
