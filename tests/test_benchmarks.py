"""The GPU benchmark script runs end to end on the CPU at a tiny size (its figures are not checked)."""
import json
import os
import sys

import pytest
import torch

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
    row = res["seeds"][0]
    assert 0 <= row["kd_validation"] <= 1 and 0 <= row["no_kd_validation"] <= 1
    assert row["gain_validation"] == row["kd_validation"] - row["no_kd_validation"]
    assert res["seeds_with_gain_validation"] in (0, 1) and 0 <= res["teacher_validation_accuracy"] <= 1
    # the override reached the pipeline: the alpha = 0.5 student is cached, the default one is not
    from bertbook import pipeline
    from bertbook.configs import get_scale_config
    _, info = pipeline.finetuned_student(get_scale_config("tiny", finetune__alpha=0.5), kd=True, seed=0, progress=False)
    assert info["cached"] and info["test_accuracy"] == res["seeds"][0]["kd"]
    assert not pipeline.finetuned_student(get_scale_config("tiny"), kd=True, seed=0, progress=False)[1]["cached"]


def test_distill_seeds_transfer_pseudo_and_curve(tmp_path, monkeypatch):
    import distill_seeds
    monkeypatch.setenv("BERTBOOK_CACHE", str(tmp_path))
    out = tmp_path / "curve.json"
    res = distill_seeds.main(["--scale", "tiny", "--seeds", "0", "1", "--transfer", "--pseudo",
                              "--set", "finetune__transfer_examples=16", "--curve", "0", "16",
                              "--out", str(out), "--json"])
    assert res["transfer_examples"] == 16 and set(res["students"]) == {"kd", "no_kd", "transfer", "pseudo"}
    assert set(res["gains"]) == {"kd_vs_no_kd", "transfer_vs_no_kd", "pseudo_vs_no_kd", "transfer_vs_kd",
                                 "transfer_vs_pseudo"}
    for r in res["seeds"]:  # flat rows: the existing keys and the new students' test and validation
        for k in ("kd", "no_kd", "transfer", "pseudo", "transfer_validation", "pseudo_validation"):
            assert 0 <= r[k] <= 1, k
    g = res["gains"]["transfer_vs_no_kd"]["validation"]
    gains = [r["transfer_validation"] - r["no_kd_validation"] for r in res["seeds"]]
    assert g["n"] == 2 and g["ahead"] == sum(x > 0 for x in gains) and g["mean"] == pytest.approx(sum(gains) / 2)
    assert g["se"] == pytest.approx(abs(gains[0] - gains[1]) / 2)  # stdev / sqrt(2) of two numbers
    assert res["transfer_retention"]["test"] == pytest.approx(res["students"]["transfer"]["test"]["mean"]
                                                              / res["teacher_accuracy"])
    assert [p["transfer_examples"] for p in res["curve"]] == [0, 16]
    zero, sixteen = res["curve"]
    for seed_row, point0, point16 in zip(res["seeds"], zero["seeds"], sixteen["seeds"]):
        assert point0["transfer"]["test"] == seed_row["kd"]  # size 0 is the distilled student itself
        assert point16["transfer"]["test"] == seed_row["transfer"]  # the --set size: the same cached model
        assert point16["pseudo"]["validation"] == seed_row["pseudo_validation"]
    assert set(sixteen["gains"]) == {"transfer_vs_no_kd", "pseudo_vs_no_kd"}
    import json
    assert json.loads(out.read_text())["curve"][1]["transfer_examples"] == 16
    # the override reached the pipeline: the 16-review transfer student is cached; nothing else was
    # trained with a transfer set (size 0 of the curve was not trained again)
    from bertbook import pipeline
    from bertbook.configs import get_scale_config
    _, info = pipeline.transfer_student(get_scale_config("tiny", finetune__transfer_examples=16), seed=1, progress=False)
    assert info["cached"] and info["test_accuracy"] == res["seeds"][1]["transfer"]
    files = os.listdir(tmp_path / "checkpoints")
    assert sum(f.startswith("student-transfer-") for f in files) == 2  # seeds 0 and 1
    assert sum(f.startswith("student-pseudo-") for f in files) == 2
    assert sum(f.startswith("teacher-logits-") for f in files) == 1  # one pass of the teacher for all four


def test_linear_probe_runs_on_a_few_reviews():
    import linear_probe
    res = linear_probe.main(["--train-examples", "64", "--eval-examples", "32", "--l2", "0.001", "0.01", "--json"])
    assert res["train_examples"] == 64 and res["chosen_l2"] in (0.001, 0.01)
    assert 0.0 <= res["test_accuracy"] <= 1.0 and res["train_accuracy"] > 0.8  # 384 features fit 64 reviews


def test_logistic_regression_separates_separable_data():
    import torch

    import linear_probe
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    clf = linear_probe.fit_logistic(x, y, l2=1e-4)
    assert linear_probe.accuracy(clf, x, y) > 0.97


def test_transformers_twin_trains_like_ours(tmp_path, monkeypatch):
    import transformers_twin
    monkeypatch.setenv("BERTBOOK_CACHE", str(tmp_path))
    res = transformers_twin.main(["--scale", "tiny", "--layers", "0", "2", "--no-dropout", "--json"])
    assert res["layers"] == [0, 2] and not res["dropout"]
    assert res["max_abs_logit_difference"] < 1e-4  # same weights, same loop: the same model after training
    assert res["ours_accuracy"] == res["transformers_accuracy"]
    with pytest.raises(SystemExit, match="out of range"):
        transformers_twin.main(["--scale", "tiny", "--layers", "0", "9"])


def test_mlm_distill_seeds_pairs_each_seed(tmp_path, monkeypatch):
    import mlm_distill_seeds
    monkeypatch.setenv("BERTBOOK_CACHE", str(tmp_path))
    res = mlm_distill_seeds.main(["--scale", "tiny", "--seeds", "0", "1", "--finetune-seeds", "0", "--json"])
    assert [r["seed"] for r in res["rows"]] == [0, 1]
    for r in res["rows"]:
        for split in ("selection", "heldout"):
            assert r[f"gain_{split}"] == r[f"triple_{split}"] - r[f"mlm_only_{split}"]
    assert res["gain_heldout"]["n"] == 2 and res["gain_heldout"]["ahead"] in (0, 1, 2)
    down = res["downstream"]
    assert len(down["copied"]) == len(down["distilled"]) == 1 and 0 <= down["distilled"][0]["test"] <= 1
    # the seed-1 students are cached under their own keys, seed 0's is the pipeline's default
    from bertbook import pipeline
    from bertbook.configs import get_scale_config
    _, info = pipeline.distilled_student(get_scale_config("tiny"), progress=False)
    assert info["cached"] and info["heldout_mask_accuracy"] == res["rows"][0]["triple_heldout"]


def test_pretrain_settings_rows_same_tokens(tmp_path, monkeypatch):
    import pretrain_settings
    from bertbook.configs import get_scale_config
    base = get_scale_config("tiny").pretrain
    for _, ov in pretrain_settings.rows(base):  # every row sees the same number of token slots
        p = get_scale_config("tiny", **ov).pretrain
        assert p.steps * p.max_seq_len == base.steps * base.max_seq_len
    monkeypatch.setenv("BERTBOOK_CACHE", str(tmp_path))
    res = pretrain_settings.main(["--scale", "tiny", "--rows", "0", "2", "--json"])
    assert [r["label"] for r in res["rows"]] == ["this chapter", "pre-LN, twice the length, half the steps"]
    assert res["rows"][1]["pre_norm"] and res["rows"][1]["max_seq_len"] == 2 * base.max_seq_len
    for r in res["rows"]:
        assert 0 <= r["heldout_mask_accuracy"] <= 1 and 0 <= r["unigram_mask_accuracy"] <= 1


def test_ddp_throughput_runs_1_and_2_processes(tmp_path, monkeypatch):
    import ddp_throughput
    monkeypatch.setenv("BERTBOOK_CACHE", str(tmp_path))
    res = ddp_throughput.main(["--scales", "tiny", "--steps", "2", "--json"])
    assert [r["processes"] for r in res["rows"]] == [1, 2]
    for r in res["rows"]:
        assert r["tokens_per_second"] > 0 and r["global_batch"] == 8 and r["steps"] == 2
        assert abs(r["tokens_per_second_per_process"] * r["processes"] - r["tokens_per_second"]) < 1e-6


def test_scratch_distill_seeds_pairs_each_arm_with_the_control(tmp_path, monkeypatch):
    import scratch_distill_seeds
    monkeypatch.setenv("BERTBOOK_CACHE", str(tmp_path))
    res = scratch_distill_seeds.main(["--scale", "tiny", "--arms", "mlm-only", "attention", "--seeds", "0", "1",
                                      "--finetune-seeds", "0", "--json"])
    rows, control = res["arms"]["attention"]["rows"], res["arms"]["mlm-only"]["rows"]
    assert [r["seed"] for r in rows] == [0, 1] and not any(r["cached"] for r in rows)
    assert all(r["distinct_guesses"] >= 1 and 0 < r["top_guess_share"] <= 1 and r["top_guess"] for r in rows)
    g = res["gains"]["attention"]
    assert g["heldout"]["n"] == 2 and g["heldout"]["mean"] == pytest.approx(
        sum(r["heldout"] - c["heldout"] for r, c in zip(rows, control)) / 2)
    assert g["heldout_ratio_min"] == min(r["heldout"] / c["heldout"] for r, c in zip(rows, control))
    down = res["downstream"]
    assert len(down["attention"]) == 1 and 0 <= down["attention"][0]["test"] <= 1 and "attention" in down["gains"]
    # seed 0 is the pipeline's own stage, cached under the chain's key
    from bertbook import pipeline
    from bertbook.configs import get_scale_config
    _, info = pipeline.scratch_student(get_scale_config("tiny"), arm="attention", progress=False)
    assert info["cached"] and info["heldout_mask_accuracy"] == rows[0]["heldout"]


def test_first_guesses_counts_answers_at_mask_positions_only():
    import types

    import scratch_distill_seeds

    class Answers(torch.nn.Module):  # answers 7 where the input shows [MASK] (id 3), 5 elsewhere
        def forward(self, input_ids, attention_mask):
            logits = torch.zeros(*input_ids.shape, 10)
            logits[..., 5] = 1.0
            logits[..., 7] += 2.0 * (input_ids == 3)
            return types.SimpleNamespace(logits=logits)

    batch = {"input_ids": torch.tensor([[1, 3, 4, 3], [3, 2, 3, 6]]), "attention_mask": torch.ones(2, 4, dtype=torch.long),
             "labels": torch.tensor([[-100, 8, 4, 9], [8, -100, -100, 6]])}  # 3 [MASK] positions, 2 unchanged
    tokenizer = types.SimpleNamespace(convert_ids_to_tokens=lambda i: f"tok{i}")
    data = types.SimpleNamespace(eval_batches=[batch], mask_token_id=3, tokenizer=tokenizer)
    out = scratch_distill_seeds.first_guesses(Answers(), data)
    assert out == {"distinct_guesses": 1, "top_guess": "tok7", "top_guess_share": 1.0}


def test_finetune_settings_chooses_on_validation(tmp_path, monkeypatch):
    import finetune_settings
    monkeypatch.setenv("BERTBOOK_CACHE", str(tmp_path))
    out = tmp_path / "settings.json"
    res = finetune_settings.main(["--scale", "tiny", "--rows", "alpha", "pooling", "--out", str(out)])
    assert [r["name"] for r in res["rows"]] == ["alpha", "pooling"]
    for row in res["rows"]:
        judged = row["judged_on"]
        best = max(row["tried"], key=lambda t: t[judged]["validation"])
        assert row["validation_choice"] == best["value"]
        assert row["pipeline_value"] in [t["value"] for t in row["tried"]]
        for t in row["tried"]:
            for m in row["models"]:
                assert len(t[m]["seeds"]) == (1 if m == "teacher" else len(row["seeds"])) and 0 <= t[m]["validation"] <= 1 and 0 <= t[m]["test"] <= 1
    assert res["rows"][0]["seeds"] == [0, 1, 2] and res["rows"][1]["models"] == ["teacher", "student"]
    assert json.loads(out.read_text()) == res


def test_finetune_settings_refuses_a_row_without_the_pipelines_value(monkeypatch):
    import finetune_settings
    monkeypatch.setattr(finetune_settings, "ROWS", [("alpha", "alpha", [0.3, 0.5], ("student",), [0])])
    with pytest.raises(SystemExit, match="pipeline's value 0.1 is not among"):
        finetune_settings.main(["--scale", "tiny"])


def test_chapter7_settings_file_matches_the_pipeline():
    # The file chapter 7 reads: every row tried the value the cpu configuration uses.
    from bertbook import results
    from bertbook.configs import get_scale_config
    f = get_scale_config("cpu").finetune
    rows = results.load("finetune_settings.json")["rows"]
    assert {r["field"] for r in rows} == {"epochs", "student_lr", "alpha", "temperature", "random_init_lr", "pooling"}
    for r in rows:
        assert r["pipeline_value"] == getattr(f, r["field"]), r["name"]


def test_teacher_step_cost_runs_and_freezes_the_lower_half(tmp_path, monkeypatch):
    import teacher_step_cost
    monkeypatch.setenv("BERTBOOK_CACHE", str(tmp_path))
    res = teacher_step_cost.main(["--scale", "tiny", "--variants", "chain", "frozen", "--warmup", "1",
                                  "--steps", "1", "--json"])
    chain, frozen = res["variants"]["chain"], res["variants"]["frozen"]
    assert chain["s_per_step"] > 0 and chain["vs_chain"] == 1
    assert 0 < frozen["trainable_parameters"] < chain["trainable_parameters"]
    with pytest.raises(SystemExit):
        teacher_step_cost.main(["--scale", "tiny", "--steps", "0"])


def test_teacher_step_cost_full_scores_the_variant(tmp_path, monkeypatch):
    import teacher_step_cost
    monkeypatch.setenv("BERTBOOK_CACHE", str(tmp_path))
    res = teacher_step_cost.main(["--scale", "tiny", "--variants", "frozen", "--full", "--json"])
    frozen = res["variants"]["frozen"]
    assert frozen["steps"] > 0 and 0 <= frozen["heldout_mask_accuracy"] <= 1 and 0 <= frozen["unigram_mask_accuracy"] <= 1
