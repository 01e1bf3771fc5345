"""Parameter counts against transformers, built on the meta device so they cost no memory."""
import torch
import transformers

import bertbook as bb


def count(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def test_bert_base_count_matches_transformers():
    config = bb.BertConfig()  # BERT-base: 12 layers, 768 wide, 12 heads, vocab 30522
    with torch.device("meta"):
        ours = bb.BertForPreTraining(config)
        theirs = transformers.BertForPreTraining(bb.hf.hf_config(config, distil=False))
    print(f"BERT-base: ours {count(ours):,}, transformers {count(theirs):,}")
    assert count(ours) == count(theirs) == ours.num_parameters()
    assert 109e6 < count(ours) < 111e6  # the paper's "110M" (plus the pretraining heads)


def test_distilbert_base_count_matches_transformers():
    config = bb.BertConfig(num_hidden_layers=6)
    with torch.device("meta"):
        for ours_cls, name in [(bb.DistilBertForMaskedLM, "DistilBertForMaskedLM"),
                               (bb.DistilBertForSequenceClassification, "DistilBertForSequenceClassification")]:
            ours = ours_cls(config)
            theirs = getattr(transformers, name)(bb.hf.hf_config(config, distil=True))
            print(f"{name}: ours {count(ours):,}, transformers {count(theirs):,}")
            assert count(ours) == count(theirs)
        assert 66e6 < count(bb.DistilBertModel(config)) < 67e6  # the paper's "66M"


def test_num_parameters_without_embeddings():
    config = bb.BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32)
    model = bb.BertModel(config)
    assert model.num_parameters() - model.num_parameters(exclude_embeddings=True) == 100 * 16
