"""Is a weak 3-layer student our implementation's fault? Fine-tune it twice from the same weights:
once as our `BertForSequenceClassification`, once as `transformers`' own, with the same loop
(`bertbook.finetune.finetune`), batches, optimiser, schedule and seed, and compare.

The 3-layer model is the fine-tuned MiniLM teacher cut to `--layers` (default 0 2 4), keeping its
embeddings, pooler and head: no new parameters, so nothing depends on a fresh initialisation.
Trained on the labels alone, by default for one epoch at lr 1e-4 (`--epochs`, `--lr`).

    python benchmarks/transformers_twin.py --json
    python benchmarks/transformers_twin.py --epochs 2 --lr 3e-4
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from typing import Sequence

import torch
from torch import nn

import bertbook as bb
from bertbook import pipeline
from bertbook.configs import get_scale_config
from bertbook.finetune import evaluate_classifier, finetune, predict_logits


def cut_ours(model: bb.BertForSequenceClassification, layers: Sequence[int]) -> bb.BertForSequenceClassification:
    """A copy of `model` that keeps only encoder layers `layers` (in order)."""
    cut = copy.deepcopy(model)
    cut.bert.encoder.layers = nn.ModuleList(cut.bert.encoder.layers[i] for i in layers)
    cut.config.num_hidden_layers = len(layers)
    return cut


def cut_transformers(model, layers: Sequence[int]):
    """The same cut on a transformers BertForSequenceClassification."""
    cut = copy.deepcopy(model)
    cut.bert.encoder.layer = nn.ModuleList(cut.bert.encoder.layer[i] for i in layers)
    cut.config.num_hidden_layers = len(layers)
    return cut


def no_dropout(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--layers", type=int, nargs="+", default=[0, 2, 4])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-dropout", action="store_true", help="dropout off: both runs are then deterministic")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    cfg = get_scale_config(args.scale)
    f = cfg.finetune
    data = pipeline.classification_data(cfg)
    teacher, tinfo = pipeline.finetuned_teacher(cfg, progress=False)
    bad = [i for i in args.layers if not 0 <= i < teacher.config.num_hidden_layers]
    if bad:
        raise SystemExit(f"--layers {bad} out of range: the teacher has layers 0..{teacher.config.num_hidden_layers - 1}")
    with bb.hf.quiet_transformers():
        twin = bb.to_transformers(teacher)
    models = {"ours": cut_ours(teacher, args.layers), "transformers": cut_transformers(twin, args.layers)}
    res = {"scale": args.scale, "layers": args.layers, "epochs": args.epochs, "lr": args.lr, "seed": args.seed,
           "dropout": not args.no_dropout, "teacher_accuracy": tinfo["test_accuracy"],
           "threads": torch.get_num_threads()}
    logits = {}
    for name, model in models.items():
        if args.no_dropout:
            no_dropout(model)
        t0 = time.perf_counter()
        finetune(model, data.train_batches, args.epochs, args.lr, f.warmup, seed=args.seed, progress=False)
        res[f"{name}_seconds"] = time.perf_counter() - t0
        res[f"{name}_accuracy"] = evaluate_classifier(model, data.test_batches)
        logits[name] = predict_logits(model, data.test_batches)
    res["max_abs_logit_difference"] = float((logits["ours"] - logits["transformers"]).abs().max())
    print(json.dumps(res, indent=None if args.json else 2))
    return res


if __name__ == "__main__":
    main()
