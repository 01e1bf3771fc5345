"""Pretraining throughput in 1 and 2 data-parallel processes (`torchrun`, `gloo` on the CPU).

For each scale and process count, one `torchrun` run pretrains the scale's BERT from scratch for
`--steps` steps on the book's pretraining data (global batch = the scale's batch_size in every
run), and rank 0 reports the tokens per second of all processes together. One process gets all the
CPU threads; with two, each gets half (`OMP_NUM_THREADS`). On a machine whose cores the processes
share, two processes cannot be faster than one by more than the better use of those cores: the
point of the table is the overhead of the all-reduce, not a speed-up.

    python benchmarks/ddp_throughput.py --json > src/bertbook/results/ddp_throughput.json
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

import torch


def worker(scale: str, steps: int, out: str) -> None:
    """One process of a `torchrun` run (or the only one)."""
    from bertbook import distributed as dist, pipeline
    from bertbook.bert import BertForPreTraining
    from bertbook.configs import get_scale_config
    from bertbook.pretrain import pretrain

    with dist.process_group():
        cfg = get_scale_config(scale)
        p = cfg.pretrain
        data = pipeline.pretraining_data(cfg)
        torch.manual_seed(p.seed)
        model = BertForPreTraining(p.model_config(len(data.tokenizer)))
        hist = pretrain(model, data.loader(p.batch_size, p.seed), steps, lr=p.lr, log_every=steps,
                        progress=False)
        if dist.is_main():
            with open(out, "w") as fh:
                json.dump({"scale": scale, "processes": dist.world_size(), "steps": steps,
                           "global_batch": p.batch_size, "threads_per_process": torch.get_num_threads(),
                           "seconds": hist["seconds"][0], "tokens_per_second": hist["tokens_per_second"][0],
                           "final_loss": hist["loss"][-1]}, fh)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(scale: str, processes: int, steps: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // processes))}
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               "--master_port", str(free_port()), __file__, "--worker", "--scale", scale, "--steps", str(steps),
               "--out", out]
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        with open(out) as fh:
            res = json.load(fh)
    res["tokens_per_second_per_process"] = res["tokens_per_second"] / processes
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", nargs="+", default=["tiny", "cpu"])
    ap.add_argument("--steps", type=int, default=None, help="default: 200 (tiny), 40 (cpu)")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--note", default="", help="the machine, for the record")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--scale", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.scale, args.steps, args.out)
        return {}
    threads = os.cpu_count() or 1
    rows = []
    for scale in args.scales:
        steps = args.steps or (200 if scale == "tiny" else 40)
        for n in args.processes:
            rows.append(run(scale, n, steps, threads))
            if not args.json:
                r = rows[-1]
                print(f"{scale:5s} {n} process(es) x {r['threads_per_process']} thread(s): "
                      f"{r['tokens_per_second']:9.0f} tokens/s in all, {r['tokens_per_second_per_process']:9.0f} "
                      f"per process ({r['steps']} steps of {r['global_batch']} pairs, {r['seconds']:.1f} s)")
    res = {"rows": rows, "cpu_count": threads, "torch": torch.__version__, "note": args.note}
    if args.json:
        print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
