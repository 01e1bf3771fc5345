"""A seconds-long run of the whole chain on the tiny config: pretrain -> distill -> fine-tune
(MiniLM teacher, student with and without KD, control) -> export -> transformers.pipeline; then
the same calls again load everything from the cache."""
import json

import pytest
import torch
import transformers

from bertbook import pipeline
from bertbook.__main__ import main
from bertbook.configs import get_config


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def test_chain_trains_then_loads_from_cache(cache_dir, tmp_path, capsys):
    cfg = get_config("tiny")
    teacher, pre = pipeline.pretrained_teacher(cfg, cache_dir, progress=False)
    assert not pre["cached"] and 0.0 <= pre["heldout_mlm_accuracy"] <= 1.0
    student, dis = pipeline.distilled_student(cfg, cache_dir, progress=False)
    assert not dis["cached"] and student.config.num_hidden_layers == 1
    res = pipeline.report(cfg, cache_dir, progress=False, latency_repeats=1)
    for k in ("pretrain_heldout_mlm_accuracy", "unigram_baseline_accuracy", "teacher_accuracy",
              "student_accuracy", "student_no_kd_accuracy", "random_init_accuracy", "retention",
              "speedup", "teacher_parameters", "student_parameters"):
        assert k in res
    assert res["cached"]["pretrain"] and res["cached"]["distill"]
    assert not res["cached"]["teacher"]

    again, info = pipeline.pretrained_teacher(cfg, cache_dir, progress=False)
    assert info["cached"] and info["heldout_mlm_accuracy"] == pre["heldout_mlm_accuracy"]
    for (k, v), w in zip(teacher.state_dict().items(), again.state_dict().values()):
        assert torch.equal(v, w), k
    assert pipeline.report(cfg, cache_dir, progress=False, latency_repeats=1)["cached"] == \
        {k: True for k in res["cached"]}

    for name in ("pretrained", "distilled"):
        out = str(tmp_path / name)
        pipeline.export(name, out, cfg, cache_dir, progress=False)
        fill = transformers.pipeline("fill-mask", model=out, device="cpu")
        assert len(fill("the [MASK] of the city.")) == 5
    out = str(tmp_path / "student")
    pipeline.export("student", out, cfg, cache_dir, progress=False)
    clf = transformers.pipeline("text-classification", model=out, device="cpu")
    assert clf("a wonderful film")[0]["label"] in ("rotten", "fresh")


def test_cli_report_json_and_bad_inputs(cache_dir, capsys, monkeypatch):
    assert main(["report", "--scale", "tiny", "--json", "--quiet", "--cache-dir", cache_dir]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["scale"] == "tiny" and all(res["cached"].values())  # the same models as above
    with pytest.raises(ValueError, match="mean"):  # refused before anything is trained
        pipeline.export("teacher", "/nonexistent", get_config("tiny", finetune__pooling="mean"), cache_dir)
    with pytest.raises(ValueError, match="unknown model name"):
        pipeline.get_model("nope", "tiny", cache_dir)
    with pytest.raises(ValueError, match="unknown scale"):
        get_config("huge")
    with pytest.raises(ValueError, match="override"):
        get_config("cpu", pretrain__nope=1)
    with pytest.raises(SystemExit):
        main(["export", "--model", "nope", "--out", "x"])


def test_unknown_corpus_name_is_clear():
    from bertbook.data import load_wiki_corpus
    with pytest.raises(ValueError, match="unknown corpus"):
        load_wiki_corpus("wikipedia-everything")
