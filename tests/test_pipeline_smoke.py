"""A seconds-long run of the whole chain on the tiny config: pretrain; MLM teacher -> distil (triple
loss and MLM alone; from random weights: MLM alone, triple loss, attention transfer) -> fine-tune
(MiniLM teacher, student with and without KD, with the transfer set and its pseudo-label control,
control) -> export -> transformers.pipeline; then the same calls again load everything from the cache."""
import json

import pytest
import torch
import transformers

from bertbook import pipeline, report
from bertbook.__main__ import main
from bertbook.configs import CHAIN_SCRATCH_ARMS, get_scale_config


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def test_chain_trains_then_loads_from_cache(cache_dir, tmp_path, capsys):
    cfg = get_scale_config("tiny")
    teacher, pre = pipeline.pretrained_teacher(cfg, cache_dir, progress=False)
    assert not pre["cached"] and 0.0 <= pre["heldout_mask_accuracy"] <= 1.0
    for k in ("heldout_random_accuracy", "heldout_unchanged_accuracy", "heldout_nsp_accuracy",
              "train_nsp_accuracy", "unigram_mask_accuracy"):
        assert 0.0 <= pre[k] <= 1.0, k
    mlm_t, tmlm = pipeline.mlm_teacher(cfg, cache_dir, progress=False)
    assert not tmlm["cached"] and mlm_t.config.vocab_size == 30522  # MiniLM's vocabulary
    bert, _ = pipeline.minilm()
    assert torch.equal(mlm_t.bert.embeddings.word_embeddings.weight, mlm_t.mlm.tied_embeddings[0].weight)
    assert mlm_t.bert.embeddings.word_embeddings.weight is mlm_t.mlm.tied_embeddings[0].weight
    assert not torch.equal(bert.encoder.layers[0].attention.qkv.weight,
                           mlm_t.bert.encoder.layers[0].attention.qkv.weight)  # trained, MiniLM untouched
    student, dis = pipeline.distilled_student(cfg, cache_dir, progress=False)
    assert not dis["cached"] and student.config.num_hidden_layers == 2 and not dis["mlm_only"]
    control, dmo = pipeline.distilled_student(cfg, cache_dir, mlm_only=True, progress=False)
    assert not dmo["cached"] and dmo["mlm_only"] and dmo["key"] != dis["key"]
    assert all(c == 0 for c in dmo["history"]["ce"]) and any(c > 0 for c in dis["history"]["ce"])
    # The same shape from random weights, one stage per arm: nothing of the teacher in the weights
    scratch = {arm: pipeline.scratch_student(cfg, cache_dir, arm, progress=False) for arm in CHAIN_SCRATCH_ARMS}
    assert len({info["key"] for _, info in scratch.values()}) == 3
    for arm, (model, info) in scratch.items():
        assert not info["cached"] and info["arm"] == arm and model.config.num_hidden_layers == cfg.scratch.num_hidden_layers
        assert not torch.equal(model.distilbert.embeddings.word_embeddings.weight,
                               mlm_t.bert.embeddings.word_embeddings.weight)
    h = {arm: info["history"] for arm, (_, info) in scratch.items()}
    assert all(v == 0 for k in ("ce", "cos", "att", "val") for v in h["mlm-only"][k])
    assert all(v > 0 for v in h["attention"]["att"]) and all(v > 0 for v in h["distilled"]["ce"])
    # a weight an arm does not train on is not in its key; one it does is
    for field, unchanged in (("alpha_att", ("mlm-only", "distilled")), ("alpha_ce", ("mlm-only", "attention"))):
        other = get_scale_config("tiny", **{f"scratch__{field}": 0.5})
        for arm in CHAIN_SCRATCH_ARMS:
            same = pipeline.scratch_student(other, cache_dir, arm, progress=False)[1]["key"] == scratch[arm][1]["key"]
            assert same == (arm in unchanged), (field, arm)
    with pytest.raises(ValueError, match="valid arms"):
        pipeline.scratch_student(cfg, cache_dir, "telepathy", progress=False)
    res = report.report(cfg, cache_dir, progress=False, latency_min_run_time=0.01, latency_rounds=1)
    for k in ("pretrain_heldout_mask_accuracy", "pretrain_unigram_mask_accuracy", "teacher_mlm_heldout_mask_accuracy",
              "teacher_mlm_heldout_nsp_accuracy", "distilled_heldout_mask_accuracy",
              "distilled_mlm_only_heldout_mask_accuracy", "copied_heldout_mask_accuracy",
              "unigram_baseline_accuracy", "teacher_accuracy",
              "student_accuracy", "student_no_kd_accuracy", "random_init_accuracy", "retention",
              "speedup", "teacher_parameters", "student_parameters", "student_transfer_accuracy",
              "student_pseudo_label_accuracy", "transfer_examples", "scratch_student_mlm_only_heldout_mask_accuracy",
              "scratch_student_distilled_heldout_mask_accuracy",
              "scratch_student_attention_transfer_heldout_mask_accuracy"):
        assert k in res
    assert res["scratch_student_attention_transfer_heldout_mask_accuracy"] == \
        scratch["attention"][1]["heldout_mask_accuracy"] and res["cached"]["scratch_attention"]
    assert res["transfer_examples"] == 48 and 0 <= res["student_transfer_accuracy"] <= 1
    assert res["cached"]["pretrain"] and res["cached"]["mlm_teacher"] and res["cached"]["distill"]
    assert res["cached"]["distill_mlm_only"] and not res["cached"]["teacher"]

    # The chain's checkpoints are the ones chain_keys names from the settings alone, without training.
    import os
    files = sorted(os.listdir(os.path.join(cache_dir, "checkpoints")))
    on_disk = dict(f[:-len(".safetensors")].rsplit("-", 1) for f in files if f.endswith(".safetensors"))
    assert on_disk == pipeline.chain_keys(cfg, cache_dir), files

    again, info = pipeline.pretrained_teacher(cfg, cache_dir, progress=False)
    assert info["cached"] and info["heldout_mask_accuracy"] == pre["heldout_mask_accuracy"]
    for (k, v), w in zip(teacher.state_dict().items(), again.state_dict().values()):
        assert torch.equal(v, w), k
    assert report.report(cfg, cache_dir, progress=False, latency_min_run_time=0.01, latency_rounds=1)["cached"] == \
        {k: True for k in res["cached"]}
    # A changed setting of a stage is a new key for it and for everything downstream, not upstream.
    changed = get_scale_config("tiny", distill__alpha_ce=1.0)
    assert pipeline.mlm_teacher(changed, cache_dir, progress=False)[1]["key"] == tmlm["key"]
    assert pipeline.distilled_student(changed, cache_dir, progress=False)[1]["key"] != dis["key"]
    changed = get_scale_config("tiny", mlm_teacher__lr=1e-4)
    assert pipeline.mlm_teacher(changed, cache_dir, progress=False)[1]["key"] != tmlm["key"]
    assert pipeline.distilled_student(changed, cache_dir, progress=False)[1]["key"] != dis["key"]

    # The transfer set: the teacher's logits are a cached stage; its size is in the transfer stages'
    # keys and in no other stage's (their models stay cached when it changes).
    logits, linfo = pipeline.teacher_logits(cfg, cache_dir, progress=False)
    assert linfo["cached"] and logits["labelled"].shape == (32, 2) and logits["transfer"].shape == (48, 2)
    soft, tra = pipeline.transfer_student(cfg, cache_dir, progress=False)
    _, pse = pipeline.transfer_student(cfg, cache_dir, pseudo_labels=True, progress=False)
    assert tra["cached"] and pse["cached"] and tra["key"] != pse["key"] and pse["pseudo_labels"]
    assert tra["test_accuracy"] == res["student_transfer_accuracy"] and tra["teacher_logits_key"] == linfo["key"]
    none = get_scale_config("tiny", finetune__transfer_examples=0)
    for stage, kw in ((pipeline.finetuned_teacher, {}), (pipeline.finetuned_student, {"kd": True}),
                      (pipeline.finetuned_student, {"kd": False}), (pipeline.random_init_classifier, {})):
        a, b = stage(cfg, cache_dir, progress=False, **kw)[1], stage(none, cache_dir, progress=False, **kw)[1]
        assert a["cached"] and b["cached"] and a["key"] == b["key"], stage.__name__
    assert pipeline.teacher_logits(none, cache_dir, progress=False)[1]["key"] != linfo["key"]
    plain, zero = pipeline.transfer_student(none, cache_dir, progress=False)
    assert not zero["cached"] and zero["key"] != tra["key"] and zero["transfer_examples"] == 0
    # without a transfer set the transfer stage trains exactly the distilled student
    kd_student, _ = pipeline.finetuned_student(cfg, cache_dir, kd=True, progress=False)
    for (k, v), w in zip(kd_student.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(v, w), k
    assert not all(torch.equal(v, w) for v, w in zip(soft.state_dict().values(), plain.state_dict().values()))

    for name in ("pretrained", "mlm-teacher", "mlm-student", "scratch-student-attention"):
        out = str(tmp_path / name)
        report.export(name, out, cfg, cache_dir, progress=False)
        fill = transformers.pipeline("fill-mask", model=out, device="cpu")
        assert len(fill("the [MASK] of the city.")) == 5
    for name in ("student", "student-transfer"):
        out = str(tmp_path / name)
        report.export(name, out, cfg, cache_dir, progress=False)
        clf = transformers.pipeline("text-classification", model=out, device="cpu")
        assert clf("a wonderful film")[0]["label"] in ("rotten", "fresh")


def test_cli_report_json_and_bad_inputs(cache_dir, capsys, monkeypatch):
    assert main(["report", "--scale", "tiny", "--json", "--quiet", "--cache-dir", cache_dir]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["scale"] == "tiny" and all(res["cached"].values())  # the same models as above
    with pytest.raises(ValueError, match="mean"):  # refused before anything is trained
        report.export("teacher", "/nonexistent", get_scale_config("tiny", finetune__pooling="mean"), cache_dir)
    with pytest.raises(ValueError, match="unknown model name"):
        pipeline.get_model("nope", "tiny", cache_dir)
    with pytest.raises(ValueError, match="unknown scale"):
        get_scale_config("huge")
    with pytest.raises(ValueError, match="override"):
        get_scale_config("cpu", pretrain__nope=1)
    with pytest.raises(SystemExit):
        main(["export", "--model", "nope", "--out", "x"])


def test_unknown_corpus_name_is_clear():
    from bertbook.data import load_wiki_corpus
    with pytest.raises(ValueError, match="unknown corpus"):
        load_wiki_corpus("wikipedia-everything")


def test_distill_layers_none_is_every_other_teacher_layer(cache_dir):
    from bertbook.distilbert import default_student_layers

    cfg = get_scale_config("tiny", distill__layers=None)  # documented: every other teacher layer
    student, info = pipeline.copied_student(cfg, cache_dir, progress=False)
    assert info["layers"] == default_student_layers(6) == [0, 2, 5]  # of MiniLM's 6
    assert student.config.num_hidden_layers == 3
    assert pipeline.copied_student(cfg, cache_dir, layers=[1, 3], progress=False)[1]["layers"] == [1, 3]
