"""Chapter 7's settings, chosen on the validation split: each setting of chapter 7's table is trained
with the others at the pipeline's values, and scored on the validation split (where the choice is
made) and the test split (reported once, for the chosen value). Models are cached like the report's;
the value the pipeline uses is the chain's own stage (seed 0), so it is loaded, not trained again.

    python benchmarks/finetune_settings.py --out finetune_settings.json

Rows (the distilled student over seeds 0, 1 and 2, its validation accuracy averaged; the teacher and
the student from random weights one run each):
* epochs: the teacher and the distilled student (one setting, `finetune.epochs`, serves both);
* the student's learning rate, `finetune.student_lr`, for the distilled student;
* alpha, the weight of the hard-label loss, for the distilled student;
* the temperature, `finetune.temperature`, for the distilled student;
* the learning rate of the student from random weights, `finetune.random_init_lr`;
* the pooling, `finetune.pooling`, for the teacher and the distilled student (not chosen on accuracy:
  only a [CLS] classifier has a `transformers` twin, chapter 9).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from bertbook import pipeline
from bertbook.configs import get_scale_config
from bertbook.finetune import evaluate_classifier
from bertbook.results import RESULTS_DIR

# (row name, the field of FinetuneSettings, the values tried, the models scored, seeds)
# The student's settings over three seeds (the seed sets its fresh head and batch order): one seed cannot
# separate values a review or two apart, a third of the standard error of one run. The teacher has one
# seed; the random-init learning rates differ by many points.
STUDENT_SEEDS = [0, 1, 2]
ROWS = [
    ("epochs", "epochs", [1, 2, 3], ("teacher", "student"), STUDENT_SEEDS),
    ("student learning rate", "student_lr", [1e-4, 3e-4, 5e-4], ("student",), STUDENT_SEEDS),
    ("alpha", "alpha", [0.1, 0.5], ("student",), STUDENT_SEEDS),
    ("temperature", "temperature", [1.0, 2.0], ("student",), STUDENT_SEEDS),
    ("random-init learning rate", "random_init_lr", [1e-4, 5e-4, 1e-3, 2e-3], ("random init",), [0]),
    # Not chosen on accuracy: `transformers`' classifiers pool [CLS], so only that one can be exported.
    ("pooling", "pooling", ["cls", "mean"], ("teacher", "student"), [0]),
]


def score(cfg, model_name: str, seed: int) -> dict:
    """Test and validation accuracy of one model of chapter 7 at the settings `cfg`."""
    if model_name == "teacher":
        model, info = pipeline.finetuned_teacher(cfg, progress=False)
    elif model_name == "student":
        model, info = pipeline.finetuned_student(cfg, kd=True, seed=seed, progress=False)
    else:
        model, info = pipeline.random_init_classifier(cfg, seed=seed, progress=False)
    val = pipeline.classification_data(cfg).validation_batches
    return {"test": info["test_accuracy"], "validation": evaluate_classifier(model, val),
            "seconds": info.get("seconds"), "cached": info.get("cached")}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--rows", nargs="*", default=None, help="row names to run (default: all)")
    ap.add_argument("--out", default=None, help="also write the JSON result to this file (a bare file name: "
                                                "into bertbook.results.RESULTS_DIR, where chapter 7 reads it)")
    args = ap.parse_args(argv)
    default = get_scale_config(args.scale).finetune
    rows = []
    for name, field, values, models, seeds in ROWS:
        if args.rows and name not in args.rows:
            continue
        used = getattr(default, field)
        if used not in values:
            raise SystemExit(f"{name}: the pipeline's value {used!r} is not among the values tried {values}")
        tried = []
        for value in values:
            cfg = get_scale_config(args.scale, **{f"finetune__{field}": value})
            per_model = {}
            for m in models:
                # the teacher has no seed of its own here: one run, whatever the row's seeds
                runs = [score(cfg, m, seed) for seed in (seeds if m != "teacher" else seeds[:1])]
                per_model[m] = {"seeds": runs, **{s: statistics.mean(r[s] for r in runs) for s in ("test", "validation")}}
            tried.append({"value": value, **per_model})
            print(f"{name} = {value}: " + "; ".join(f"{m} validation {per_model[m]['validation']:.4f} test "
                                                    f"{per_model[m]['test']:.4f}" for m in models), file=sys.stderr, flush=True)
        judged = models[-1]  # the model the setting is for: the student (epochs: both, judged on the student)
        best = max(tried, key=lambda t: t[judged]["validation"])
        rows.append({"name": name, "field": field, "seeds": seeds, "models": list(models), "judged_on": judged,
                     "pipeline_value": used, "validation_choice": best["value"], "tried": tried})
    res = {"scale": args.scale, "rows": rows}
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        out = args.out if os.path.dirname(args.out) else os.path.join(RESULTS_DIR, args.out)
        with open(out, "w") as fh:
            fh.write(text + "\n")
    return res


if __name__ == "__main__":
    main()
