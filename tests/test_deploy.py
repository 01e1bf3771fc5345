"""Deployment (chapter 10): int8 quantisation, ONNX export and ONNX Runtime, the benchmark harness."""
from __future__ import annotations

import builtins
import json

import pytest
import torch

from bertbook import benchmark, deploy
from bertbook.bert import BertConfig, BertForPreTraining, BertForSequenceClassification
from bertbook.distilbert import student_from_teacher
from bertbook.hf import save_pretrained


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    teacher = BertForSequenceClassification(config).eval()
    return {"teacher": teacher, "student": student_from_teacher(teacher, [0]).eval()}


def reviews(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (n, 13), generator=g)
    mask = torch.ones_like(ids)
    mask[::2, 9:] = 0  # every other review padded
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask,
            "labels": torch.randint(0, 2, (n,), generator=g)}


@pytest.mark.parametrize("name", ["teacher", "student"])
def test_onnx_matches_ours_at_other_shapes(models, tmp_path, name):
    model = models[name]
    path = deploy.export_onnx(model, str(tmp_path / f"{name}.onnx"))
    session = deploy.OnnxClassifier(path)
    for batch in (reviews(), {k: v[:1, :5] for k, v in reviews(seed=1).items() if k != "labels"}):  # batch and length are dynamic
        with torch.no_grad():
            ours = model(batch["input_ids"], batch["attention_mask"]).logits
        assert (session(batch) - ours).abs().max() < 1e-4
    int8 = deploy.OnnxClassifier(deploy.quantize_onnx(path, str(tmp_path / f"{name}-int8.onnx")))
    assert (int8(reviews()) - session(reviews())).abs().max() < 0.05  # close, not equal: int8 weights


def test_onnx_file_does_not_depend_on_where_bertbook_lives(models, tmp_path):
    """The exporter's debugging metadata (stack traces with this machine's paths) is dropped: the
    same model gives the same bytes, and the file names no source path (CI once saw 69.8 vs 69.9 MB)."""
    import os
    import onnx
    import bertbook

    a = deploy.export_onnx(models["student"], str(tmp_path / "a.onnx"))
    b = deploy.export_onnx(models["student"], str(tmp_path / "sub" / "b.onnx"))
    data = open(a, "rb").read()
    assert data == open(b, "rb").read()
    assert os.path.dirname(bertbook.__file__).encode() not in data
    assert not any(node.metadata_props for node in onnx.load(a).graph.node)


def test_torch_int8_is_a_quantised_copy(models):
    model = models["teacher"]
    q = deploy.quantize_dynamic(model)
    assert deploy.is_quantized(q) and not deploy.is_quantized(model)  # the original is untouched
    b = reviews()
    with torch.no_grad():
        assert (q(b["input_ids"], b["attention_mask"]).logits - model(b["input_ids"], b["attention_mask"]).logits).abs().max() < 0.05
    assert benchmark.size_mb(q) < benchmark.size_mb(model)
    with pytest.raises(ValueError, match="already quantised"):
        deploy.quantize_dynamic(q)


def test_quantisation_options(models):
    """Per-channel (default) or per-tensor weight scales; embedding tables int8 (default) or float32."""
    from torch.ao.nn.quantized import Embedding as QEmbedding
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    model = models["teacher"]
    default, per_tensor = deploy.quantize_dynamic(model), deploy.quantize_dynamic(model, per_channel=False)
    qlinears = [m for m in default.modules() if isinstance(m, QLinear)]
    assert qlinears and all(m.weight().qscheme() == torch.per_channel_affine for m in qlinears)
    assert all(m.weight().qscheme() == torch.per_tensor_affine for m in per_tensor.modules() if isinstance(m, QLinear))
    assert any(isinstance(m, QEmbedding) for m in default.modules())
    floats = deploy.quantize_dynamic(model, embeddings=False)
    assert not any(isinstance(m, QEmbedding) for m in floats.modules())
    assert benchmark.size_mb(default) < benchmark.size_mb(floats)
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert len(qlinears) == n_linear  # every nn.Linear, the classifier head included


def test_measure_all_rounds(models):
    predicts = {"a": (benchmark.torch_predict(models["teacher"]), 2.0), "b": (benchmark.torch_predict(models["student"]), 1.0)}
    rows = benchmark.measure_all(predicts, [reviews()], 100, threads=1, min_run_time=0.02, shape=(4, 16), rounds=3)
    assert [r["mb"] for r in rows] == [2.0, 1.0]
    for r in rows:
        assert len(r["ms_batch1_rounds"]) == 3 and min(r["ms_batch32_rounds"]) > 0 and r["ms_batch32_iqr"] >= 0
    with pytest.raises(ValueError, match="rounds"):
        benchmark.measure_all(predicts, [reviews()], 100, rounds=0)


def test_clear_errors(models, tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="has no ONNX path"):
        deploy.export_onnx(BertForPreTraining(models["teacher"].config), str(tmp_path / "x.onnx"))
    q = deploy.quantize_dynamic(models["student"])
    with pytest.raises(ValueError, match="torch-quantised model has no ONNX path"):
        deploy.export_onnx(q, str(tmp_path / "q.onnx"))
    with pytest.raises(ValueError, match="int8-quantised"):
        save_pretrained(q, str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError, match="no ONNX model"):
        deploy.OnnxClassifier(str(tmp_path / "missing.onnx"))
    real_import = builtins.__import__

    def no_onnxruntime(name, *a, **k):
        if name.startswith("onnxruntime"):
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    import importlib
    monkeypatch.setattr(importlib, "import_module", lambda name: no_onnxruntime(name))
    with pytest.raises(ImportError, match=r"pip install 'bertbook\[deploy\]'"):
        deploy.OnnxClassifier(str(tmp_path / "missing.onnx"))


def test_harness(models):
    predict = benchmark.torch_predict(models["student"])
    batches = [reviews(), reviews(seed=2)]
    acc = benchmark.accuracy(predict, batches)
    by_hand = sum(int((predict(b).argmax(-1) == b["labels"]).sum()) for b in batches) / 12
    assert acc == by_hand
    singles = benchmark.single_reviews(batches, n=5)
    assert len(singles) == 5 and singles[0]["input_ids"].shape == (1, 9) and singles[1]["input_ids"].shape == (1, 13)
    t = benchmark.latency(predict, singles, threads=1, min_run_time=0.05)
    assert t["median_ms"] > 0 and t["iqr_ms"] >= 0 and t["runs"] >= 1 and t["threads"] == 1
    row = benchmark.measure(predict, 1.5, batches, 100, min_run_time=0.05, shape=(4, 16), model="student", format="fp32")
    assert row["model"] == "student" and row["accuracy"] == acc and row["mb"] == 1.5
    assert row["ms_batch1"] > 0 and row["ms_batch32"] > 0
    with pytest.raises(ValueError, match="empty"):
        benchmark.accuracy(predict, [])


def test_compress_cli_tiny(tmp_path, monkeypatch, capsys):
    """`python -m bertbook compress --json --scale tiny`: eight rows, every figure measured."""
    from bertbook.__main__ import main
    monkeypatch.setenv("BERTBOOK_CACHE", str(tmp_path))
    assert main(["compress", "--json", "--scale", "tiny", "--quiet", "--min-run-time", "0.05", "--rounds", "2"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["format"]) for r in res["rows"]] == [(m, f) for m in ("teacher", "student") for f in deploy.FORMATS]
    by = {(r["model"], r["format"]): r for r in res["rows"]}
    for m in ("teacher", "student"):
        assert abs(by[m, "onnx"]["accuracy"] - by[m, "fp32"]["accuracy"]) < 1e-9  # the same function
        # both int8 routes store the linear layers and the embedding tables as int8
        assert by[m, "int8"]["mb"] < 0.5 * by[m, "fp32"]["mb"] and by[m, "onnx-int8"]["mb"] < 0.5 * by[m, "onnx"]["mb"]
        assert len(by[m, "fp32"]["ms_batch32_rounds"]) == 2
    assert res["threads"] >= 1 and res["rounds"] == 2
    out = tmp_path / "onnx"
    assert main(["export", "--model", "student", "--format", "onnx", "--out", str(out), "--scale", "tiny", "--quiet"]) == 0
    assert (out / "model.onnx").exists() and (out / "model-int8.onnx").exists()
    with pytest.raises(ValueError, match="masked-language model"):
        main(["export", "--model", "mlm-teacher", "--format", "onnx", "--out", str(out), "--scale", "tiny", "--quiet"])


def test_cpu_has_vnni_reads_the_cpu_flags(monkeypatch, tmp_path):
    import io

    real_open = builtins.open

    def fake(flags):
        def opener(path, *args, **kwargs):
            if path == "/proc/cpuinfo":
                return io.StringIO(f"processor\t: 0\nflags\t\t: {flags}\n")
            return real_open(path, *args, **kwargs)
        return opener

    for flags, expected in (("fpu avx2 avx512f avx512_vnni", True), ("fpu avx2 avx_vnni", True), ("fpu sse avx2", False)):
        monkeypatch.setattr(builtins, "open", fake(flags))
        assert benchmark.cpu_has_vnni() is expected

    def missing(path, *args, **kwargs):
        raise FileNotFoundError(path)

    monkeypatch.setattr(builtins, "open", missing)
    assert benchmark.cpu_has_vnni() is None


def test_torch_predict_and_export_leave_the_callers_model_as_it_was(models, tmp_path):
    model = models["student"]
    batch = reviews()
    with torch.no_grad():
        expected = model(batch["input_ids"], batch["attention_mask"]).logits
    model.train()  # dropout on: the caller is training it
    try:
        predict = benchmark.torch_predict(model)
        assert torch.equal(predict(batch), expected)  # predicted in eval mode
        assert model.training
        deploy.export_onnx(model, str(tmp_path / "m.onnx"))
        assert model.training
    finally:
        model.eval()


def test_exports_check_what_they_can_before_training(tmp_path, monkeypatch):
    from bertbook import pipeline, report

    monkeypatch.setattr(pipeline, "get_model", lambda *a, **k: pytest.fail("trained before the checks"))
    monkeypatch.setattr(report, "get_model", lambda *a, **k: pytest.fail("trained before the checks"))
    blocker = tmp_path / "a-file"
    blocker.write_text("where the output folder should be")
    with pytest.raises(OSError, match="cannot write .*a-file.*choose another output folder"):
        report.export("student", str(blocker), "tiny", str(tmp_path / "cache"))
    with pytest.raises(OSError, match="cannot write .*a-file"):
        deploy.export_onnx_model("student", str(blocker), "tiny", str(tmp_path / "cache"))
    import importlib

    real_import_module = importlib.import_module

    def no_onnx(name, *args, **kwargs):
        if name == "onnx":
            raise ImportError("No module named 'onnx'")
        return real_import_module(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_onnx)
    with pytest.raises(ImportError, match="pip install 'bertbook\\[deploy\\]'"):
        deploy.export_onnx_model("student", str(tmp_path / "out"), "tiny", str(tmp_path / "cache"))
    with pytest.raises(ImportError, match="pip install 'bertbook\\[deploy\\]'"):
        deploy.compress("tiny", str(tmp_path / "cache"))
