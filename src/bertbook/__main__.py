"""Command line: `python -m bertbook {pretrain,distill,finetune,report,export,compress,cache}`.

Every command loads what the cache holds and trains the rest, so `report` after `pretrain` only
trains the missing models. `--scale` defaults to $BERTBOOK_SCALE when it is set, else to gpu
when CUDA is present, else cpu. `cache pack OUT` writes the cache's checkpoints and a manifest
into a folder or an archive; `cache unpack SRC` fills the cache from one, each file checked
against the manifest (`bertbook.share`).

Under `torchrun --nproc_per_node=N -m bertbook ...` the training commands run as N data-parallel
processes (`bertbook.distributed`); rank 0 alone prints and writes the cache.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
from typing import List, Optional

from .configs import CHAIN_SCRATCH_ARMS, SCALES, default_scale, get_scale_config
from . import distributed as dist
from . import pipeline


CACHE_DIR_HELP = "checkpoint cache (default: $BERTBOOK_CACHE or ~/.cache/bertbook)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bertbook", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--scale", choices=SCALES, default=None,
                        help="model and data size (default: $BERTBOOK_SCALE if set, else gpu if CUDA is "
                             "available, else cpu)")
    common.add_argument("--cache-dir", default=None, help=CACHE_DIR_HELP)
    common.add_argument("--retrain", action="store_true", help="ignore the cache for this command's models")
    common.add_argument("--quiet", action="store_true", help="no progress bars, no notes on stderr")
    common.add_argument("--compile", action="store_true", help="torch.compile the models being trained")
    common.add_argument("--grad-accum", type=_positive_int, default=1, metavar="N",
                        help="micro-batches per optimiser step (the global batch stays the settings' batch_size)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pretrain", parents=[common], help="pretrain BERT from scratch (MLM + NSP)")
    sub.add_parser("distill", parents=[common],
                   help="continue MiniLM's pretraining with MLM + NSP heads (the MLM teacher), then distil it "
                        "into a half-depth DistilBERT (triple loss) and train the MLM-only control; then the same "
                        "shape from random weights: MLM alone, the triple loss, attention transfer")
    sub.add_parser("finetune", parents=[common],
                   help="fine-tune MiniLM on Rotten Tomatoes; the student with and without KD, with the "
                        "transfer set (soft labels) and its pseudo-label control; the random-init control")
    rep = sub.add_parser("report", parents=[common], help="run or load the whole chain and print the results")
    rep.add_argument("--json", action="store_true", help="print one JSON object")
    exp = sub.add_parser("export", parents=[common], help="write a model in Hugging Face format (or ONNX)")
    exp.add_argument("--model", required=True, choices=pipeline.MODEL_NAMES)
    exp.add_argument("--out", required=True, help="output directory")
    exp.add_argument("--format", choices=("hf", "onnx"), default="hf",
                     help="hf: transformers' format; onnx: model.onnx and model-int8.onnx (classifiers; needs [deploy])")
    com = sub.add_parser("compress", parents=[common],
                         help="the chapter 7 teacher and student as fp32 / int8 / ONNX / ONNX int8: accuracy, MB, "
                              "CPU latency (needs [deploy])")
    com.add_argument("--json", action="store_true", help="print one JSON object")
    com.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timing per measurement")
    com.add_argument("--rounds", type=_positive_int, default=3,
                     help="times every variant is timed, in turn with the others (medians over all rounds)")
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--cache-dir", default=None, help=CACHE_DIR_HELP)
    shared.add_argument("--quiet", action="store_true", help="no progress bars")
    cache = sub.add_parser("cache", help="share trained checkpoints: pack the cache's, or unpack a pack into it")
    actions = cache.add_subparsers(dest="action", required=True)
    pack = actions.add_parser("pack", parents=[shared],
                              help="write every cached checkpoint and manifest.json (stage, key, sha256, bytes, "
                                   "torch version, CPU flags) into OUT")
    pack.add_argument("out", metavar="OUT", help="a folder, or an archive: a name ending in .tar, .tar.gz or .tgz")
    unpack = actions.add_parser("unpack", parents=[shared],
                                help="fill the cache from a pack, each file checked against its manifest")
    unpack.add_argument("src", metavar="SRC", help="a pack's folder, archive or http(s) URL")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:  # argparse would name this function in its message
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _mlm_line(name: str, info: dict) -> str:
    nsp = f", NSP {info['heldout_nsp_accuracy']:.4f}" if "heldout_nsp_accuracy" in info else ""
    return (f"{name:24s} held-out [MASK] accuracy {info['heldout_mask_accuracy']:.4f} (unigram "
            f"{info['unigram_mask_accuracy']:.4f}){nsp}{' [cached]' if info.get('cached') else ''}")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "cache":  # no model, no scale: files only
        return _cache(args)
    if args.scale is None:
        try:
            args.scale = default_scale()
        except ValueError as e:  # a bad BERTBOOK_SCALE: one line, before anything is loaded or trained
            raise SystemExit(f"python -m bertbook: {e}") from None
    with dist.process_group():  # under torchrun: join the process group; else nothing
        return _run(args)


def _cache(args: argparse.Namespace) -> int:
    """`cache pack` and `cache unpack`: a summary line on stdout, or the problem in one line."""
    from . import share
    from .cache import cache_root

    try:
        if args.action == "pack":
            manifest = share.pack(args.out, args.cache_dir)
            size = sum(e["bytes"] for e in manifest["files"]) / 1e6
            summary = f"packed {len(manifest['files'])} checkpoints ({size:.1f} MB) into {args.out}"
        else:
            done = share.unpack(args.src, args.cache_dir, progress=not args.quiet)
            summary = (f"unpacked {len(done['placed'])} checkpoints into "
                       f"{os.path.join(cache_root(args.cache_dir), 'checkpoints')} "
                       f"({len(done['skipped'])} already there)")
    except (OSError, ValueError, tarfile.TarError) as e:
        raise SystemExit(f"python -m bertbook cache {args.action}: {e}") from None
    print(summary)
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.command in ("report", "export", "compress") and dist.world_size() > 1:
        # report times the models (every rank at once would measure contention) and export writes
        # files (every rank at once would race): both belong to one process, after training.
        raise SystemExit(f"'{args.command}' runs in one process: train under torchrun with pretrain / distill "
                         f"/ finetune, then run 'python -m bertbook {args.command} ...'")
    cfg = get_scale_config(args.scale, compile=args.compile, grad_accum=args.grad_accum)
    kw = dict(cache_dir=args.cache_dir, progress=not args.quiet)
    # Under torchrun every rank runs the same commands; rank 0 alone prints.
    out = print if dist.is_main() else (lambda *a, **k: None)
    # --quiet: no progress bars and no notes on stderr; the results on stdout are always printed.
    log = (lambda *a: None) if args.quiet else (lambda *a: out(*a, file=sys.stderr))
    if args.command == "pretrain":
        _, info = pipeline.pretrained_teacher(cfg, retrain=args.retrain, **kw)
        out(_mlm_line("BERT from scratch", info))
    elif args.command == "distill":
        _, info = pipeline.mlm_teacher(cfg, retrain=args.retrain, **kw)
        out(_mlm_line("MLM teacher", info))
        _, info = pipeline.copied_student(cfg, **kw)
        out(_mlm_line(f"copy of layers {info['layers']}", info))
        for mlm_only in (False, True):
            _, info = pipeline.distilled_student(cfg, mlm_only=mlm_only, retrain=args.retrain, **kw)
            out(_mlm_line("student, MLM alone" if mlm_only else "student, triple loss", info))
        for arm in CHAIN_SCRATCH_ARMS:
            _, info = pipeline.scratch_student(cfg, arm=arm, retrain=args.retrain, **kw)
            out(_mlm_line(f"random init, {arm}", info))
    elif args.command == "finetune":
        for name in ("teacher", "student", "student-no-kd", "student-transfer", "student-pseudo", "random-init"):
            if name == "teacher":
                _, info = pipeline.finetuned_teacher(cfg, retrain=args.retrain, **kw)
            elif name == "random-init":
                _, info = pipeline.random_init_classifier(cfg, retrain=args.retrain, **kw)
            elif name in ("student-transfer", "student-pseudo"):
                _, info = pipeline.transfer_student(cfg, pseudo_labels=name == "student-pseudo",
                                                    retrain=args.retrain, **kw)
            else:
                _, info = pipeline.finetuned_student(cfg, kd=name == "student", retrain=args.retrain, **kw)
            out(f"{name:16s} test accuracy {info['test_accuracy']:.4f}{' [cached]' if info['cached'] else ''}")
    elif args.command == "report":
        if args.retrain:
            raise SystemExit("report reads the cache; use --retrain with pretrain/distill/finetune")
        from . import report
        res = report.report(cfg, **kw)
        if args.json:
            out(json.dumps(res))
        else:
            for k, v in res.items():
                out(f"{k:45s} {v:.4f}" if isinstance(v, float) else f"{k:45s} {v}")
    elif args.command == "export" and args.format == "onnx":
        from . import deploy
        paths = deploy.export_onnx_model(args.model, args.out, cfg, **kw)
        log(f"wrote {paths['onnx']} and {paths['onnx-int8']}: bertbook.deploy.OnnxClassifier(path)")
    elif args.command == "export":
        from . import report
        path = report.export(args.model, args.out, cfg, **kw)
        task = "fill-mask" if args.model in pipeline.MLM_MODELS else "text-classification"
        log(f"wrote {path}: transformers.pipeline({task!r}, model={path!r})")
    elif args.command == "compress":
        from . import deploy
        res = deploy.compress(cfg, min_run_time=args.min_run_time, rounds=args.rounds, **kw)
        if args.json:
            out(json.dumps(res))
        else:
            shape = "ms, {} x {}".format(*res["batch_shape"])
            out(f"{'model':8s} {'format':10s} {'accuracy':>8s} {'MB':>7s} {'ms, batch 1':>11s} {shape:>11s}"
                f"   ({res['threads']} threads)")
            for r in res["rows"]:
                out(f"{r['model']:8s} {r['format']:10s} {r['accuracy']:8.4f} {r['mb']:7.1f} {r['ms_batch1']:11.1f} "
                    f"{r['ms_batch32']:11.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
