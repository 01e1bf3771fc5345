"""Pretraining batches for BERT: masked language modelling (MLM) + next sentence prediction (NSP).

Pipeline:  documents (lists of sentences)
  -> tokenize_documents   (once: lists of token ids per sentence)
  -> make_nsp_pairs       (segment A, segment B, is_random_next)
  -> PretrainingDataset   ([CLS] A [SEP] B [SEP] + token types)
  -> PretrainingCollator  (pad, then mask 15% afresh for every batch)

Label conventions follow Hugging Face: ``labels`` holds the original id at masked
positions and -100 everywhere else (so [PAD], [CLS], [SEP] and unselected tokens
never enter the loss); ``next_sentence_label`` is 0 when B really follows A and
1 when B is a random segment from another document.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch

# Labels at positions that are not selected: the default ignore_index of F.cross_entropy, as the
# models' losses (`bert.IGNORE_INDEX`) skip them.
IGNORE_INDEX = -100


# ---------------------------------------------------------------------------
# masked language modelling
# ---------------------------------------------------------------------------


def mask_tokens(
    input_ids: torch.Tensor,
    vocab_size: int,
    mask_token_id: int,
    special_token_ids: Sequence[int],
    mlm_probability: float = 0.15,
    special_tokens_mask: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's dynamic masking.

    Each non-special token is selected with probability ``mlm_probability``. Of the
    selected: 80% become [MASK], 10% a random non-special token, 10% stay as they
    are (so the model cannot assume an unmasked token is always correct). Tokens
    whose id is in ``special_token_ids`` ([PAD], [CLS], [SEP], ...) or flagged in
    ``special_tokens_mask`` are never selected.

    Args:
        input_ids: (B, L) token ids.
        special_token_ids: ids never to select; must include the padding id.
        special_tokens_mask: optional (B, L) bool, True = never select.
    Returns:
        masked_input_ids (B, L) and labels (B, L): the original id where
        selected, -100 elsewhere. ``input_ids`` is not modified.
    """
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (B, L), got {tuple(input_ids.shape)}")
    special = torch.as_tensor(list(special_token_ids), dtype=input_ids.dtype, device=input_ids.device)
    eligible = ~torch.isin(input_ids, special)
    if special_tokens_mask is not None:
        eligible &= ~special_tokens_mask.bool()

    def rand() -> torch.Tensor:  # uniform [0, 1) with the shape of input_ids
        return torch.rand(input_ids.shape, generator=generator, device=input_ids.device)

    selected = (rand() < mlm_probability) & eligible
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))

    # one more uniform draw splits the selected tokens 80 / 10 / 10
    u = rand()
    to_mask = selected & (u < 0.8)
    to_random = selected & (u >= 0.8) & (u < 0.9)

    # random replacements come from the non-special part of the vocabulary
    allowed = torch.ones(vocab_size, dtype=torch.bool, device=input_ids.device)
    allowed[special[special < vocab_size]] = False
    allowed_ids = allowed.nonzero().squeeze(1)
    pick = torch.randint(len(allowed_ids), input_ids.shape, generator=generator, device=input_ids.device)

    masked = input_ids.clone()
    masked[to_mask] = mask_token_id
    masked[to_random] = allowed_ids[pick[to_random]]
    return masked, labels


# ---------------------------------------------------------------------------
# next sentence prediction pairs
# ---------------------------------------------------------------------------


@dataclass
class NSPPair:
    """One pretraining example before special tokens are added.

    ``doc`` / ``b_doc`` index the documents segments A and B came from.
    """

    tokens_a: list[int]
    tokens_b: list[int]
    is_random_next: bool
    doc: int
    b_doc: int

    @property
    def next_sentence_label(self) -> int:
        return int(self.is_random_next)  # HF: 0 = real continuation, 1 = random


Documents = Union[Sequence[Sequence[str]], Sequence[Sequence[Sequence[int]]]]


def tokenize_documents(documents: Sequence[Sequence[str]], tokenizer: Any) -> list[list[list[int]]]:
    """Token ids for every sentence of every document, without special tokens.

    One batched call to the fast tokenizer (done once, before training).
    """
    flat = [s for doc in documents for s in doc]
    ids = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    out, i = [], 0
    for doc in documents:
        out.append([x for x in ids[i:i + len(doc)] if x])  # drop sentences that tokenize to nothing
        i += len(doc)
    return out


def _truncate_pair(a: list[int], b: list[int], max_tokens: int) -> None:
    """Trim the longer segment until both fit, in place.

    A loses tokens at its start and B at its end, so the A|B seam (what NSP looks
    at) stays intact.
    """
    while len(a) + len(b) > max_tokens:
        if len(a) >= len(b):
            del a[0]
        else:
            b.pop()


def make_nsp_pairs(
    documents: Documents,
    tokenizer: Any = None,
    max_seq_len: int = 128,
    short_seq_prob: float = 0.1,
    seed: int = 0,
) -> list[NSPPair]:
    """Cut documents into (A, B, is_random_next) examples, as in the BERT recipe.

    Consecutive sentences are gathered into a chunk of about ``max_seq_len - 3``
    tokens (shorter with probability ``short_seq_prob``, so the model also sees
    short inputs). A is the chunk's first 1..n-1 sentences. With probability 1/2
    B is taken from a random *other* document (the unused sentences of the chunk
    are put back); otherwise B is the rest of the chunk (a one-sentence chunk
    borrows the next sentence). Only a document's lone last sentence is forced to
    a random B, so labels stay close to 50/50. Each pair is truncated so
    ``[CLS] A [SEP] B [SEP]`` fits in ``max_seq_len``.

    Args:
        documents: list of documents, each a list of sentences, given as strings
            (then ``tokenizer`` is required) or as lists of token ids.
    Returns:
        list of NSPPair, about half with ``is_random_next=True``.
    """
    if max_seq_len < 5:
        raise ValueError(f"max_seq_len must be >= 5 to fit [CLS] A [SEP] B [SEP], got {max_seq_len}")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"short_seq_prob must be in [0, 1], got {short_seq_prob}")
    if len(documents) == 0 or all(len(d) == 0 for d in documents):
        raise ValueError("make_nsp_pairs got an empty data set: no documents/sentences")
    first = next(d for d in documents if len(d))
    if isinstance(first[0], str):
        if tokenizer is None:
            raise ValueError("documents are strings: pass a tokenizer to make_nsp_pairs")
        docs = tokenize_documents(documents, tokenizer)  # type: ignore[arg-type]
    else:
        docs = [[list(s) for s in d if len(s)] for d in documents]
    if sum(1 for d in docs if d) < 2:
        raise ValueError("NSP needs at least 2 non-empty documents (random B comes from another one)")

    rng = random.Random(seed)
    max_tokens = max_seq_len - 3  # room for [CLS], [SEP], [SEP]
    nonempty = [i for i, d in enumerate(docs) if d]
    pairs: list[NSPPair] = []
    for di in nonempty:
        doc = docs[di]
        target = max_tokens if rng.random() >= short_seq_prob else rng.randint(2, max_tokens)
        chunk: list[list[int]] = []
        length, i = 0, 0
        while i < len(doc):
            chunk.append(doc[i])
            length += len(doc[i])
            if i == len(doc) - 1 or length >= target:
                is_random = rng.random() < 0.5
                if len(chunk) == 1 and not is_random:
                    if i + 1 < len(doc):  # borrow the next sentence as a real B
                        i += 1
                        chunk.append(doc[i])
                    else:  # last sentence of the document: no real continuation exists
                        is_random = True
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = [t for s in chunk[:a_end] for t in s]
                if is_random:
                    bi = di
                    while bi == di:  # never the same document
                        bi = rng.choice(nonempty)
                    other = docs[bi]
                    b: list[int] = []
                    for s in other[rng.randrange(len(other)):]:
                        b.extend(s)
                        if len(b) >= target - len(a):
                            break
                    i -= len(chunk) - a_end  # unused sentences go back into the stream
                else:
                    bi = di
                    b = [t for s in chunk[a_end:] for t in s]
                _truncate_pair(a, b, max_tokens)
                if a and b:
                    pairs.append(NSPPair(a, b, is_random, di, bi))
                chunk, length = [], 0
                target = max_tokens if rng.random() >= short_seq_prob else rng.randint(2, max_tokens)
            i += 1
    return pairs


# ---------------------------------------------------------------------------
# data set and collator
# ---------------------------------------------------------------------------


class PretrainingDataset(torch.utils.data.Dataset):
    """NSP pairs laid out as ``[CLS] A [SEP] B [SEP]``; masking happens in the collator.

    Items are dicts of python lists: ``input_ids``, ``token_type_ids`` (0 for
    ``[CLS] A [SEP]``, 1 for ``B [SEP]``) and the int ``next_sentence_label``.
    """

    def __init__(self, pairs: Sequence[NSPPair], cls_token_id: int, sep_token_id: int):
        if len(pairs) == 0:
            raise ValueError("PretrainingDataset got an empty list of pairs")
        self.pairs = list(pairs)
        self.cls, self.sep = cls_token_id, sep_token_id

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        p = self.pairs[idx]
        ids = [self.cls, *p.tokens_a, self.sep, *p.tokens_b, self.sep]
        types = [0] * (len(p.tokens_a) + 2) + [1] * (len(p.tokens_b) + 1)
        return {"input_ids": ids, "token_type_ids": types, "next_sentence_label": p.next_sentence_label}

    @classmethod
    def from_documents(
        cls, documents: Documents, tokenizer: Any, max_seq_len: int = 128, seed: int = 0, **kw: Any
    ) -> "PretrainingDataset":
        """Tokenize (if needed), cut into NSP pairs, and wrap."""
        pairs = make_nsp_pairs(documents, tokenizer, max_seq_len=max_seq_len, seed=seed, **kw)
        return cls(pairs, tokenizer.cls_token_id, tokenizer.sep_token_id)


class PretrainingCollator:
    """Pads a list of dataset items and applies fresh MLM masking to every batch.

    Returns a dict of tensors, each (B, L) with L the longest item in the batch
    (or ``pad_to``): ``input_ids`` (masked), ``token_type_ids``, ``attention_mask``
    (1 = real token, 0 = padding), ``labels`` (original id at masked positions,
    -100 elsewhere) and ``next_sentence_label`` (B,).
    """

    def __init__(
        self,
        vocab_size: int,
        pad_token_id: int,
        mask_token_id: int,
        special_token_ids: Sequence[int],
        mlm_probability: float = 0.15,
        pad_to: Optional[int] = None,
        seed: Optional[int] = None,
    ):
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        self.vocab_size, self.pad, self.mask = vocab_size, pad_token_id, mask_token_id
        self.special = sorted(set(special_token_ids) | {pad_token_id})
        self.p, self.pad_to, self.seed = mlm_probability, pad_to, seed
        self.generator: Optional[torch.Generator] = None
        self._worker: Optional[int] = None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **kw: Any) -> "PretrainingCollator":
        return cls(len(tokenizer), tokenizer.pad_token_id, tokenizer.mask_token_id,
                   tokenizer.all_special_ids, **kw)

    def _gen(self) -> Optional[torch.Generator]:
        if self.seed is None:
            return None  # torch's global RNG
        # DataLoader workers each get a copy of this object: give each its own stream
        info = torch.utils.data.get_worker_info()
        worker = None if info is None else info.id
        if self.generator is None or worker != self._worker:
            seed = self.seed if info is None else (self.seed * 1_000_003 + info.seed) % 2**63
            self.generator = torch.Generator().manual_seed(seed)
            self._worker = worker
        return self.generator

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("PretrainingCollator got an empty batch")
        L = max(len(e["input_ids"]) for e in examples)
        if self.pad_to is not None:
            if L > self.pad_to:
                raise ValueError(f"an example has {L} tokens, more than pad_to={self.pad_to}")
            L = self.pad_to
        B = len(examples)
        input_ids = torch.full((B, L), self.pad, dtype=torch.long)
        token_type_ids = torch.zeros((B, L), dtype=torch.long)
        attention_mask = torch.zeros((B, L), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            input_ids[i, :n] = torch.tensor(e["input_ids"])
            token_type_ids[i, :n] = torch.tensor(e["token_type_ids"])
            attention_mask[i, :n] = 1
        masked, labels = mask_tokens(
            input_ids, self.vocab_size, self.mask, self.special, self.p,
            special_tokens_mask=attention_mask == 0, generator=self._gen(),
        )
        return {
            "input_ids": masked,
            "token_type_ids": token_type_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "next_sentence_label": torch.tensor([e["next_sentence_label"] for e in examples]),
        }
