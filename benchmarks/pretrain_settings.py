"""Chapter 5's settings table: BERT pretrained from scratch with other settings on the same budget
(the same number of tokens), scored at the `[MASK]` positions of the held-out split.

Each row is the pipeline's `pretrained_teacher` with config overrides, cached like it (the first
row is chapter 5's model). Rows that double the sequence length halve the steps, so every row
sees the same number of tokens.

    python benchmarks/pretrain_settings.py --json > src/bertbook/results/pretrain_settings.json
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Tuple

from bertbook import pipeline
from bertbook.configs import PretrainSettings, get_scale_config


def rows(base: PretrainSettings) -> List[Tuple[str, Dict[str, object]]]:
    """(label, overrides) of each setting, relative to the scale's own pretraining settings."""
    longer = {"pretrain__max_seq_len": 2 * base.max_seq_len, "pretrain__steps": base.steps // 2}
    return [
        ("this chapter", {}),
        ("twice the length, half the steps", longer),
        ("pre-LN, twice the length, half the steps", {**longer, "pretrain__pre_norm": True}),
        ("pre-LN, twice the learning rate, twice the length, half the steps",
         {**longer, "pretrain__pre_norm": True, "pretrain__lr": 2 * base.lr}),
        ("post-LN, twice the learning rate, no dropout, twice the length, half the steps",
         {**longer, "pretrain__lr": 2 * base.lr, "pretrain__dropout": 0.0}),
    ]


KEYS = ("heldout_mask_accuracy", "unigram_mask_accuracy", "heldout_random_accuracy",
        "heldout_unchanged_accuracy", "heldout_mlm_accuracy", "heldout_mask_loss", "heldout_nsp_accuracy",
        "seconds")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--rows", type=int, nargs="*", default=None, help="only these rows (0 = this chapter)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    base = get_scale_config(args.scale).pretrain
    res = {"scale": args.scale, "rows": []}
    for i, (label, overrides) in enumerate(rows(base)):
        if args.rows is not None and i not in args.rows:
            continue
        cfg = get_scale_config(args.scale, **overrides)
        _, info = pipeline.pretrained_teacher(cfg, progress=False)
        p = cfg.pretrain
        row = {"label": label, "overrides": overrides, "max_seq_len": p.max_seq_len, "steps": p.steps,
               "pre_norm": p.pre_norm, "lr": p.lr, "dropout": p.dropout, "batch_size": p.batch_size,
               "token_slots": p.steps * p.batch_size * p.max_seq_len, **{k: info[k] for k in KEYS}}
        res["rows"].append(row)
        log(f"{label}: [MASK] {row['heldout_mask_accuracy']:.4f} (unigram {row['unigram_mask_accuracy']:.4f}), "
            f"all selected {row['heldout_mlm_accuracy']:.4f}, {row['seconds']:.0f} s")
    if args.json:
        print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
