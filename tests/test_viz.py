import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

import bertbook as bb
from bertbook.viz import (attention_distance, attention_pattern_scores, plot_attention,
                          plot_head_scores, stack_attentions, top_heads)

CLS, SEP, PAD = 1, 2, 0


def _one_hot_rows(targets, length):
    """(L, L) attention where query i puts all its mass on key targets[i]."""
    return torch.nn.functional.one_hot(torch.as_tensor(targets), length).float()


def _synthetic(lengths=(6, 4), total=6):
    """A batch padded to `total`, one layer, five heads with known behaviour:
    0 previous token, 1 [SEP], 2 uniform over real tokens, 3 itself, 4 next token."""
    batch = len(lengths)
    ids = torch.full((batch, total), PAD)
    mask = torch.zeros(batch, total, dtype=torch.long)
    att = torch.zeros(batch, 5, total, total)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.arange(10, 10 + n)
        ids[b, 0], ids[b, n - 1] = CLS, SEP
        mask[b, :n] = 1
        att[b, 0, :n, :n] = _one_hot_rows([max(i - 1, 0) for i in range(n)], n)
        att[b, 1, :n, :n] = _one_hot_rows([n - 1] * n, n)
        att[b, 2, :n, :n] = 1.0 / n
        att[b, 3, :n, :n] = torch.eye(n)
        att[b, 4, :n, :n] = _one_hot_rows([min(i + 1, n - 1) for i in range(n)], n)
        # padding rows: garbage that must be ignored
        att[b, :, n:, :] = 1.0 / total
    return [att], ids, mask


def test_scores_have_known_values():
    att, ids, mask = _synthetic()
    s = attention_pattern_scores(att, ids, mask, {"[CLS]": CLS, "[SEP]": SEP})
    assert set(s) == {"[CLS]", "[SEP]", "previous", "self", "next", "broad"}
    assert all(v.shape == (1, 5) for v in s.values())
    close = lambda x, y: abs(float(x) - y) < 1e-6
    assert close(s["previous"][0, 0], 1.0) and close(s["next"][0, 4], 1.0)
    assert close(s["[SEP]"][0, 1], 1.0) and close(s["self"][0, 3], 1.0)
    assert close(s["broad"][0, 2], 1.0)  # uniform over the real tokens, padding not counted
    for h in (0, 1, 3, 4):
        assert close(s["broad"][0, h], 0.0)  # one-hot rows have zero entropy
    # uniform head: 1/n on [CLS], averaged over the 6 + 4 real queries
    assert close(s["[CLS]"][0, 2], (6 * (1 / 6) + 4 * (1 / 4)) / 10)
    # the [SEP] head looks at itself only at the [SEP] query: 1 of 10 queries
    assert close(s["self"][0, 1], 2 / 10)  # one [SEP] query per sentence
    # the self head looks at its previous token never
    assert close(s["previous"][0, 3], 0.0)


def test_padding_is_ignored():
    att, ids, mask = _synthetic(lengths=(4,), total=4)
    padded, ids_p, mask_p = _synthetic(lengths=(4,), total=7)
    a = attention_pattern_scores(att, ids, mask, {"[SEP]": SEP})
    b = attention_pattern_scores(padded, ids_p, mask_p, {"[SEP]": SEP})
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_top_heads_picks_the_right_head():
    att, ids, mask = _synthetic()
    two_layers = [att[0], att[0].roll(1, dims=1)]  # layer 1: heads shifted by one
    best = top_heads(attention_pattern_scores(two_layers, ids, mask, {"[SEP]": SEP}))
    assert best["previous"][0][:2] in [(0, 0), (1, 1)] and best["previous"][0][2] == pytest.approx(1.0)
    assert best["[SEP]"][0][:2] in [(0, 1), (1, 2)]
    top2 = top_heads({"x": torch.tensor([[0.1, 0.9], [0.5, 0.2]])}, k=2)["x"]
    assert [t[:2] for t in top2] == [(0, 1), (1, 0)]


def test_scores_on_a_real_model_are_probabilities():
    cfg = bb.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=32, max_position_embeddings=16)
    model = bb.BertModel(cfg).eval()
    ids = torch.randint(3, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        att = model(ids, attention_mask=mask, output_attentions=True).attentions
    s = attention_pattern_scores(att, ids, mask, {"[CLS]": 1})
    for name, v in s.items():
        assert v.shape == (2, 4) and float(v.min()) >= -1e-6 and float(v.max()) <= 1 + 1e-6, name
    # an untrained model attends almost uniformly
    assert float(s["broad"].min()) > 0.9


def test_attention_distance():
    att, ids, mask = _synthetic()
    d = attention_distance(att, att, mask)
    assert d.shape == (1, 5, 1, 5)
    assert torch.allclose(d.diagonal(dim1=1, dim2=3)[0, 0], torch.zeros(5), atol=1e-6)
    assert float(d[0, 0, 0, 4]) == pytest.approx(1.0)  # previous vs next: disjoint except at the ends
    with pytest.raises(ValueError):
        attention_distance(att, [att[0][:1]], mask)


def test_input_errors():
    att, ids, mask = _synthetic()
    with pytest.raises(ValueError, match="input_ids"):
        attention_pattern_scores(att, ids[:, :3], mask[:, :3])
    with pytest.raises(ValueError, match="no attention"):
        stack_attentions([])
    with pytest.raises(ValueError, match="no query"):
        attention_pattern_scores(att, ids, torch.zeros_like(mask))


def test_plots():
    att, ids, mask = _synthetic()
    tokens = ["[CLS]", "a", "b", "c", "d", "[SEP]"]
    ax = plot_attention(att[0][0, 0], tokens, title="previous")
    assert [t.get_text() for t in ax.get_xticklabels()] == tokens and ax.get_title() == "previous"
    with pytest.raises(ValueError):
        plot_attention(att[0][0, 0], tokens[:3])
    s = attention_pattern_scores(att, ids, mask, {"[SEP]": SEP})
    fig = plot_head_scores(s, ["[SEP]", "previous"], title="t")
    assert [a.get_title() for a in fig.axes[:2]] == ["[SEP]", "previous"]
    matplotlib.pyplot.close("all")


def test_attentions_for_matches_a_direct_call():
    import os

    import transformers
    from bertbook.hf import minilm_dir
    from bertbook.viz import attentions_for

    if minilm_dir() is None:
        pytest.skip("MiniLM tokenizer not installed")
    tok = transformers.BertTokenizerFast(tokenizer_file=os.path.join(minilm_dir(), "tokenizer.json"))
    cfg = bb.BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    model = bb.BertModel(cfg).eval()
    enc, att = attentions_for(model, tok, ["a short one.", "a somewhat longer sentence here."], max_length=8)
    assert enc["input_ids"].shape == (2, 8) and len(att) == 2 and att[0].shape == (2, 2, 8, 8)
    assert int(enc["attention_mask"][0].sum()) < 8  # the short sentence is padded
    with torch.no_grad():
        direct = model(enc["input_ids"][:1, :int(enc["attention_mask"][0].sum())], output_attentions=True)
    n = direct.attentions[0].shape[-1]
    assert torch.allclose(att[1][0, :, :n, :n], direct.attentions[1][0], atol=1e-5)


def test_plot_head_scores_mixed_shapes():
    fig = plot_head_scores({"teacher": torch.rand(4, 3), "student": torch.rand(2, 3)}, ncols=2)
    assert [a.get_title() for a in fig.axes[:2]] == ["teacher", "student"]
    assert len(fig.axes[1].get_yticks()) == 2
    with pytest.raises(KeyError):
        plot_head_scores({"a": torch.rand(2, 2)}, ["b"])
    matplotlib.pyplot.close("all")


def test_groups_of_token_ids_add_up():
    att, ids, mask = _synthetic()
    s = attention_pattern_scores(att, ids, mask, {"[CLS]": CLS, "[SEP]": SEP, "both": [CLS, SEP]})
    assert torch.allclose(s["both"], s["[CLS]"] + s["[SEP]"], atol=1e-6)
