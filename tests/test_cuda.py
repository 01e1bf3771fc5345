"""CUDA checks (skipped without a GPU; benchmarks/gpu_check.sh runs them on one).

Parity with transformers on the GPU: fp32 to 1e-4 (TF32 matmuls are off by default in PyTorch).
Under bf16 autocast both implementations round differently, so neither equals the fp32 result;
the test states the tolerance as: our bf16 logits are within 0.1 of the fp32 logits (absolute,
logits of order 1) and no further from them than 2x transformers' own bf16 error + 0.01.
Then a few training steps of each loop with mixed precision, and the fp16 + GradScaler path
(Colab's T4) forced on a bf16-capable GPU. Which precision a GPU gets is tested without one, in
tests/test_device.py.
"""
import pytest
import torch
import transformers

import bertbook.device
import bertbook.training
from bertbook.bert import BertConfig, BertForPreTraining
from bertbook.distill import distill
from bertbook.distilbert import DistilBertForMaskedLM, student_from_teacher
from bertbook.finetune import finetune, make_batches
from bertbook.bert import BertForSequenceClassification
from bertbook.hf import to_transformers
from bertbook.pretrain import pretrain

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEV = torch.device("cuda")


def _config(**kw):
    c = dict(vocab_size=512, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
             intermediate_size=128, max_position_embeddings=64)
    c.update(kw)
    return BertConfig(**c)


def _batch(vocab=512, B=4, L=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (B, L), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0  # some padding
    labels = torch.where((torch.rand(B, L, generator=g) < 0.15) & (mask == 1), ids, torch.full_like(ids, -100))
    labels[0, 1] = ids[0, 1]  # at least one label
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": labels, "next_sentence_label": torch.tensor([0, 1, 0, 1])}


@pytest.mark.parametrize("cls", [BertForPreTraining, DistilBertForMaskedLM])
def test_parity_fp32_and_bf16_on_cuda(cls):
    torch.manual_seed(0)
    ours = cls(_config()).eval()
    theirs = to_transformers(ours, "sdpa").to(DEV).eval()
    ours.to(DEV)
    b = {k: v.to(DEV) for k, v in _batch().items()}
    kw = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
    if cls is BertForPreTraining:
        kw["token_type_ids"] = b["token_type_ids"]
    real = b["attention_mask"].bool()
    with torch.no_grad():
        ref = ours(**kw).logits.float()
        hf_ref = theirs(**kw).logits.float()
        assert (ref - hf_ref)[real].abs().max().item() < 1e-4
        if not torch.cuda.is_bf16_supported():
            pytest.skip("no bf16 on this GPU")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            ours_bf16 = ours(**kw).logits.float()
            hf_bf16 = theirs(**kw).logits.float()
    ours_err = (ours_bf16 - ref)[real].abs().max().item()
    hf_err = (hf_bf16 - hf_ref)[real].abs().max().item()
    assert ours_err < 0.1, ours_err
    assert ours_err <= 2 * hf_err + 0.01, (ours_err, hf_err)


def _loader(n=6, **kw):
    return [_batch(seed=i, **kw) for i in range(n)]


def test_pretrain_distill_finetune_on_cuda_with_amp():
    torch.manual_seed(0)
    teacher = BertForPreTraining(_config())
    h = pretrain(teacher, _loader(), steps=6, lr=1e-3, device="cuda", progress=False, log_every=2)
    assert all(torch.isfinite(torch.tensor(h["loss"])))
    assert next(teacher.parameters()).device.type == "cuda"
    student = student_from_teacher(teacher)
    h = distill(teacher, student, _loader(), steps=4, device="cuda", progress=False, log_every=2)
    assert all(torch.isfinite(torch.tensor(h["loss"])))
    clf = BertForSequenceClassification(_config())
    ids = [list(range(5, 5 + k)) for k in (5, 9, 12, 7, 3, 20, 8, 11)]
    batches = make_batches(ids, [0, 1, 0, 1, 1, 0, 1, 0], batch_size=4)
    h = finetune(clf, batches, epochs=2, device="cuda", progress=False, log_every=1)
    assert all(torch.isfinite(torch.tensor(h["loss"])))
    transfer = make_batches(ids[:5], None, batch_size=4)  # unlabelled: the teacher's logits on the GPU
    for pseudo_labels in (False, True):
        h = finetune(BertForSequenceClassification(_config()), batches, 1, teacher=clf, transfer_batches=transfer,
                     pseudo_labels=pseudo_labels, device="cuda", progress=False, log_every=1)
        assert len(h["loss"]) == 4 and all(torch.isfinite(torch.tensor(h["loss"])))


def test_fp16_grad_scaler_path(monkeypatch):
    """What a T4 runs: fp16 autocast with loss scaling, forced here on any GPU."""
    monkeypatch.setattr(bertbook.device, "autocast_dtype", lambda device: torch.float16)
    monkeypatch.setattr(bertbook.training, "autocast_dtype", lambda device: torch.float16)
    monkeypatch.setattr(bertbook.training, "needs_grad_scaler", lambda device: True)
    torch.manual_seed(0)
    model = BertForPreTraining(_config()).to(DEV)
    opt = bertbook.training.TrainStep(model, steps=4, lr=1e-3, device="cuda")
    assert opt.amp and opt.scaler.is_enabled()
    before = model.bert.embeddings.word_embeddings.weight.detach().clone()
    for b in _loader(4):
        b = {k: v.to(DEV) for k, v in b.items()}
        with opt.autocast():
            out = model(**b)
        assert out.logits.dtype == torch.float16
        opt.step(out.loss)
    assert not torch.equal(before, model.bert.embeddings.word_embeddings.weight)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_compile_flag_runs():
    if not hasattr(torch, "compile"):
        pytest.skip("no torch.compile")
    torch.manual_seed(0)
    model = BertForPreTraining(_config())
    h = pretrain(model, _loader(3), steps=3, device="cuda", compile=True, progress=False, log_every=1)
    assert all(torch.isfinite(torch.tensor(h["loss"])))


def test_measure_latency_gives_a_gpu_model_back_on_the_gpu():
    from bertbook.report import measure_latency

    model = BertForSequenceClassification(_config()).to(DEV).train()
    measure_latency({"m": model}, batch_size=2, seq_len=8, min_run_time=0.01, rounds=1)
    assert next(model.parameters()).device.type == "cuda" and model.training


def test_export_onnx_gives_a_gpu_model_back_on_the_gpu(tmp_path):
    pytest.importorskip("onnxscript")
    from bertbook.deploy import export_onnx

    model = BertForSequenceClassification(_config()).to(DEV).train()
    export_onnx(model, str(tmp_path / "m.onnx"))
    assert next(model.parameters()).device.type == "cuda" and model.training
