"""A baseline without fine-tuning: frozen MiniLM sentence vectors + logistic regression.

Each review becomes the mean of MiniLM's last hidden states (the pooling MiniLM was trained for);
nothing in MiniLM is trained. A logistic regression on these 384 numbers is fitted on the same
training reviews as the book's teacher (the CPU configuration's 4,000 by default), its L2 strength
chosen on the validation split, and scored once on the test split. It tells how much of the
fine-tuned models' accuracy the pretrained vectors already hold.

    python benchmarks/linear_probe.py                 # the CPU configuration's 4,000 reviews
    python benchmarks/linear_probe.py --train-examples 0   # all 10,202
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Dict, List, Tuple

import torch

from bertbook import pipeline
from bertbook.bert import pool
from bertbook.configs import get_scale_config
from bertbook.hf import load_minilm, quiet_transformers


@torch.no_grad()
def sentence_vectors(model, batches: List[Dict[str, torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, D) mean-pooled last hidden states and (N,) labels, in example order (by each batch's `index`)."""
    model.eval()
    n = 1 + max(int(b["index"].max()) for b in batches)
    out, labels = torch.empty(n, model.config.hidden_size), torch.empty(n, dtype=torch.long)
    for b in batches:
        h = model(b["input_ids"], b["attention_mask"]).last_hidden_state
        out[b["index"]] = pool(h, b["attention_mask"], "mean")
        labels[b["index"]] = b["labels"]
    return out, labels


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, iters: int = 200) -> torch.nn.Linear:
    """Binary/multiclass logistic regression, full batch, L-BFGS; loss = CE + l2 * |W|^2."""
    torch.manual_seed(0)
    clf = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.LBFGS(clf.parameters(), max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(clf(x), y) + l2 * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return clf


def accuracy(clf: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((clf(x).argmax(-1) == y).float().mean())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-examples", type=int, default=None,
                    help="default: the CPU configuration's; 0 for the whole training split")
    ap.add_argument("--l2", type=float, nargs="+", default=[0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    ap.add_argument("--eval-examples", type=int, default=None,
                    help="score on only the first N validation and test reviews (the smoke test)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    overrides = {"finetune__test_examples": args.eval_examples}  # caps validation and test alike
    if args.train_examples is not None:
        overrides["finetune__train_examples"] = args.train_examples or None
    t0 = time.perf_counter()
    data = pipeline.classification_data(get_scale_config("cpu", **overrides))  # the teacher's reviews and batches
    with quiet_transformers():  # MiniLM's unused pooler weights are reported otherwise
        model, _ = load_minilm()
    xs, ys = {}, {}
    for name, batches in (("train", data.train_batches), ("validation", data.validation_batches),
                          ("test", data.test_batches)):
        xs[name], ys[name] = sentence_vectors(model, batches)
    mu, sd = xs["train"].mean(0), xs["train"].std(0) + 1e-6  # standardise with training statistics
    xs = {k: (v - mu) / sd for k, v in xs.items()}
    val = {l2: accuracy(fit_logistic(xs["train"], ys["train"], l2), xs["validation"], ys["validation"])
           for l2 in args.l2}
    best = max(val, key=val.get)
    clf = fit_logistic(xs["train"], ys["train"], best)
    res = {"train_examples": len(ys["train"]), "validation_accuracy_by_l2": val, "chosen_l2": best,
           "train_accuracy": accuracy(clf, xs["train"], ys["train"]),
           "test_accuracy": accuracy(clf, xs["test"], ys["test"]),
           "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(res, indent=None if args.json else 2))
    return res


if __name__ == "__main__":
    main()
