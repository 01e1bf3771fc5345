"""The GPU-memory estimate: its parameter count is the model's, and its parts follow their formulas."""
import pytest

from bertbook.bert import BertConfig, BertModel
from bertbook.memory import encoder_parameters, layer_activation_bytes, training_memory


def test_parameters_are_the_models_without_pooler():
    for cfg in (BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=32),
                BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=3, num_attention_heads=4,
                           intermediate_size=40, max_position_embeddings=16)):
        model = BertModel(cfg)
        counted = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("pooler"))
        assert encoder_parameters(cfg) == counted


def test_parts_follow_their_formulas():
    cfg = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=256, max_position_embeddings=128)
    # s·b·h·(34 + 5·a·s/h): at s = 128, b = 8, h = 64, a = 4: 65,536 · (34 + 40)
    assert layer_activation_bytes(cfg, 8, 128) == 128 * 8 * 64 * (34 + 40)
    plain = training_memory(cfg, 8, 128)
    assert plain["state"] == 16 * encoder_parameters(cfg)
    assert plain["activations"] == 2 * layer_activation_bytes(cfg, 8, 128)
    assert plain["logits"] == pytest.approx(3 * 4 * 0.15 * 8 * 128 * 1000)
    assert plain["total"] == pytest.approx(plain["state"] + plain["activations"] + plain["logits"])
    distil = training_memory(cfg, 8, 128, teacher=cfg)
    assert distil["logits"] == pytest.approx(2 * plain["logits"])
    assert distil["state"] == plain["state"] + 4 * encoder_parameters(cfg)
    assert training_memory(cfg, 8, 128, mlm=False)["logits"] == 0
    with pytest.raises(ValueError, match="positive"):
        training_memory(cfg, 0, 128)
