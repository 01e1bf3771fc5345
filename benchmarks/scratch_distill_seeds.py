"""Does the teacher teach? Students of the MLM teacher's shape trained from random weights, one
arm per loss (MLM alone, the triple loss, attention transfer, ...), over several seeds; optionally
fine-tuned on Rotten Tomatoes.

A student copied from the teacher's layers already holds what the teacher knows, so comparing its
losses cannot show that distillation passes anything on; a student from random weights can. Each
arm is `pipeline.scratch_student(arm=...)` (cached; seed 0 of the chain's arms is the report's).
The seed sets the random weights, the batch order, the masks and dropout; all arms of one seed see
the same batches. Every figure is given on the selection split (training documents nobody trains
on: settings are chosen there) and on the held-out split (the one the book reports).

    python benchmarks/scratch_distill_seeds.py --seeds 0 1 2 --finetune-seeds 0 1 2 3 4 --json \
        > src/bertbook/results/scratch_distill_seeds.json
    python benchmarks/scratch_distill_seeds.py --arms mlm-only attention --seeds 0 --set scratch__lr=1e-3 \
        --json > src/bertbook/results/scratch_lr_1e-3.json   # a setting, judged on the selection split
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import Counter

import torch

from bertbook import pipeline
from bertbook.configs import CHAIN_SCRATCH_ARMS, SCRATCH_ARMS, get_scale_config
from bertbook.metrics import position_kinds
from bertbook.pipeline_data import pretraining_data

sys.path.insert(0, os.path.dirname(__file__))
from distill_seeds import paired, parse_overrides, spread  # noqa: E402
from mlm_distill_seeds import downstream  # noqa: E402

SPLITS = {"selection": "selection_mask_accuracy", "heldout": "heldout_mask_accuracy"}


@torch.no_grad()
def first_guesses(model, data) -> dict:
    """What a student answers at the held-out `[MASK]` positions: how many different first guesses
    it makes, and its commonest one with the share of positions it fills. A student that learned
    only token frequencies gives one or two answers everywhere, whatever the sentence."""
    model.eval()
    guesses = []
    for b in data.eval_batches:
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        at_mask = position_kinds(b, data.mask_token_id)["mask"]
        guesses.append(logits.argmax(-1)[b["labels"] != -100][at_mask])
    counts = Counter(torch.cat(guesses).tolist())
    top, n = counts.most_common(1)[0]
    return {"distinct_guesses": len(counts), "top_guess": data.tokenizer.convert_ids_to_tokens(top),
            "top_guess_share": n / sum(counts.values())}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--arms", nargs="+", default=list(CHAIN_SCRATCH_ARMS), choices=list(SCRATCH_ARMS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", nargs="*", default=[], metavar="STAGE__FIELD=VALUE",
                    help="config overrides, e.g. scratch__lr=1e-3 scratch__alpha_att=2.0")
    ap.add_argument("--control", default="mlm-only", choices=list(SCRATCH_ARMS),
                    help="the arm every other is paired with, seed by seed (if it is among --arms)")
    ap.add_argument("--finetune-seeds", type=int, nargs="*", default=[],
                    help="also fine-tune each arm's student (of the first seed) on Rotten Tomatoes with these seeds")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = get_scale_config(args.scale, **parse_overrides(args.set))
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    _, tinfo = pipeline.mlm_teacher(cfg, progress=False)
    res = {"settings": {"scratch": cfg.scratch.__dict__, "overrides": args.set, "arms": args.arms,
                        "terms": {a: list(SCRATCH_ARMS[a]) for a in args.arms}},
           "teacher": {s: tinfo[k] for s, k in SPLITS.items()},
           "unigram_heldout": tinfo["unigram_mask_accuracy"], "arms": {}}
    log(f"teacher [MASK] accuracy: selection {tinfo['selection_mask_accuracy']:.4f}, held out "
        f"{tinfo['heldout_mask_accuracy']:.4f}; unigram (held out) {tinfo['unigram_mask_accuracy']:.4f}")
    students = {}
    data = pretraining_data(cfg, tokenizer="minilm")
    for arm in args.arms:
        rows = []
        for seed in args.seeds:
            model, info = pipeline.scratch_student(cfg, arm=arm, seed=seed, progress=False)
            students[(arm, seed)] = model
            rows.append({"seed": seed, **{s: info[k] for s, k in SPLITS.items()}, "seconds": info["seconds"],
                         "cached": info["cached"], **first_guesses(model, data)})
            log(f"{arm:<20} seed {seed}: selection {rows[-1]['selection']:.4f}, held out {rows[-1]['heldout']:.4f}"
                f", {rows[-1]['distinct_guesses']} different first guesses ({info['seconds']:.0f} s"
                f"{', cached' if info['cached'] else ''})")
        res["arms"][arm] = {"rows": rows, **{s: spread([r[s] for r in rows]) for s in SPLITS}}
    if args.control in args.arms:
        control = {r["seed"]: r for r in res["arms"][args.control]["rows"]}
        res["control"] = args.control
        res["gains"] = {}
        for arm in args.arms:
            if arm == args.control:
                continue
            rows = res["arms"][arm]["rows"]
            res["gains"][arm] = {s: paired([r[s] - control[r["seed"]][s] for r in rows]) for s in SPLITS}
            res["gains"][arm]["heldout_ratio_min"] = min(r["heldout"] / control[r["seed"]]["heldout"] for r in rows)
            g = res["gains"][arm]["heldout"]
            log(f"{arm} - {args.control}, held out: {100 * g['mean']:+.2f} ± {100 * g['se']:.2f} points (s.e.), "
                f"ahead in {g['ahead']} of {g['n']}; smallest ratio {res['gains'][arm]['heldout_ratio_min']:.2f}x")
    if args.finetune_seeds:
        first = args.seeds[0]
        down = {"student_seed": first, "finetune_seeds": args.finetune_seeds}
        for arm in args.arms:
            down[arm] = downstream(students[(arm, first)], cfg, args.finetune_seeds)
            log(f"fine-tuned {arm}: test {statistics.mean(r['test'] for r in down[arm]):.4f}, "
                f"validation {statistics.mean(r['validation'] for r in down[arm]):.4f}")
        if args.control in args.arms:
            down["gains"] = {arm: {split: paired([r[split] - c[split] for r, c in zip(down[arm], down[args.control])])
                                   for split in ("test", "validation")}
                             for arm in args.arms if arm != args.control}
        res["downstream"] = down
    if args.json:
        print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
