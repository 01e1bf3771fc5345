"""Does distillation help? The 3-layer student fine-tuned with the teacher's soft labels vs its
twin fine-tuned on the labels alone (same initialisation, same batches), over several seeds.

The seed sets the student's fresh classifier head and the batch order; the teacher is the same
fine-tuned MiniLM for all seeds. Models are cached like the report's (seed 0 is the report's).
Both students are scored on the test split and on the validation split, on which no setting of the
pipeline was chosen: two independent samples of 1,275 reviews each.

    python benchmarks/distill_seeds.py --seeds 0 1 2
    python benchmarks/distill_seeds.py --seeds 0 1 2 --set finetune__alpha=0.5   # another setting
"""
from __future__ import annotations

import argparse
import json
import statistics

from bertbook import pipeline
from bertbook.configs import get_config
from bertbook.finetune import evaluate_classifier


def parse_overrides(items: list) -> dict:
    """["finetune__alpha=0.5", ...] -> {"finetune__alpha": 0.5}; values are read as Python literals."""
    import ast

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects STAGE__FIELD=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # a bare string such as mean
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", nargs="*", default=[], metavar="STAGE__FIELD=VALUE",
                    help="config overrides, e.g. finetune__alpha=0.5 finetune__epochs=1")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = get_config(args.scale, **parse_overrides(args.set))
    teacher, tea = pipeline.finetuned_teacher(cfg, progress=False)
    val = pipeline.classification_data(cfg).validation_batches  # no setting was chosen on these
    rows = []
    for seed in args.seeds:
        kd_model, kd = pipeline.finetuned_student(cfg, kd=True, seed=seed, progress=False)
        no_model, no = pipeline.finetuned_student(cfg, kd=False, seed=seed, progress=False)
        kd_val, no_val = evaluate_classifier(kd_model, val), evaluate_classifier(no_model, val)
        rows.append({"seed": seed, "kd": kd["test_accuracy"], "no_kd": no["test_accuracy"],
                     "gain": kd["test_accuracy"] - no["test_accuracy"],
                     "kd_validation": kd_val, "no_kd_validation": no_val, "gain_validation": kd_val - no_val})
        if not args.json:
            print(f"seed {seed}: student with KD {kd['test_accuracy']:.4f}, without {no['test_accuracy']:.4f}, "
                  f"gain {100 * rows[-1]['gain']:+.2f} points (validation: {kd_val:.4f} vs {no_val:.4f})",
                  flush=True)
    mean = lambda key: statistics.mean(r[key] for r in rows)  # noqa: E731
    res = {"overrides": args.set, "teacher_accuracy": tea["test_accuracy"],
           "teacher_validation_accuracy": evaluate_classifier(teacher, val), "seeds": rows,
           "mean_kd": mean("kd"), "mean_no_kd": mean("no_kd"), "mean_gain": mean("gain"),
           "seeds_with_gain": sum(r["gain"] > 0 for r in rows),
           "mean_kd_validation": mean("kd_validation"), "mean_no_kd_validation": mean("no_kd_validation"),
           "mean_gain_validation": mean("gain_validation"),
           "seeds_with_gain_validation": sum(r["gain_validation"] > 0 for r in rows)}
    print(json.dumps(res, indent=None if args.json else 2))
    return res


if __name__ == "__main__":
    main()
