"""bertbook: the library under the book — attention, the encoder, BERT, DistilBERT,
pretraining and distillation, with exact parity to Hugging Face `transformers`."""
from .attention import MultiHeadAttention, scaled_dot_product_attention
from .bert import (BertConfig, BertEmbeddings, BertForPreTraining, BertForSequenceClassification,
                   BertModel, ModelOutput)
from .device import autocast, get_device
from .distilbert import (DistilBertForMaskedLM, DistilBertForSequenceClassification, DistilBertModel,
                         default_student_layers, student_from_teacher)
from .encoder import Encoder, EncoderLayer, FeedForward

# What needs `transformers` is loaded on first use, so that `import bertbook` costs only torch
# (chapter 1 needs nothing more).
_LAZY = {"from_pretrained": "hf", "from_transformers": "hf", "save_pretrained": "hf",
         "to_transformers": "hf", "load_minilm": "hf"}
_LAZY_MODULES = ("hf",)  # `bertbook.hf` works without an `import bertbook.hf` of its own


def __getattr__(name: str):
    if name in _LAZY or name in _LAZY_MODULES:
        import importlib

        module = importlib.import_module(f".{_LAZY.get(name, name)}", __name__)
        value = module if name in _LAZY_MODULES else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bertbook' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY, *_LAZY_MODULES})


def _version() -> str:
    """The version in pyproject.toml: from the installed package's metadata, or, for a source
    tree on the path that was never installed, from pyproject.toml itself."""
    import importlib.metadata

    try:
        return importlib.metadata.version("bertbook")
    except importlib.metadata.PackageNotFoundError:
        import os
        import re

        pyproject = os.path.join(os.path.dirname(__file__), "..", "..", "pyproject.toml")
        with open(pyproject, encoding="utf-8") as f:
            return re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.MULTILINE).group(1)


__version__ = _version()
