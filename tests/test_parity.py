"""Our models against `transformers`: the same weights must give the same numbers, both ways."""
import pytest
import torch
import transformers

import bertbook as bb

TOL = 1e-5
CLASSES = [bb.BertForPreTraining, bb.BertForSequenceClassification,
           bb.DistilBertForMaskedLM, bb.DistilBertForSequenceClassification,
           bb.BertModel, bb.DistilBertModel]


def small_config(**kw):
    base = dict(vocab_size=101, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                intermediate_size=80, max_position_embeddings=32, type_vocab_size=2, num_labels=3)
    base.update(kw)
    return bb.BertConfig(**base)


def padded_batch(vocab, b=4, l=11):
    ids = torch.randint(1, vocab, (b, l))
    mask = torch.ones(b, l, dtype=torch.long)
    for i, n in enumerate([l, l - 3, 2, l - 1][:b]):
        mask[i, n:] = 0
        ids[i, n:] = 0
    types = torch.zeros(b, l, dtype=torch.long)
    types[:, l // 2:] = 1
    return ids, mask, types


def run(model, ids, mask, types):
    kw = dict(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    if "Distil" not in type(model).__name__:
        kw["token_type_ids"] = types
    with torch.no_grad():
        return model(**kw)


def main_output(out):
    for name in ("logits", "prediction_logits"):
        value = getattr(out, name, None)
        if value is not None:
            return value
    return out.last_hidden_state


def compare(ours, theirs, mask):
    """Max abs differences over the main output, every hidden state and every attention map,
    over the non-padding positions (padded positions are never used)."""
    keep = mask.bool()
    a, b = main_output(ours), main_output(theirs)
    d_main = (a[keep] - b[keep]).abs().max().item() if a.dim() == 3 else (a - b).abs().max().item()
    d_hidden = max((x[keep] - y[keep]).abs().max().item() for x, y in zip(ours.hidden_states, theirs.hidden_states))
    d_att = max((x - y).abs().max().item() for x, y in zip(ours.attentions, theirs.attentions))
    if hasattr(theirs, "seq_relationship_logits"):
        d_main = max(d_main, (ours.seq_relationship_logits - theirs.seq_relationship_logits).abs().max().item())
    return d_main, d_hidden, d_att


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_ours_to_transformers(cls):
    config = small_config()
    ours = cls(config).eval()
    with torch.no_grad():  # give biases and LayerNorms non-trivial values, so a swapped name shows
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf = bb.to_transformers(ours, attn_implementation="eager")
    assert type(hf).__name__ == cls.__name__
    ids, mask, types = padded_batch(config.vocab_size)
    diffs = compare(run(ours, ids, mask, types), run(hf, ids, mask, types), mask)
    print(f"{cls.__name__} ours->HF max abs diff: output {diffs[0]:.2e}, hidden {diffs[1]:.2e}, attention {diffs[2]:.2e}")
    assert max(diffs) <= TOL
    assert len(run(ours, ids, mask, types).hidden_states) == config.num_hidden_layers + 1


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_transformers_to_ours(cls):
    config = small_config()
    distil = "Distil" in cls.__name__
    hf_cfg = bb.hf.hf_config(config, distil, attn_implementation="eager")
    torch.manual_seed(1)
    hf = getattr(transformers, cls.__name__)(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = bb.from_transformers(hf)
    assert type(ours) is cls
    ids, mask, types = padded_batch(config.vocab_size)
    diffs = compare(run(ours, ids, mask, types), run(hf, ids, mask, types), mask)
    print(f"{cls.__name__} HF->ours max abs diff: output {diffs[0]:.2e}, hidden {diffs[1]:.2e}, attention {diffs[2]:.2e}")
    assert max(diffs) <= TOL


def test_fast_attention_path_matches_weights_path():
    model = bb.BertForPreTraining(small_config()).eval()
    ids, mask, types = padded_batch(101)
    with torch.no_grad():
        a = model(ids, mask, types).logits
        b = model(ids, mask, types, output_attentions=True).logits
    assert (a - b)[mask.bool()].abs().max() <= 1e-5


def test_losses_match_transformers():
    config = small_config()
    ours = bb.BertForPreTraining(config).eval()
    hf = bb.to_transformers(ours)
    ids, mask, types = padded_batch(config.vocab_size)
    labels = torch.full_like(ids, -100)
    labels[:, 1:4] = ids[:, 1:4]
    nsp = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        o = ours(ids, mask, types, labels=labels, next_sentence_label=nsp)
        full = ours(ids, mask, types, labels=labels, next_sentence_label=nsp, masked_positions_only=False)
        h = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels, next_sentence_label=nsp)
    assert o.logits.shape == (int((labels != -100).sum()), config.vocab_size)
    assert abs(o.loss.item() - h.loss.item()) <= TOL
    assert abs(full.loss.item() - h.loss.item()) <= TOL


def test_tied_decoder():
    for model in (bb.BertForPreTraining(small_config()), bb.DistilBertForMaskedLM(small_config())):
        emb = model.get_input_embeddings().weight
        assert model.mlm.tied_embeddings[0].weight is emb
        assert not any(k.startswith("mlm.tied") for k in model.state_dict())


def test_save_and_load_hf_directory(tmp_path):
    tok = transformers.BertTokenizerFast(tokenizer_object=_tiny_tokenizer())
    config = small_config(vocab_size=len(tok))
    model = bb.DistilBertForMaskedLM(config).eval()
    bb.save_pretrained(model, str(tmp_path), tokenizer=tok)
    assert (tmp_path / "config.json").exists() and (tmp_path / "model.safetensors").exists()
    hf = transformers.AutoModelForMaskedLM.from_pretrained(str(tmp_path)).eval()
    ids = torch.tensor([[2, 5, 6, 4, 3]])
    with torch.no_grad():
        assert (hf(input_ids=ids).logits - model(ids).logits).abs().max() <= TOL
    fill = transformers.pipeline("fill-mask", model=str(tmp_path), device="cpu")
    assert len(fill("the [MASK] sat")) == 5
    back = bb.from_pretrained(str(tmp_path))
    assert type(back) is bb.DistilBertForMaskedLM
    with torch.no_grad():
        assert (back(ids).logits - model(ids).logits).abs().max() <= TOL


@pytest.mark.parametrize("cls", [bb.DistilBertForMaskedLM, bb.BertForPreTraining], ids=lambda c: c.__name__)
def test_saved_tokenizer_gives_what_the_model_takes(tmp_path, cls):
    """DistilBERT has no segment embeddings: its saved tokenizer must not return token_type_ids
    (transformers 4.x's DistilBERT forward rejects them, and `pipeline` passes them on); BERT's does.
    The caller's tokenizer is left as it was."""
    tok = transformers.BertTokenizerFast(tokenizer_object=_tiny_tokenizer())
    bb.save_pretrained(cls(small_config(vocab_size=len(tok))).eval(), str(tmp_path), tokenizer=tok)
    saved = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert ("token_type_ids" in saved("the cat sat")) == (cls is bb.BertForPreTraining)
    assert "token_type_ids" in tok("the cat sat")


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


@pytest.mark.parametrize("cls", [bb.BertForSequenceClassification, bb.DistilBertForSequenceClassification,
                                 bb.BertForPreTraining], ids=lambda c: c.__name__)
def test_training_matches_transformers(cls):
    """Forward parity is not the whole story: train our model and its transformers twin from the same
    weights for a few AdamW steps (dropout off, so both are deterministic) and the losses and final
    weights must agree. Catches a parameter one side trains and the other does not (ties, buffers)."""
    from bertbook.training import TrainStep

    config = small_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    torch.manual_seed(0)
    ours = cls(config)
    hf = bb.to_transformers(ours)  # classifier_dropout carries over (DistilBERT: seq_classif_dropout)
    ours.train(), hf.train()
    opt_ours, opt_hf = TrainStep(ours, 5, 1e-3, 0.2), TrainStep(hf, 5, 1e-3, 0.2)
    losses = []
    for step in range(5):
        torch.manual_seed(100 + step)
        ids, mask, types = padded_batch(config.vocab_size)
        kw = {} if "Distil" in cls.__name__ else {"token_type_ids": types}
        if cls is bb.BertForPreTraining:
            labels = torch.where((torch.rand(ids.shape) < 0.3) & mask.bool(), ids, torch.full_like(ids, -100))
            labels[:, 1] = ids[:, 1]  # at least one label per row
            kw.update(labels=labels, next_sentence_label=torch.tensor([0, 1, 0, 1]))
        else:
            kw.update(labels=torch.tensor([0, 2, 1, 2]))
        a = ours(ids, attention_mask=mask, **kw).loss
        b = hf(input_ids=ids, attention_mask=mask, **kw).loss
        losses.append((a.item(), b.item()))
        opt_ours.step(a)
        opt_hf.step(b)
    assert max(abs(x - y) for x, y in losses) <= 1e-4, losses
    assert losses[-1][0] != losses[0][0]  # the weights did move
    back = bb.from_transformers(hf).state_dict()
    worst = max((v - back[k]).abs().max().item() for k, v in ours.state_dict().items())
    assert worst <= 1e-4, worst
