"""Smaller and faster for deployment (chapter 10): dynamic int8 quantisation and ONNX Runtime.

* `quantize_dynamic(model)`: PyTorch's dynamic int8 quantisation of every `nn.Linear` (weights stored
  as int8 with one scale per output row, activations quantised on the fly per batch) and of the
  embedding tables (int8 weight-only). It lives in
  `torch.ao.quantization`, which torch 2.13 marks as deprecated in favour of torchao; torchao's
  import writes errors into the notebooks' output through transformers, so the book keeps
  `torch.ao` (still shipped in 2.13) and silences only its deprecation warning.
* `export_onnx(model, path)`: `torch.onnx.export` (the dynamo exporter, which needs `onnx` and
  `onnxscript`) of a classifier's logits, with dynamic batch and sequence axes.
* `OnnxClassifier(path)`: an `onnxruntime` CPU session (all graph optimisations) that takes our
  batches and returns logits; `quantize_onnx(src, dst)`: ONNX Runtime's own dynamic int8 quantisation.

The `[deploy]` extra installs onnx, onnxscript and onnxruntime.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from typing import Dict, Mapping, Optional

import torch
from torch import Tensor, nn

from .bert import BertForSequenceClassification, is_quantized
from .cache import OUTPUT_HINT, check_writable
from .device import evaluating
from .distilbert import DistilBertForSequenceClassification

CLASSIFIERS = (BertForSequenceClassification, DistilBertForSequenceClassification)


def _require(module: str, what: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{what} needs the package '{module}', which is not installed: "
                          f"pip install 'bertbook[deploy]' (onnx, onnxscript, onnxruntime)") from None


def _require_onnx_tools() -> None:
    """Everything `export_onnx` and `quantize_onnx` import, checked before a model is trained for them."""
    _require("onnx", "ONNX export")
    _require("onnxscript", "ONNX export (the dynamo exporter)")
    _require("onnxruntime", "ONNX quantisation and inference")


def quantize_dynamic(model: nn.Module, per_channel: bool = True, embeddings: bool = True) -> nn.Module:
    """A copy of `model` (eval mode, CPU) with every `nn.Linear` replaced by its dynamic int8 version:
    int8 weights with one scale per output row (`per_channel`, the default) or per matrix, activations
    quantised on the fly per batch. With `embeddings`, the embedding tables are stored as int8 too
    (weight-only, one scale and offset per row; looked up, then dequantised). LayerNorms stay float32.
    The original is left untouched. The defaults are chosen in chapter 10 on the validation split."""
    import copy

    from torch.ao.quantization import (default_dynamic_qconfig, float_qparams_weight_only_qconfig,
                                       per_channel_dynamic_qconfig)

    if is_quantized(model):
        raise ValueError("the model is already quantised")
    spec: Dict[type, object] = {nn.Linear: per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig}
    if embeddings:
        spec[nn.Embedding] = float_qparams_weight_only_qconfig
    model = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)


@contextlib.contextmanager
def _quiet():
    """The exporter's and the quantiser's notes on their own internals (torchvision ops it skips,
    a pre-processing hint) go through `logging` and `warnings`: not the reader's business."""
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


class _Logits(nn.Module):
    """What an exported classifier computes: (input_ids, attention_mask) (B, L) -> logits (B, C)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(input_ids, attention_mask).logits


def export_onnx(model: nn.Module, path: str, example: Optional[Mapping[str, Tensor]] = None) -> str:
    """Write `model` (one of our sequence classifiers, float32) as ONNX to `path`: inputs
    `input_ids`, `attention_mask` (B, L) int64, output `logits` (B, C), B and L dynamic. It is
    exported from the CPU in eval mode, and left on its device in its mode. Returns `path`."""
    if not isinstance(model, CLASSIFIERS):
        raise TypeError(f"export_onnx exports our sequence classifiers ({', '.join(c.__name__ for c in CLASSIFIERS)}); "
                        f"{type(model).__name__} has no ONNX path here")
    if is_quantized(model):
        raise ValueError("a torch-quantised model has no ONNX path: export the float32 model and "
                         "quantise the ONNX file with quantize_onnx")
    _require("onnx", "ONNX export")
    _require("onnxscript", "ONNX export (the dynamo exporter)")
    if example is None:
        example = {"input_ids": torch.full((2, 8), 5, dtype=torch.long),
                   "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    args = (example["input_ids"].long(), example["attention_mask"].long())
    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1,
                                                                      max=model.config.max_position_embeddings)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with _quiet(), evaluating([model], "cpu"):  # the caller's model stays on its device, in its mode
        program = torch.onnx.export(_Logits(model), args, input_names=["input_ids", "attention_mask"],
                                    output_names=["logits"], dynamo=True, verbose=False,
                                    dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
    # The exporter records each node's Python stack trace (with this machine's file paths) and FX
    # node: debugging aids that make the file's size depend on where bertbook is installed.
    for graph in (program.model.graph, *program.model.functions.values()):
        for node in graph:
            node.metadata_props.clear()
    program.save(path)
    return path


def quantize_onnx(src: str, dst: str, per_channel: bool = True) -> str:
    """ONNX Runtime's dynamic int8 quantisation of the float32 model at `src`, written to `dst`: the
    weights of every MatMul with a constant weight and the embedding tables (Gather) as int8, one
    scale per output column (`per_channel`) or per tensor; activations quantised per batch."""
    _require("onnxruntime", "ONNX quantisation")
    from onnxruntime.quantization import QuantType, quantize_dynamic as ort_quantize_dynamic

    if not os.path.exists(src):
        raise FileNotFoundError(f"no ONNX model at {src!r}: export one first (export_onnx)")
    with _quiet():
        ort_quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=per_channel)
    return dst


class OnnxClassifier:
    """An ONNX Runtime CPU session over an exported classifier: `OnnxClassifier(path)(batch)` returns
    the logits (B, C) as a torch tensor for a batch dict with `input_ids` and `attention_mask`."""

    def __init__(self, path: str, threads: Optional[int] = None):
        ort = _require("onnxruntime", "ONNX Runtime inference")
        if not os.path.exists(path):
            raise FileNotFoundError(f"no ONNX model at {path!r}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: Mapping[str, Tensor]) -> Tensor:
        feeds = {"input_ids": batch["input_ids"].long().numpy(),
                 "attention_mask": batch["attention_mask"].long().numpy()}
        (logits,) = self.session.run(["logits"], feeds)
        return torch.from_numpy(logits)


# --------------------------------------------------------------------------- the book's models

FORMATS = ("fp32", "int8", "onnx", "onnx-int8")


def export_onnx_model(name: str, out_dir: str, scale=None, cache_dir: Optional[str] = None,
                      progress: bool = True) -> Dict[str, str]:
    """`bertbook export --format onnx`: the classifier `name` of the pipeline (from the cache, or
    trained) as `model.onnx` and its ONNX Runtime int8 version `model-int8.onnx` in `out_dir`."""
    from . import pipeline

    if name in pipeline.MLM_MODELS:
        raise ValueError(f"{name!r} is a masked-language model; the ONNX export covers the review classifiers "
                         f"({', '.join(n for n in pipeline.MODEL_NAMES if n not in pipeline.MLM_MODELS)})")
    # everything that can fail after training is checked before it
    _require_onnx_tools()
    check_writable(os.path.join(out_dir, "model.onnx"), OUTPUT_HINT)
    model, _ = pipeline.get_model(name, scale, cache_dir, progress)
    fp32 = export_onnx(model, os.path.join(out_dir, "model.onnx"))
    return {"onnx": fp32, "onnx-int8": quantize_onnx(fp32, os.path.join(out_dir, "model-int8.onnx"))}


def compress(scale=None, cache_dir: Optional[str] = None, progress: bool = True,
             min_run_time: float = 1.0, out_dir: Optional[str] = None, rounds: int = 3) -> Dict[str, object]:
    """`bertbook compress --json`: the fine-tuned teacher and the distilled student of chapter 7, each
    as fp32, torch int8, ONNX and ONNX int8, with test accuracy, MB on disk and CPU latency at
    batch 1 (real reviews) and 32 × 64, all measured in this call. The eight variants are timed in
    turn, `rounds` times over (see `benchmark.measure_all`)."""
    from . import pipeline
    from .benchmark import measure_all, size_mb, torch_predict
    from .configs import as_scale_config

    cfg = as_scale_config(scale)
    _require_onnx_tools()  # before the models are trained
    if out_dir is not None:
        check_writable(os.path.join(out_dir, "teacher.onnx"), OUTPUT_HINT)
    data = pipeline.classification_data(cfg)
    models = {"teacher": pipeline.finetuned_teacher(cfg, cache_dir, progress=progress)[0],
              "student": pipeline.finetuned_student(cfg, cache_dir, progress=progress)[0]}
    vocab = models["teacher"].config.vocab_size
    with tempfile.TemporaryDirectory() as tmp:
        where = out_dir or tmp
        variants = {}
        for name, model in models.items():
            model = model.cpu().eval()
            quantized = quantize_dynamic(model)
            onnx_path = export_onnx(model, os.path.join(where, f"{name}.onnx"))
            onnx_int8 = quantize_onnx(onnx_path, os.path.join(where, f"{name}-int8.onnx"))
            variants[(name, "fp32")] = (torch_predict(model), size_mb(model))
            variants[(name, "int8")] = (torch_predict(quantized), size_mb(quantized))
            variants[(name, "onnx")] = (OnnxClassifier(onnx_path), size_mb(onnx_path))
            variants[(name, "onnx-int8")] = (OnnxClassifier(onnx_int8), size_mb(onnx_int8))
        rows = measure_all(variants, data.test_batches, vocab,
                           min_run_time=min_run_time, shape=tuple(cfg.latency_batch), rounds=rounds)
    rows = [{"model": name, "format": fmt, **row} for (name, fmt), row in zip(variants, rows)]
    return {"rows": rows, "threads": torch.get_num_threads(), "scale": cfg.name,
            "batch_shape": list(cfg.latency_batch), "rounds": rounds, "min_run_time": min_run_time}
