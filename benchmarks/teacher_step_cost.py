"""What one optimiser step of chapter 6's MLM teacher (continued pretraining of MiniLM) costs under two of
the compute budget's candidate cuts, against the step as the chain trains it:

* `chain`: every weight learns (the chain's recipe);
* `frozen`: the embeddings and the lower half of the encoder frozen, so only the upper layers and the
  heads learn (the backward pass stops halfway; the MLM decoder, tied to the word embeddings, is
  frozen with them, its bias still learns);
* `compile`: `torch.compile` on the model; the first call's compile time is reported apart.

Each variant starts from the same weights and batches, runs `--warmup` steps (untimed apart from
`first_call_s`), then `--steps` timed steps. With `--full` each variant is instead trained for the
stage's whole `mlm_teacher.steps`, as the chain trains it, and scored like the chain's teacher
(held-out `[MASK]` accuracy beside the unigram guess, NSP): what a cut costs in the result. Nothing is
cached or kept.

    python benchmarks/teacher_step_cost.py --json
    python benchmarks/teacher_step_cost.py --variants frozen --full --json
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import torch

from bertbook.bert import BertForPreTraining
from bertbook.configs import get_scale_config
from bertbook.pipeline import pretraining_data
from bertbook.pipeline_data import minilm
from bertbook.pretrain import pretrain

VARIANTS = ("chain", "frozen", "compile")


def teacher_to_train(bert, variant: str) -> BertForPreTraining:
    """MiniLM's encoder with fresh heads, as `pipeline.mlm_teacher` builds it; `frozen`: the embeddings
    and the lower half of the encoder layers do not learn."""
    torch.manual_seed(0)
    model = BertForPreTraining(copy.deepcopy(bert.config))
    model.bert.load_state_dict(bert.state_dict())
    if variant == "frozen":
        layers = model.bert.encoder.layers
        for p in list(model.bert.embeddings.parameters()) + [p for layer in layers[: len(layers) // 2]
                                                               for p in layer.parameters()]:
            p.requires_grad_(False)
    return model


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--full", action="store_true",
                    help="train each variant for the stage's whole steps and report its held-out metrics")
    ap.add_argument("--json", action="store_true", help="print only the JSON result (progress to stderr)")
    args = ap.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        raise SystemExit("--warmup and --steps must be at least 1")
    cfg = get_scale_config(args.scale)
    t = cfg.mlm_teacher
    data = pretraining_data(cfg, tokenizer="minilm")
    bert, _ = minilm()
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    res = {"scale": args.scale, "threads": torch.get_num_threads(), "batch_size": t.batch_size,
           "max_seq_len": t.max_seq_len, "variants": {}}
    if not args.full:
        res["steps_timed"] = args.steps  # with --full every variant trains the stage's steps instead
    for variant in args.variants:
        model = teacher_to_train(bert, variant)
        compiled = variant == "compile"

        def run(steps: int) -> float:
            start = time.perf_counter()
            pretrain(model, data.loader(t.batch_size, t.seed), steps, lr=t.lr, warmup=t.warmup,
                     weight_decay=t.weight_decay, mask_token_id=data.mask_token_id, compile=compiled,
                     progress=False)
            return time.perf_counter() - start

        if args.full:
            seconds = run(t.steps)
            ev = data.evaluate(model)  # the held-out metrics, as the chain's teacher is scored
            v = res["variants"][variant] = {"seconds": seconds, "steps": t.steps,
                                            "heldout_mask_accuracy": ev["mask_accuracy"],
                                            "unigram_mask_accuracy": data.unigram_mask_accuracy,
                                            "heldout_nsp_accuracy": ev["nsp_accuracy"]}
            log(f"{variant}: {t.steps} steps in {seconds:.0f} s, held-out [MASK] {v['heldout_mask_accuracy']:.2%} "
                f"(unigram {v['unigram_mask_accuracy']:.2%}), NSP {v['heldout_nsp_accuracy']:.1%}")
            continue
        first = run(args.warmup)
        timed = run(args.steps)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        res["variants"][variant] = {"first_call_s": first, "s_per_step": timed / args.steps,
                                    "trainable_parameters": trainable}
        log(f"{variant}: {timed / args.steps:.3f} s per step ({args.warmup} warm-up steps: {first:.1f} s), "
            f"{trainable / 1e6:.1f}M parameters learn")
    if "chain" in res["variants"] and not args.full:
        base = res["variants"]["chain"]["s_per_step"]
        for v in res["variants"].values():
            v["vs_chain"] = v["s_per_step"] / base
    print(json.dumps(res, indent=None if args.json else 2))
    return res


if __name__ == "__main__":
    main()
