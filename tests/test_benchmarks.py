"""The GPU benchmark script runs end to end on the CPU at a tiny size (its figures are not checked)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))


def test_gpu_pretrain_benchmark_runs_on_cpu(capsys):
    import gpu_pretrain
    res = gpu_pretrain.main(["--scale", "tiny", "--steps", "2", "--warmup-steps", "1", "--device", "cpu",
                             "--peak-tflops", "1", "--json"])
    for name in ("ours", "transformers"):
        assert res[name]["tokens_per_second"] > 0 and 0 < res[name]["mfu"] < 1
    assert res["flops_per_token"] > 6 * 1000


def test_flops_formula_by_hand():
    import gpu_pretrain
    from bertbook.bert import BertConfig
    c = BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16)
    matmul = 2 * (4 * 64 + 2 * 8 * 16) + 64 + 64 + 16
    assert gpu_pretrain.flops_per_token(c, 10) == pytest.approx(6 * matmul + 6 * 0.15 * 100 * 8 + 12 * 2 * 10 * 8)


def test_distill_seeds_overrides(tmp_path, monkeypatch):
    import distill_seeds
    assert distill_seeds.parse_overrides(["finetune__alpha=0.5", "finetune__pooling=mean",
                                          "finetune__student_layers=(1, 3, 5)"]) == \
        {"finetune__alpha": 0.5, "finetune__pooling": "mean", "finetune__student_layers": (1, 3, 5)}
    with pytest.raises(SystemExit, match="STAGE__FIELD=VALUE"):
        distill_seeds.parse_overrides(["finetune__alpha"])
    with pytest.raises(ValueError, match="unknown config override"):
        distill_seeds.main(["--scale", "tiny", "--set", "finetune__alhpa=0.5"])
    monkeypatch.setenv("BERTBOOK_CACHE", str(tmp_path))
    res = distill_seeds.main(["--scale", "tiny", "--seeds", "0", "--set", "finetune__alpha=0.5", "--json"])
    assert res["overrides"] == ["finetune__alpha=0.5"] and len(res["seeds"]) == 1
    assert 0 <= res["seeds"][0]["kd"] <= 1 and res["seeds_with_gain"] in (0, 1)
