"""Pretraining speed at the GPU configuration: ours vs transformers.BertForPreTraining, same config,
same batches, same process, same optimiser step (bertbook.training.TrainStep: AdamW, clipping,
bf16 autocast, or fp16 + GradScaler on GPUs without bf16).

Reports per model: tokens/s, step time, peak GPU memory and MFU (model FLOPs utilisation) against
the GPU's dense bf16 peak. FLOPs per token, forward + backward, are counted as
    6·N  (N: parameters of the matrix multiplies in the encoder, pooler, NSP and MLM transform)
  + 6·0.15·V·D  (the tied decoder, at the 15% masked positions the loss needs)
  + 12·layers·L·D  (attention scores and their weighted sum, sequence length L)
the same useful work for both models (transformers decodes all positions; that extra work is not
counted as useful). Batches are random token ids of full length, 15% labelled.

Runs on the CPU too (no memory or MFU figure unless --peak-tflops is given):
    python benchmarks/gpu_pretrain.py --scale tiny --steps 3 --warmup-steps 1
On a GPU:
    python benchmarks/gpu_pretrain.py --scale gpu --json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Optional

import torch
import transformers

from bertbook.bert import BertForPreTraining
from bertbook.configs import get_scale_config
from bertbook.device import autocast_dtype, get_device
from bertbook.hf import hf_config
from bertbook.training import TrainStep, maybe_compile

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets; fp16 for
# GPUs without bf16 (T4, V100). First match in the device name wins.
PEAK_TFLOPS = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0),
               ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("T4", 65.0),
               ("V100", 125.0), ("RTX 4090", 165.0), ("RTX 3090", 71.0)]


def peak_flops(device: torch.device, override: Optional[float]) -> Optional[float]:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((t * 1e12 for key, t in PEAK_TFLOPS if key in name), None)


def flops_per_token(config, seq_len: int, mask_rate: float = 0.15) -> float:
    D, I, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    matmul_params = n * (4 * D * D + 2 * D * I) + D * D + D * D + 2 * D  # layers, pooler, MLM transform, NSP
    return 6 * matmul_params + 6 * mask_rate * config.vocab_size * D + 12 * n * seq_len * D


def make_batches(config, batch: int, seq: int, count: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(5, config.vocab_size, (batch, seq), generator=g)
        labels = torch.where(torch.rand(batch, seq, generator=g) < 0.15, ids, torch.full_like(ids, -100))
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                    "token_type_ids": torch.zeros_like(ids), "labels": labels,
                    "next_sentence_label": torch.randint(0, 2, (batch,), generator=g)})
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(model, batches, device, warmup: int, compile: bool, amp: Optional[bool]) -> dict:
    model.to(device).train()
    opt = TrainStep(model, len(batches), lr=1e-4, warmup=0.0, device=device, amp=amp)
    run = maybe_compile(model, compile)
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i, b in enumerate(batches):
        sync(device)
        t0 = time.perf_counter()
        with opt.autocast():
            loss = run(**b).loss
        opt.step(loss)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    res = {"step_ms_median": 1000 * statistics.median(times), "steps_timed": len(times)}
    if device.type == "cuda":
        res["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    model.cpu()
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="gpu", help="whose pretraining config to use: gpu, cpu or tiny")
    ap.add_argument("--batch", type=int, default=None, help="default: the config's batch size")
    ap.add_argument("--seq", type=int, default=None, help="default: the config's max_seq_len")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup-steps", type=int, default=5)
    ap.add_argument("--device", default=None)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--no-amp", action="store_true", help="fp32 (default: bf16/fp16 autocast on CUDA)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the GPU's peak")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.steps <= args.warmup_steps:
        raise SystemExit("--steps must exceed --warmup-steps")
    device = get_device(args.device)
    p = get_scale_config(args.scale).pretrain
    batch, seq = args.batch or p.batch_size, args.seq or p.max_seq_len
    torch.manual_seed(0)
    config = p.model_config(p.vocab_size)
    config.max_position_embeddings = max(config.max_position_embeddings, seq)
    ours = BertForPreTraining(config)
    hf_conf = hf_config(config, distil=False)
    hf_conf._attn_implementation = "sdpa"
    theirs = transformers.BertForPreTraining(hf_conf)
    batches = make_batches(config, batch, seq, args.steps)
    amp = False if args.no_amp else None
    fpt, peak = flops_per_token(config, seq), peak_flops(device, args.peak_tflops)
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
           "dtype": str((autocast_dtype(device) if amp is None else None) or torch.float32).replace("torch.", ""),
           "compile": args.compile, "scale": args.scale, "batch": batch, "seq": seq,
           "hidden": config.hidden_size, "layers": config.num_hidden_layers, "vocab": config.vocab_size,
           "parameters": ours.num_parameters(), "flops_per_token": fpt,
           "peak_tflops": None if peak is None else peak / 1e12,
           "flops_note": "6*N(matmul params) + 6*0.15*V*D (decoder at masked positions) + 12*layers*L*D (attention)"}
    for name, model in (("ours", ours), ("transformers", theirs)):
        r = bench(model, batches, device, args.warmup_steps, args.compile, amp)
        r["tokens_per_second"] = batch * seq / (r["step_ms_median"] / 1000)
        r["mfu"] = None if peak is None else r["tokens_per_second"] * fpt / peak
        res[name] = r
    res["speedup_ours_vs_transformers"] = res["ours"]["tokens_per_second"] / res["transformers"]["tokens_per_second"]
    print(json.dumps(res, indent=None if args.json else 2))
    return res


if __name__ == "__main__":
    main()
