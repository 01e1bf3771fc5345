"""Looking at attention (chapter 8): measure what each head does, and draw it.

A head's attention weights form, for every query token i, a distribution over the key tokens j.
We summarise a head by a few numbers averaged over the real (non-padding) query tokens of a
batch of sentences, after Clark et al. (2019), "What does BERT look at?":

* the mass on a special token such as [CLS] or [SEP]: sum of p(i -> j) over the j holding it;
* the mass on the previous token p(i -> i-1), on the next token p(i -> i+1), on itself p(i -> i);
* how broad the distribution is: its entropy divided by log(number of real keys), so that
  1 means uniform over the sentence and 0 means all mass on one token.

Shapes: Ly layers, B batch, H heads, L sequence length. Attentions come as our models return
them (`output_attentions=True`): a list of Ly tensors (B, H, L, L), rows = queries.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .attention import keep_mask
from .device import evaluating

Attentions = Union[Tensor, Sequence[Tensor]]

POSITIONAL_PATTERNS = ("previous", "self", "next", "broad")


def stack_attentions(attentions: Attentions) -> Tensor:
    """A list of Ly tensors (B, H, L, L), or one (B, H, L, L), or (Ly, B, H, L, L) -> (Ly, B, H, L, L)
    in float32."""
    if isinstance(attentions, Tensor):
        a = attentions.unsqueeze(0) if attentions.dim() == 4 else attentions
    else:
        if len(attentions) == 0:
            raise ValueError("no attention tensors given (did you pass output_attentions=True?)")
        a = torch.stack(list(attentions))
    if a.dim() != 5 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"expected attentions of shape (layers, batch, heads, L, L), got {tuple(a.shape)}")
    return a.detach().float()


def _mean_over(values: Tensor, weight: Tensor) -> Tensor:
    """values (Ly, B, H, n), weight (B, n) of 0/1 -> (Ly, H): the mean over the weighted queries."""
    w = weight.to(values.dtype)[None, :, None, :]
    total = w.sum(dim=(1, 3))
    if float(total.max()) == 0:
        raise ValueError("no query token to average over (is the attention mask all zeros?)")
    return (values * w).sum(dim=(1, 3)) / total


def attention_pattern_scores(
    attentions: Attentions,
    input_ids: Tensor,
    attention_mask: Optional[Tensor] = None,
    special_ids: Optional[Mapping[str, Union[int, Sequence[int]]]] = None,
) -> Dict[str, Tensor]:
    """Per-head pattern scores, each a (layers, heads) tensor averaged over the real query tokens.

    Keys: one per entry of `special_ids` (e.g. {"[CLS]": 101, "[SEP]": 102}, or a list of ids per
    name for a group such as punctuation): the attention mass on the tokens with that id (those
    ids); "previous", "self", "next": the weight on position i-1, i, i+1 (queries without such a
    real neighbour are left out); "broad": the normalised entropy (1 = uniform).
    """
    a = stack_attentions(attentions)
    n_layers, batch, heads, length, _ = a.shape
    if input_ids.shape != (batch, length):
        raise ValueError(f"input_ids have shape {tuple(input_ids.shape)}, attentions expect {(batch, length)}")
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else keep_mask(attention_mask)
    if mask.shape != input_ids.shape:
        raise ValueError("attention_mask must have the shape of input_ids")
    mask = mask.to(a.device)
    input_ids = input_ids.to(a.device)
    keys = mask[:, None, None, :].to(a.dtype)  # (B, 1, 1, L): padding keys carry no mass
    scores: Dict[str, Tensor] = {}
    for name, token_id in (special_ids or {}).items():
        wanted = torch.as_tensor(token_id, device=input_ids.device).reshape(-1)
        on_token = (torch.isin(input_ids, wanted) & mask)[None, :, None, None, :].to(a.dtype)
        scores[name] = _mean_over((a * on_token).sum(-1), mask)
    pairs = mask[:, 1:] & mask[:, :-1]  # both i and i+1 are real tokens
    # diagonal(offset=-1)[k] = a[k+1, k]: query k+1 looking at its previous token k.
    scores["previous"] = _mean_over(a.diagonal(offset=-1, dim1=-2, dim2=-1), pairs)
    scores["self"] = _mean_over(a.diagonal(dim1=-2, dim2=-1), mask)
    scores["next"] = _mean_over(a.diagonal(offset=1, dim1=-2, dim2=-1), pairs)
    p = a * keys
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)  # (Ly, B, H, L)
    n_keys = mask.sum(-1).to(a.dtype)  # (B,)
    norm = torch.log(n_keys.clamp_min(2.0))[None, :, None, None]
    scores["broad"] = _mean_over(entropy / norm, mask)
    return scores


@torch.no_grad()
def attentions_for(model, tokenizer, texts: Sequence[str], max_length: int = 64):
    """Run `model` in eval mode on its own device (the inputs are moved there) on `texts`, padded
    to the longest and truncated at `max_length`; the caller's model keeps its mode. Returns
    (encoding with input_ids and attention_mask on the CPU, list of Ly (B, H, L, L) attention
    tensors on the CPU)."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    device = next(model.parameters()).device
    with evaluating([model]):
        out = model(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                    output_attentions=True)
    return enc, [a.float().cpu() for a in out.attentions]


def top_heads(scores: Mapping[str, Tensor], k: int = 1) -> Dict[str, List[Tuple[int, int, float]]]:
    """For each pattern, the k heads with the highest score: [(layer, head, score), ...]."""
    best = {}
    for name, s in scores.items():
        values, flat = s.flatten().topk(min(k, s.numel()))
        best[name] = [(int(i) // s.shape[1], int(i) % s.shape[1], float(v)) for v, i in zip(values, flat)]
    return best


def attention_distance(att_a: Attentions, att_b: Attentions, attention_mask: Optional[Tensor] = None) -> Tensor:
    """Mean total-variation distance between every head of model a and every head of model b on the
    same input: 1/2 sum_j |p_a(i -> j) - p_b(i -> j)|, averaged over real queries i.

    Returns (La, Ha, Lb, Hb); 0 means identical attention, 1 means disjoint supports.
    """
    a, b = stack_attentions(att_a), stack_attentions(att_b)
    if a.shape[1] != b.shape[1] or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"the two models saw different inputs: {tuple(a.shape)} vs {tuple(b.shape)}")
    batch, length = a.shape[1], a.shape[-1]
    mask = torch.ones(batch, length, dtype=torch.bool) if attention_mask is None else keep_mask(attention_mask)
    mask = mask.to(a.device)
    w = mask[:, None, None, :].to(a.dtype)
    out = torch.empty(a.shape[0], a.shape[2], b.shape[0], b.shape[2])
    for la in range(a.shape[0]):
        for lb in range(b.shape[0]):
            # (B, Ha, 1, L, L) - (B, 1, Hb, L, L) -> (B, Ha, Hb, L) per query
            tv = 0.5 * (a[la][:, :, None] - b[lb][:, None]).abs().sum(-1)
            out[la, :, lb, :] = (tv * w).sum(dim=(0, 3)) / w.sum()
    return out


def plot_attention(weights: Tensor, tokens: Sequence[str], ax=None, title: Optional[str] = None,
                   cmap: str = "Blues", vmax: Optional[float] = None):
    """Heatmap of one head's (L, L) attention: row = query token, column = key token."""
    import matplotlib.pyplot as plt

    w = weights.detach().float().cpu()
    if w.dim() != 2 or w.shape[0] != w.shape[1] or w.shape[0] != len(tokens):
        raise ValueError(f"weights must be (L, L) with L = len(tokens) = {len(tokens)}, got {tuple(w.shape)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(0.3 * len(tokens) + 1.5, 0.3 * len(tokens) + 1.2))
    ax.imshow(w.numpy(), cmap=cmap, vmin=0.0, vmax=vmax if vmax is not None else float(w.max()))
    ax.set_xticks(range(len(tokens)))
    ax.set_xticklabels(tokens, rotation=90, fontsize=8)
    ax.set_yticks(range(len(tokens)))
    ax.set_yticklabels(tokens, fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_head_scores(scores: Mapping[str, Tensor], names: Optional[Sequence[str]] = None,
                     title: Optional[str] = None, annotate: Optional[bool] = None,
                     ncols: Optional[int] = None, cmap: str = "viridis"):
    """One layer x head heatmap per entry of `scores` (`ncols` per row, default up to 4), on a
    shared 0..1 colour scale, the value written in each cell when the grids are small; the entries
    may differ in shape (e.g. a teacher's and its student's). Returns the figure."""
    import matplotlib.pyplot as plt

    names = list(scores) if names is None else list(names)
    if not names:
        raise ValueError("no pattern to plot")
    missing = [n for n in names if n not in scores]
    if missing:
        raise KeyError(f"no scores for {missing}; have {list(scores)}")
    n_layers = max(scores[n].shape[0] for n in names)
    n_heads = max(scores[n].shape[1] for n in names)
    if annotate is None:
        annotate = n_layers * n_heads <= 80
    ncols = min(len(names), 4) if ncols is None else ncols
    nrows = -(-len(names) // ncols)
    width = max(2.4, 0.3 * n_heads + 0.9)
    height = max(1.6, 0.36 * n_layers + 1.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols + 0.8, height * nrows + 0.4),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        s = scores[name].detach().float().cpu()
        rows, cols = s.shape
        im = ax.imshow(s.numpy(), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("head", fontsize=8)
        ax.set_ylabel("layer", fontsize=8)
        ax.set_xticks(range(cols))
        ax.set_xticklabels(range(cols), fontsize=7)
        ax.set_yticks(range(rows))
        ax.set_yticklabels(range(rows), fontsize=7)
        if annotate:
            for i in range(rows):
                for j in range(cols):
                    v = float(s[i, j])
                    text = f"{v:.2f}"
                    ax.text(j, i, text[1:] if text.startswith("0.") else text, ha="center",
                            va="center", fontsize=6, color="white" if v < 0.6 else "black")
    fig.colorbar(im, ax=axes, shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
