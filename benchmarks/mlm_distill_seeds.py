"""Is it the teacher? DistilBERT students of the MLM teacher trained with the triple loss vs the same
copied student trained on MLM alone (same batches, same steps), over several seeds; optionally
both, and the untrained copy, fine-tuned on Rotten Tomatoes.

The seed sets the batch order, the masks and dropout; the teacher is the same for all seeds.
Students are cached like the pipeline's (seed 0 with the default settings is the report's).
Every figure is given on the selection split (training documents nobody trains on: choose settings
there) and on the held-out split (the corpus' validation documents: the one the book reports).

    python benchmarks/mlm_distill_seeds.py --seeds 0 1 2 --finetune-seeds 0 1 2 3 4 --json \
        > src/bertbook/results/mlm_distill_seeds.json   # the chapter's 300 steps, and downstream
    python benchmarks/mlm_distill_seeds.py --seeds 0 1 2 --set distill__steps=200 --json \
        > src/bertbook/results/mlm_distill_seeds_steps200.json   # what the steps cost
    python benchmarks/mlm_distill_seeds.py --seeds 0 --set distill__steps=200 "distill__layers=(0, 2, 5)" \
        --no-control --json > src/bertbook/results/mlm_distill_seeds_layers_025.json   # the layers (200 steps)
    python benchmarks/mlm_distill_seeds.py --seeds 0 --set distill__steps=200 distill__temperature=1.0 --json \
        > src/bertbook/results/mlm_distill_T1.json   # a variant, on the selection split (200 steps)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import os

from bertbook import pipeline
from bertbook.configs import get_scale_config
from bertbook.finetune import classifier_from_pretrained, evaluate_classifier, finetune
from bertbook.training import seed_everything

sys.path.insert(0, os.path.dirname(__file__))
from distill_seeds import paired, parse_overrides  # noqa: E402  (one parser and one paired gain for both scripts)


TEACHER_ONLY = ("distill__temperature", "distill__alpha_ce", "distill__alpha_cos")


def downstream(encoder, cfg, seeds: list) -> list:
    """Test and validation accuracy of `encoder` (a DistilBERT MLM model) fine-tuned on the labels
    alone, with the student's settings, once per seed (the seed sets the head and the batch order)."""
    f = cfg.finetune
    data = pipeline.classification_data(cfg)
    rows = []
    for seed in seeds:
        seed_everything(seed)
        model = classifier_from_pretrained(encoder.distilbert, len(data.label_names), f.pooling, seed=seed)
        finetune(model, data.train_batches, f.epochs, f.student_lr or f.lr, f.warmup, seed=seed, progress=False)
        rows.append({"seed": seed, "test": evaluate_classifier(model, data.test_batches),
                     "validation": evaluate_classifier(model, data.validation_batches)})
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", nargs="*", default=[], metavar="STAGE__FIELD=VALUE",
                    help='config overrides, e.g. distill__alpha_ce=2.0 "distill__layers=(0, 2, 5)"')
    ap.add_argument("--finetune-seeds", type=int, nargs="*", default=[],
                    help="also fine-tune the copied and the distilled student (of the first seed) on "
                         "Rotten Tomatoes with these seeds")
    ap.add_argument("--no-control", action="store_true",
                    help="train only the triple-loss students (no MLM-alone twins, no gains)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    overrides = parse_overrides(args.set)
    cfg = get_scale_config(args.scale, **overrides)
    # The MLM-alone twin never reads the teacher's weights T, alpha_ce, alpha_cos: overriding them
    # changes only the triple-loss student, and the twin is the default config's (cached) one.
    control_cfg = get_scale_config(args.scale, **{k: v for k, v in overrides.items() if k not in TEACHER_ONLY})
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    _, tinfo = pipeline.mlm_teacher(cfg, progress=False)
    copied, cinfo = pipeline.copied_student(cfg, progress=False)
    split_keys = {"selection": "selection_mask_accuracy", "heldout": "heldout_mask_accuracy"}
    res = {"settings": {"distill": cfg.distill.__dict__, "overrides": args.set},
           "teacher": {s: tinfo[k] for s, k in split_keys.items()},
           "copied": {s: cinfo[k] for s, k in split_keys.items()},
           "unigram_heldout": tinfo["unigram_mask_accuracy"], "rows": []}
    log(f"teacher [MASK] accuracy: selection {tinfo['selection_mask_accuracy']:.4f}, held out "
        f"{tinfo['heldout_mask_accuracy']:.4f}; copy of layers {list(cfg.distill.layers)} untrained: "
        f"{cinfo['selection_mask_accuracy']:.4f} / {cinfo['heldout_mask_accuracy']:.4f}")
    students = {}
    for seed in args.seeds:
        row = {"seed": seed}
        for name, mlm_only in (("triple", False),) + (() if args.no_control else (("mlm_only", True),)):
            model, info = pipeline.distilled_student(control_cfg if mlm_only else cfg, mlm_only=mlm_only,
                                                     seed=seed, progress=False)
            students[(name, seed)] = model
            for s, k in split_keys.items():
                row[f"{name}_{s}"] = info[k]
            row[f"{name}_seconds"] = info["seconds"]
        res["rows"].append(row)
        log(f"seed {seed}: triple loss {row['triple_selection']:.4f} / {row['triple_heldout']:.4f} (selection / held out)"
            + ("" if args.no_control else f", MLM alone {row['mlm_only_selection']:.4f} / {row['mlm_only_heldout']:.4f}"))
        if args.no_control:
            continue
        for s in split_keys:
            row[f"gain_{s}"] = row[f"triple_{s}"] - row[f"mlm_only_{s}"]
    for s in split_keys:
        res[f"triple_{s}_mean"] = statistics.mean(r[f"triple_{s}"] for r in res["rows"])
        if args.no_control:
            continue
        res[f"mlm_only_{s}_mean"] = statistics.mean(r[f"mlm_only_{s}"] for r in res["rows"])
        res[f"gain_{s}"] = paired([r[f"gain_{s}"] for r in res["rows"]])
        g = res[f"gain_{s}"]
        log(f"{s}: triple {res[f'triple_{s}_mean']:.4f}, MLM alone {res[f'mlm_only_{s}_mean']:.4f}, gain "
            f"{100 * g['mean']:+.2f} ± {100 * g['se']:.2f} points (s.e.), ahead in {g['ahead']} of {g['n']}")
    if args.finetune_seeds:
        first = args.seeds[0]
        res["downstream"] = {"student_seed": first,
                             "copied": downstream(copied, cfg, args.finetune_seeds),
                             "distilled": downstream(students[("triple", first)], cfg, args.finetune_seeds)}
        for split in ("test", "validation"):
            gains = [d[split] - c[split] for c, d in zip(res["downstream"]["copied"], res["downstream"]["distilled"])]
            res["downstream"][f"gain_{split}"] = paired(gains)
            g = res["downstream"][f"gain_{split}"]
            log(f"fine-tuned, {split}: distilled {statistics.mean(d[split] for d in res['downstream']['distilled']):.4f}"
                f", copied {statistics.mean(c[split] for c in res['downstream']['copied']):.4f}, gain "
                f"{100 * g['mean']:+.2f} ± {100 * g['se']:.2f} points, ahead in {g['ahead']} of {g['n']}")
    if args.json:
        print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
