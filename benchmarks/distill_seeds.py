"""Does distillation help? The 3-layer student fine-tuned with the teacher's soft labels vs its
twin fine-tuned on the labels alone (same initialisation, same batches), over several seeds;
optionally the distilled student with the transfer set (unlabelled reviews, the teacher's soft labels
alone there), its pseudo-label control (the teacher's hard labels there), and a curve over the size
of the transfer set.

The seed sets the student's fresh classifier head and the batch order; the teacher is the same
fine-tuned MiniLM for all seeds. Models are cached like the report's (seed 0 is the report's).
Every student is scored on the test split and on the validation split, on which no setting of the
pipeline was chosen: two independent samples of 1,275 reviews each. Gains are paired (the same seed,
so the same head and labelled batches), against the labels-only twin unless named otherwise.

    python benchmarks/distill_seeds.py --seeds 0 1 2
    python benchmarks/distill_seeds.py --seeds 0 1 2 --set finetune__alpha=0.5   # another setting
    python benchmarks/distill_seeds.py --seeds 0 1 2 3 4 --transfer --pseudo --out distill_transfer_seeds.json
    python benchmarks/distill_seeds.py --seeds 0 1 2 3 4 --transfer --set finetune__transfer_examples=3000
    python benchmarks/distill_seeds.py --seeds 0 1 2 3 4 --curve 0 1500 3000 6202 --out distill_transfer_curve.json
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

SPLITS = ("test", "validation")


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


def paired(gains: list) -> dict:
    """Mean, standard error (NaN for one seed) and count of positive paired differences."""
    se = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else float("nan")
    return {"mean": statistics.mean(gains), "se": se, "ahead": sum(g > 0 for g in gains), "n": len(gains)}


def spread(values: list) -> dict:
    """Mean, standard deviation over seeds (NaN for one), min and max."""
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return {"mean": statistics.mean(values), "sd": sd, "min": min(values), "max": max(values)}


def scores(model, info: dict, val: list) -> dict:
    return {"test": info["test_accuracy"], "validation": evaluate_classifier(model, val)}


def transfer_scores(cfg, seed: int, pseudo: bool, val: list) -> dict:
    """Test and validation accuracy of the transfer student (pseudo: its pseudo-label control)."""
    model, info = pipeline.transfer_student(cfg, pseudo_labels=pseudo, seed=seed, progress=False)
    return scores(model, info, val)


def summarise(rows: list, names: list, pairs: list) -> dict:
    """Per student and split the spread over seeds; per (a, b) of `pairs` and split the paired gain a − b."""
    out = {"students": {n: {s: spread([r[n][s] for r in rows]) for s in SPLITS} for n in names}}
    out["gains"] = {f"{a}_vs_{b}": {s: paired([r[a][s] - r[b][s] for r in rows]) for s in SPLITS}
                    for a, b in pairs}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", nargs="*", default=[], metavar="STAGE__FIELD=VALUE",
                    help="config overrides, e.g. finetune__alpha=0.5 finetune__transfer_examples=3000")
    ap.add_argument("--transfer", action="store_true",
                    help="also the distilled student with the transfer set (finetune.transfer_examples "
                         "unlabelled reviews, the teacher's soft labels alone there)")
    ap.add_argument("--pseudo", action="store_true",
                    help="also the pseudo-label control: the teacher's hard labels on the transfer set "
                         "(with --curve: at every size too)")
    ap.add_argument("--curve", type=int, nargs="+", default=None, metavar="N",
                    help="transfer-set sizes: the transfer student at each size and seed (size 0 is the "
                         "distilled student itself: the same weights)")
    ap.add_argument("--out", default=None, help="also write the JSON result to this file (a bare file name: into bertbook.results.RESULTS_DIR, "
                         "src/bertbook/results/, where the chapters read it)")
    ap.add_argument("--json", action="store_true", help="print only the JSON result (progress to stderr)")
    args = ap.parse_args(argv)
    overrides = parse_overrides(args.set)
    cfg = get_scale_config(args.scale, **overrides)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else \
        (lambda *a: print(*a, flush=True))
    teacher, tea = pipeline.finetuned_teacher(cfg, progress=False)
    val = pipeline.classification_data(cfg).validation_batches  # no setting was chosen on these
    students = ["kd", "no_kd"] + (["transfer"] if args.transfer else []) + (["pseudo"] if args.pseudo else [])
    rows = []
    for seed in args.seeds:
        row = {"seed": seed}
        for name in students:
            if name in ("kd", "no_kd"):
                model, info = pipeline.finetuned_student(cfg, kd=name == "kd", seed=seed, progress=False)
                row[name] = scores(model, info, val)
            else:
                row[name] = transfer_scores(cfg, seed, name == "pseudo", val)
        rows.append(row)
        log(f"seed {seed}: " + ", ".join(f"{n} {row[n]['test']:.4f} / {row[n]['validation']:.4f}" for n in students)
            + " (test / validation)")
    pairs = [(n, "no_kd") for n in students if n != "no_kd"]
    pairs += [("transfer", "kd")] if args.transfer else []
    pairs += [("transfer", "pseudo")] if args.transfer and args.pseudo else []
    summary = summarise(rows, students, pairs)
    for pair, g in summary["gains"].items():
        log(f"{pair}: " + "; ".join(f"{s} {100 * g[s]['mean']:+.2f} ± {100 * g[s]['se']:.2f} points (s.e.), "
                                    f"ahead in {g[s]['ahead']} of {g[s]['n']}" for s in SPLITS))
    mean = lambda name, split: summary["students"][name][split]["mean"]  # noqa: E731
    teacher_val = evaluate_classifier(teacher, val)
    res = {"overrides": args.set, "teacher_accuracy": tea["test_accuracy"],
           "teacher_validation_accuracy": teacher_val,
           # the rows and the headline figures as before the transfer set (flat keys)
           "seeds": [{"seed": r["seed"], "kd": r["kd"]["test"], "no_kd": r["no_kd"]["test"],
                      "gain": r["kd"]["test"] - r["no_kd"]["test"], "kd_validation": r["kd"]["validation"],
                      "no_kd_validation": r["no_kd"]["validation"],
                      "gain_validation": r["kd"]["validation"] - r["no_kd"]["validation"],
                      **{f"{n}{'' if s == 'test' else '_validation'}": r[n][s] for n in students[2:] for s in SPLITS}}
                     for r in rows],
           "mean_kd": mean("kd", "test"), "mean_no_kd": mean("no_kd", "test"),
           "mean_gain": summary["gains"]["kd_vs_no_kd"]["test"]["mean"],
           "seeds_with_gain": summary["gains"]["kd_vs_no_kd"]["test"]["ahead"],
           "mean_kd_validation": mean("kd", "validation"), "mean_no_kd_validation": mean("no_kd", "validation"),
           "mean_gain_validation": summary["gains"]["kd_vs_no_kd"]["validation"]["mean"],
           "seeds_with_gain_validation": summary["gains"]["kd_vs_no_kd"]["validation"]["ahead"],
           **summary}
    if args.transfer or args.pseudo:
        res["transfer_examples"] = len(pipeline.transfer_data(cfg).texts)
    if args.transfer:
        res["transfer_retention"] = {"test": mean("transfer", "test") / tea["test_accuracy"],
                                     "validation": mean("transfer", "validation") / teacher_val}
    if args.curve is not None:
        res["curve"] = curve(args, overrides, rows, val, log)
    text = json.dumps(res, indent=None if args.json else 2)
    print(text)
    if args.out:
        out = args.out if os.path.dirname(args.out) else os.path.join(RESULTS_DIR, args.out)
        with open(out, "w") as fh:
            fh.write(json.dumps(res, indent=1) + "\n")
    return res


def curve(args, overrides: dict, rows: list, val: list, log) -> list:
    """Per transfer-set size: per seed the transfer student's (and with --pseudo the control's) test
    and validation accuracy, their spread over seeds and the paired gain over the labels-only twin
    (the same seed's, from `rows`). Size 0 is the distilled student of `rows`: with no transfer set
    the transfer stage trains exactly it (a test checks the weights), so it is not trained again."""
    names = ["transfer"] + (["pseudo"] if args.pseudo else [])
    points = []
    for n in args.curve:
        cfg = get_scale_config(args.scale, **{**overrides, "finetune__transfer_examples": n})
        point_rows = []
        for r in rows:
            point = {"seed": r["seed"], "no_kd": r["no_kd"]}
            for name in names:
                point[name] = r["kd"] if n == 0 else transfer_scores(cfg, r["seed"], name == "pseudo", val)
            point_rows.append(point)
        point = {"transfer_examples": n, "seeds": point_rows,
                 **summarise(point_rows, names, [(name, "no_kd") for name in names])}
        points.append(point)
        g = point["gains"]["transfer_vs_no_kd"]
        log(f"transfer set of {n}: " + "; ".join(
            f"{s} {point['students']['transfer'][s]['mean']:.4f} (gain {100 * g[s]['mean']:+.2f} ± "
            f"{100 * g[s]['se']:.2f}, ahead in {g[s]['ahead']} of {g[s]['n']})" for s in SPLITS))
    return points


if __name__ == "__main__":
    main()
