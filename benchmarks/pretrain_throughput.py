"""Pretraining throughput: our BertForPreTraining vs transformers.BertForPreTraining.

Same config, same batch, same process; each repeat times `--steps` full training steps (forward,
backward, AdamW) of each model in turn, and the result is the median over repeats of the ratio
of tokens/s. Ours runs the MLM decoder only on the masked positions (its default); transformers
always decodes every position. Ours with the full decoder is timed too, to show where the gain
comes from.

    python benchmarks/pretrain_throughput.py --repeats 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import transformers

from bertbook.bert import BertForPreTraining
from bertbook.configs import get_scale_config
from bertbook.hf import hf_config


def make_batch(vocab: int, batch: int, seq: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    labels = torch.where(torch.rand(batch, seq, generator=g) < 0.15, ids, torch.full_like(ids, -100))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
            "labels": labels, "next_sentence_label": torch.randint(0, 2, (batch,), generator=g)}


def time_steps(model, batch, steps: int, **kw) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = model(**batch, **kw).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=None, help="default: the scale's max_seq_len (cpu: 64)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    p = get_scale_config(args.scale).pretrain
    args.seq = args.seq or p.max_seq_len
    if args.seq > p.max_seq_len:
        raise SystemExit(f"--seq {args.seq} is longer than the model's {p.max_seq_len} positions")
    config = p.model_config(8192)
    ours = BertForPreTraining(config)
    theirs = transformers.BertForPreTraining(hf_config(config, distil=False))
    batch = make_batch(config.vocab_size, args.batch, args.seq)
    tokens = args.batch * args.seq * args.steps
    for m, kw in ((ours, {}), (theirs, {})):  # warm-up: allocator, kernels
        time_steps(m, batch, 2, **kw)
    runs = {"ours": [], "ours_full_decoder": [], "transformers": []}
    for _ in range(args.repeats):
        runs["ours"].append(tokens / time_steps(ours, batch, args.steps))
        runs["ours_full_decoder"].append(tokens / time_steps(ours, batch, args.steps, masked_positions_only=False))
        runs["transformers"].append(tokens / time_steps(theirs, batch, args.steps))
    ratio = [a / b for a, b in zip(runs["ours"], runs["transformers"])]
    ratio_full = [a / b for a, b in zip(runs["ours_full_decoder"], runs["transformers"])]
    res = {"config": {"hidden": config.hidden_size, "layers": config.num_hidden_layers, "vocab": config.vocab_size,
                      "batch": args.batch, "seq": args.seq, "steps_per_repeat": args.steps,
                      "repeats": args.repeats, "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "transformers": transformers.__version__},
           **{f"{k}_tokens_per_second_median": statistics.median(v) for k, v in runs.items()},
           "median_ratio_ours_vs_transformers": statistics.median(ratio),
           "median_ratio_ours_full_decoder_vs_transformers": statistics.median(ratio_full),
           "ratios": ratio}
    print(json.dumps(res, indent=None if args.json else 2))
    return res


if __name__ == "__main__":
    main()
