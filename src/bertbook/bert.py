"""BERT (chapter 3): embeddings, the encoder, the pooler and the pretraining / classification heads.

Shapes: B batch, L sequence length, D hidden size, V vocabulary size, N masked positions.
Argument names follow Hugging Face (`input_ids`, `token_type_ids`, `attention_mask`, `labels`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import keep_mask
from .device import can_read_back
from .encoder import Encoder

# A label with this value carries no loss: F.cross_entropy's default ignore_index, which the data
# side (`masking.IGNORE_INDEX`) writes at every position that was not selected.
IGNORE_INDEX = -100


@dataclass
class BertConfig:
    """Hyper-parameters of BERT and DistilBERT. Defaults are BERT-base (Devlin et al., 2019).

    DistilBERT uses the same fields; it ignores `type_vocab_size` (it has no segment embeddings).
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    pre_norm: bool = False
    num_labels: int = 2
    # None: the model's own default, hidden_dropout_prob for BERT, 0.2 for DistilBERT (as transformers'
    # seq_classif_dropout, `distilbert.DISTILBERT_CLASSIFIER_DROPOUT`)
    classifier_dropout: Optional[float] = None
    classifier_pooling: str = "cls"  # "cls" ([CLS] vector, as BERT) or "mean" (mean over tokens)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id ({self.pad_token_id}) must be a token id < vocab_size")
        if self.classifier_pooling not in ("cls", "mean"):
            raise ValueError(f"classifier_pooling must be 'cls' or 'mean', got {self.classifier_pooling!r}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "BertConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass
class ModelOutput:
    """What every model returns; fields a model does not compute stay None.

    The MLM logits (`logits`, alias `prediction_logits`) are (B, L, V) only without `labels` or
    with `masked_positions_only=False`; by default, with `labels`, they are (N, V), one row per
    labelled position in the order of `labels[labels != IGNORE_INDEX]`. Hugging Face's
    `prediction_logits` is always (B, L, V).
    """

    loss: Optional[Tensor] = None
    # classification (B, num_labels); MLM (N, V) with labels (the default), else (B, L, V)
    logits: Optional[Tensor] = None
    seq_relationship_logits: Optional[Tensor] = None  # NSP (B, 2)
    mlm_loss: Optional[Tensor] = None
    nsp_loss: Optional[Tensor] = None
    last_hidden_state: Optional[Tensor] = None  # (B, L, D)
    pooler_output: Optional[Tensor] = None  # (B, D)
    hidden_states: Optional[List[Tensor]] = None  # embeddings output + each layer's, (B, L, D) each
    attentions: Optional[List[Tensor]] = None  # one (B, H, L, L) per layer

    @property
    def prediction_logits(self) -> Optional[Tensor]:
        """Hugging Face's name for the MLM logits of `BertForPreTraining`, but not always its shape:
        (N, V) over the N labelled positions when the model got `labels` (and
        `masked_positions_only`, the default), (B, L, V) otherwise, as Hugging Face's. For the
        (B, L, V) logits with a loss, pass `masked_positions_only=False`."""
        return self.logits


# nn.Embedding takes int64 or int32 indices only; narrower integer types fail deep inside it.
ID_DTYPES = (torch.long, torch.int)


def check_ids_in_range(ids: Tensor, size: int, name: str, what: str) -> None:
    """`ids` (any shape, not empty) must lie in [0, size): a clear error naming `name` otherwise.
    Reads the values back, so only where `can_read_back` allows (a no-op elsewhere)."""
    if not can_read_back(ids):
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= size:
        raise ValueError(f"{name} must lie in [0, {what}={size}); got min {lo}, max {hi}")


def check_input_ids(input_ids: Tensor, vocab_size: int, max_positions: int) -> None:
    """Clear errors for the input mistakes that otherwise surface as an index error deep inside.

    input_ids: (B, L) int64 or int32 token ids, B >= 1 and 1 <= L <= max_positions. The dtype and
    shape are always checked (free: no value is read); the range [0, vocab_size) only where
    `can_read_back` allows (eager mode on the CPU)."""
    if input_ids.dtype not in ID_DTYPES:
        raise TypeError(f"input_ids must be integer token ids of dtype torch.long or torch.int, got dtype "
                        f"{input_ids.dtype} (convert with .long())")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}")
    if input_ids.numel() == 0:
        raise ValueError(f"empty batch: input_ids has shape {tuple(input_ids.shape)}, no token to run on")
    if input_ids.shape[1] > max_positions:
        raise ValueError(
            f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings ({max_positions})"
        )
    check_ids_in_range(input_ids, vocab_size, "token ids", "vocab_size")


def check_mask(mask: Optional[Tensor], input_ids: Tensor, name: str) -> None:
    if mask is not None and mask.shape != input_ids.shape:
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)} but input_ids has shape {tuple(input_ids.shape)}"
        )


class BertEmbeddings(nn.Module):
    """token + position + segment embeddings, then LayerNorm and dropout. (B, L) ids -> (B, L, D)."""

    def __init__(self, config: BertConfig, segments: bool = True):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        # DistilBERT drops the segment embeddings: it is trained without NSP.
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, config.hidden_size) if segments else None
        )
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None) -> Tensor:
        check_input_ids(input_ids, self.config.vocab_size, self.config.max_position_embeddings)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            check_mask(token_type_ids, input_ids, "token_type_ids")
            check_ids_in_range(token_type_ids, self.config.type_vocab_size, "token_type_ids", "type_vocab_size")
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class PreTrainedModel(nn.Module):
    """What all our models share: the config, BERT's initialisation and a checked `load_state_dict`."""

    config: BertConfig

    def init_weights(self) -> None:
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=std)
                if m.padding_idx is not None:
                    with torch.no_grad():
                        m.weight[m.padding_idx].zero_()
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        """As nn.Module's, but a state dict made for another config is a ValueError naming the keys."""
        own = self.state_dict()
        wrong = [
            f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in state_dict.items() if k in own and tuple(v.shape) != tuple(own[k].shape)
        ]
        if wrong:
            raise ValueError(
                "state dict does not match this model's config (was it saved from another config?): "
                + "; ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else "")
            )
        if strict:
            missing = sorted(set(own) - set(state_dict))
            unexpected = sorted(set(state_dict) - set(own))
            if missing or unexpected:
                raise ValueError(
                    f"state dict does not match this model: missing keys {missing[:5]}, "
                    f"unexpected keys {unexpected[:5]}"
                )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Distinct parameters (tied weights counted once); optionally without the word embeddings."""
        params = {id(p): p for p in self.parameters()}
        n = sum(p.numel() for p in params.values())
        if exclude_embeddings:
            n -= self.get_input_embeddings().weight.numel()
        return n

    def get_input_embeddings(self) -> nn.Embedding:
        raise NotImplementedError


def is_quantized(model: nn.Module) -> bool:
    """Whether `model` holds dynamically quantised (int8) layers (`deploy.quantize_dynamic`)."""
    return any(type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.nn.quantized"))
               for m in model.modules())


def build_encoder(config: BertConfig) -> Encoder:
    return Encoder(config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
                   config.intermediate_size, config.hidden_dropout_prob,
                   config.attention_probs_dropout_prob, config.layer_norm_eps, config.pre_norm)


class BertPooler(nn.Module):
    """tanh(W h_[CLS] + b): (B, L, D) -> (B, D)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class BertModel(PreTrainedModel):
    """Embeddings + encoder (+ pooler). Returns a ModelOutput with last_hidden_state (B, L, D),
    pooler_output (B, D), and optionally hidden_states and attentions."""

    def __init__(self, config: BertConfig, add_pooler: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = build_encoder(config)
        self.pooler = BertPooler(config.hidden_size) if add_pooler else None
        self.init_weights()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        token_type_ids: Optional[Tensor] = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> ModelOutput:
        check_mask(attention_mask, input_ids, "attention_mask")
        if attention_mask is not None:
            attention_mask = keep_mask(attention_mask)  # checked once here, not in every layer
        x = self.embeddings(input_ids, token_type_ids)
        x, hs, att = self.encoder(x, attention_mask, output_hidden_states, output_attentions)
        pooled = self.pooler(x) if self.pooler is not None else None
        return ModelOutput(last_hidden_state=x, pooler_output=pooled, hidden_states=hs, attentions=att)


class MLMHead(nn.Module):
    """Dense + GELU + LayerNorm, then the decoder whose weight *is* the word-embedding matrix.
    (..., D) -> (..., V). Shared by BERT and DistilBERT (their heads have the same shape)."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        # Tied: the decoder uses the embedding's own Parameter. Kept in a tuple so that it is not
        # registered twice (one state-dict key, and safetensors needs no shared-tensor handling).
        self.tied_embeddings = (word_embeddings,)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: Tensor) -> Tensor:
        h = self.LayerNorm(F.gelu(self.dense(hidden)))
        return F.linear(h, self.tied_embeddings[0].weight, self.bias)


def mlm_logits_and_loss(head: MLMHead, hidden: Tensor, labels: Optional[Tensor],
                        masked_positions_only: bool):
    """MLM logits and loss. hidden: (B, L, D), labels: (B, L), IGNORE_INDEX where there is no loss.

    With labels and masked_positions_only the decoder runs only on the N labelled positions, (N, V)
    instead of (B, L, V): the same loss for far less compute, since only ~15% of the positions
    carry a label. A batch without any labelled position (dynamic masking can draw none) has an
    MLM loss of 0, not the NaN of a mean over nothing, so that training goes on with its NSP loss."""
    if labels is None:
        return head(hidden), None
    if labels.shape != hidden.shape[:2]:
        raise ValueError(f"labels have shape {tuple(labels.shape)}, expected {tuple(hidden.shape[:2])}")
    selected = labels != IGNORE_INDEX
    if masked_positions_only:
        logits = head(hidden[selected])
        loss = F.cross_entropy(logits, labels[selected])
    else:
        logits = head(hidden)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                               ignore_index=IGNORE_INDEX)
    # torch.where, not `if`: no value is read back (no GPU sync), and with a labelled position the
    # loss and its gradient are exactly the cross-entropy's.
    return logits, torch.where(selected.any(), loss, loss.new_zeros(()))


class BertForPreTraining(PreTrainedModel):
    """BERT with the MLM head (decoder tied to the word embeddings) and the NSP head.

    `logits`: (B, L, V), or (N, V) over the labelled positions when `labels` are given and
    `masked_positions_only` (the default). `seq_relationship_logits`: (B, 2), label 0 = "B follows A".
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.mlm = MLMHead(config, self.bert.embeddings.word_embeddings)
        self.nsp = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        token_type_ids: Optional[Tensor] = None,
        labels: Optional[Tensor] = None,
        next_sentence_label: Optional[Tensor] = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        masked_positions_only: bool = True,
    ) -> ModelOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states,
                        output_attentions)
        logits, mlm_loss = mlm_logits_and_loss(self.mlm, out.last_hidden_state, labels,
                                               masked_positions_only)
        nsp_logits = self.nsp(out.pooler_output)
        nsp_loss = None if next_sentence_label is None else F.cross_entropy(nsp_logits, next_sentence_label)
        losses = [l for l in (mlm_loss, nsp_loss) if l is not None]
        out.loss = sum(losses) if losses else None
        out.logits, out.seq_relationship_logits = logits, nsp_logits
        out.mlm_loss, out.nsp_loss = mlm_loss, nsp_loss
        return out


def pool(hidden: Tensor, attention_mask: Optional[Tensor], how: str) -> Tensor:
    """(B, L, D) -> (B, D): the first ([CLS]) vector, or the mean over non-padding tokens."""
    if how == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return hidden.mean(1)
    m = keep_mask(attention_mask).to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def check_class_labels(labels: Tensor, num_classes: int, name: str = "labels") -> None:
    """`labels` must be (B,) class indices of dtype torch.long in [0, num_classes): a clear error
    naming `name` otherwise (the range where `can_read_back` allows)."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a tensor of class indices, got {type(labels).__name__}")
    if labels.dtype != torch.long:
        raise TypeError(f"{name} must be class indices of dtype torch.long (0 to {num_classes - 1}), got dtype "
                        f"{labels.dtype} (convert with .long())")
    if labels.dim() != 1:
        raise ValueError(f"{name} must have shape (batch,), got {tuple(labels.shape)}")
    if labels.numel():
        check_ids_in_range(labels, num_classes, name, "num_labels")


def classification_loss(logits: Tensor, labels: Optional[Tensor]) -> Optional[Tensor]:
    """Cross-entropy for classes (labels: (B,) class indices, `check_class_labels`), mean squared
    error for a single regression output."""
    if labels is None:
        return None
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    check_class_labels(labels, logits.shape[-1])
    return F.cross_entropy(logits, labels)


class BertForSequenceClassification(PreTrainedModel):
    """BERT, dropout and a linear classifier on the pooled vector. logits: (B, num_labels)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        p = config.hidden_dropout_prob if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        token_type_ids: Optional[Tensor] = None,
        labels: Optional[Tensor] = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> ModelOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states,
                        output_attentions)
        if self.config.classifier_pooling == "cls":
            pooled = out.pooler_output  # BERT's tanh pooler on [CLS]
        else:
            pooled = pool(out.last_hidden_state, attention_mask, "mean")
        out.logits = self.classifier(self.dropout(pooled))
        out.loss = classification_loss(out.logits, labels)
        return out
