"""Inference latency on the CPU: the fine-tuned MiniLM teacher (6 layers) vs its 3-layer student,
ours and their transformers twins, batch 32 x 64 tokens (no padding), timed with torch.utils.benchmark
(bertbook.report.measure_latency): the models in turn, several rounds over, the median of all timed blocks.

The models are taken from the cache (trained if missing; `python -m bertbook report` fills it),
so the figures are for the exact models of the report. Only the timing matters here, so
`--untrained` skips fine-tuning and times freshly initialised heads (same shapes, same cost).

    python benchmarks/latency.py --rounds 5
"""
from __future__ import annotations

import argparse
import json

import torch

from bertbook import pipeline
from bertbook.report import measure_latency
from bertbook.distilbert import student_from_teacher
from bertbook.finetune import classifier_from_pretrained


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-run-time", type=float, default=1.0, help="seconds each model is timed per round")
    ap.add_argument("--untrained", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.untrained:
        bert, _ = pipeline.minilm()
        teacher = classifier_from_pretrained(bert, 2, "cls")
        student = student_from_teacher(teacher, (0, 2, 4))
    else:
        teacher, _ = pipeline.finetuned_teacher(args.scale)
        student, _ = pipeline.finetuned_student(args.scale)
    models = {"teacher": teacher, "student": student}
    if teacher.config.classifier_pooling == "cls":  # transformers' classifiers pool [CLS] only
        from bertbook.hf import to_transformers
        models.update(transformers_teacher=to_transformers(teacher, "sdpa"),
                      transformers_student=to_transformers(student, "sdpa"))
    lat = measure_latency(models, args.batch, args.seq, args.min_run_time, args.rounds)
    res = {f"{k}_ms": 1000 * v for k, v in lat.items()}
    res["speedup"] = lat["teacher"] / lat["student"]
    if "transformers_teacher" in lat:
        res["transformers_speedup"] = lat["transformers_teacher"] / lat["transformers_student"]
    res.update(batch=[args.batch, args.seq], rounds=args.rounds, min_run_time=args.min_run_time, threads=torch.get_num_threads(),
               teacher_parameters=teacher.num_parameters(), student_parameters=student.num_parameters())
    print(json.dumps(res, indent=None if args.json else 2))
    return res


if __name__ == "__main__":
    main()
