"""Chapter 4, pretraining data: masking tokens (80/10/10) and sampling NSP pairs.

Masking and NSP sampling are random, so these two checks cannot compare outputs one to one.
They check what must hold for every draw (labels, special tokens, untouched positions) exactly,
and the frequencies (15% selected, 80/10/10, 50% random B) statistically on many tokens, next to
what the package's own implementation gives on the same input."""
from __future__ import annotations

import functools
import math
import random
from typing import Callable, Dict, Sequence, Tuple

import torch
from torch import Tensor

from ..masking import IGNORE_INDEX
from ._harness import ExerciseFailed, describe, _seeded, _check_failed, _call_student

__all__ = ["check_mask_tokens", "check_nsp_pair"]


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
    from ..masking import mask_tokens as reference

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
