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

from .attention import MultiHeadAttention, scaled_dot_product_attention
from .bert import BertConfig, BertEmbeddings, BertForPreTraining
from .encoder import Encoder, EncoderLayer

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


def _run_cases(name, student, reference, cases, hints, atol, rtol) -> int:
    fn_name = getattr(student, "__name__", "your function")
    for i, case in enumerate(cases, 1):
        args, kwargs = _copy(case.args, case.kwargs)
        with torch.no_grad():
            expected = reference(*args, **kwargs)
        args, kwargs = _copy(case.args, case.kwargs)
        try:
            with torch.no_grad():
                got = student(*args, **kwargs)
        except NotImplementedError:
            raise ExerciseFailed(
                f"{name}: `{fn_name}` is not implemented yet (it raised NotImplementedError). "
                f"Replace `raise NotImplementedError()` with your code and run its cell again."
            ) from None
        except Exception as err:  # the student's bug: show it together with the input
            raise ExerciseFailed(
                f"{name} failed on case {i} of {len(cases)} ({case.label}):\n"
                f"  for input: {_describe_inputs(case, reference)}\n"
                f"  expected:  {describe(expected)}\n"
                f"  got:       an exception, {type(err).__name__}: {err}"
            ) from err
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


def _reference_masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    # The two lines inside bertbook.attention.scaled_dot_product_attention.
    keep = _keep(mask)
    weights = scores.masked_fill(~keep, torch.finfo(scores.dtype).min).softmax(dim=-1)
    return weights.masked_fill(~keep, 0.0)


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
