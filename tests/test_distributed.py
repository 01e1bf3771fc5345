"""Data parallelism (`bertbook.distributed`): the row split, gradient accumulation, and 2 processes on
`gloo` that must end with the same weights as 1 process on the same global batches.

Dropout is off in these models: with it, each rank draws its own masks, so the runs agree in
distribution only. Everything else (data, initialisation, loss weights) is exact up to float rounding.
"""
from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from bertbook import distributed as dist
from bertbook.bert import BertConfig, BertForPreTraining, BertForSequenceClassification
from bertbook.distill import distill
from bertbook.distilbert import student_from_teacher
from bertbook.finetune import finetune, make_batches
from bertbook.pretrain import pretrain

STEPS, BATCH, LEN, VOCAB = 3, 8, 12, 50
TIMEOUT_S = 240  # each multi-process test; a hung process group fails instead of blocking CI


def tiny_config(**kw) -> BertConfig:
    return BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=LEN, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, **kw)


def pretraining_batches(n: int = STEPS, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, VOCAB, (BATCH, LEN), generator=g)
        mask = torch.ones(BATCH, LEN, dtype=torch.long)
        mask[: BATCH // 2, LEN - 3:] = 0  # some padding, unevenly spread over the rows
        ids = ids.masked_fill(mask == 0, 0)
        labels = torch.full_like(ids, -100)
        chosen = (torch.rand(BATCH, LEN, generator=g) < 0.3) & (mask == 1)
        labels[chosen] = ids[chosen]
        ids = ids.masked_fill(chosen, 4)  # [MASK]
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
                    "labels": labels, "next_sentence_label": torch.randint(0, 2, (BATCH,), generator=g)})
    return out


def classification_batches():
    g = torch.Generator().manual_seed(1)
    texts = [torch.randint(5, VOCAB, (int(torch.randint(4, LEN, (1,), generator=g)),), generator=g).tolist()
             for _ in range(3 * BATCH)]
    labels = torch.randint(0, 2, (len(texts),), generator=g).tolist()
    return make_batches(texts, labels, batch_size=BATCH, seed=0)


def with_short_batches(batches, rows: int = 3):
    """`batches` with a batch of `rows` rows after each: the short last batch of an epoch."""
    out = []
    for b in batches:
        out += [b, {k: v[:rows] if isinstance(v, torch.Tensor) else v for k, v in b.items()}]
    return out


def train(kind: str, grad_accum: int = 1, short: bool = False):
    """One short run of `kind`; returns the trained model's state dict (CPU). `short`: a batch of
    3 rows after each batch, fewer than the 4 parts that the tests split it into."""
    torch.manual_seed(0)
    more = with_short_batches if short else list
    if kind == "pretrain":
        model = BertForPreTraining(tiny_config())
        pretrain(model, more(pretraining_batches()), STEPS, lr=1e-2, log_every=1, progress=False,
                 grad_accum=grad_accum)
    elif kind == "distill":
        teacher = BertForPreTraining(tiny_config())
        model = student_from_teacher(teacher, [0])
        distill(teacher, model, more(pretraining_batches()), STEPS, lr=1e-2, log_every=1, progress=False,
                grad_accum=grad_accum)
    elif kind == "finetune":
        model = BertForSequenceClassification(tiny_config())
        teacher = BertForSequenceClassification(tiny_config())
        finetune(model, more(classification_batches()), 1, lr=1e-2, teacher=teacher, alpha=0.5, log_every=1,
                 progress=False, grad_accum=grad_accum)
    else:
        raise ValueError(kind)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_difference(a, b) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# --------------------------------------------------------------------------- one process


def test_rows_split_every_row_once():
    for n in (8, 9, 13):
        for parts in (1, 2, 3, 4):
            covered = []
            for i in range(parts):
                sl = dist.rows(n, parts, i)
                covered += list(range(n))[sl]
            assert covered == list(range(n))
    with pytest.raises(ValueError, match="cannot be split into 4 parts"):
        dist.rows(3, 4, 0)


def test_shard_refuses_a_ragged_batch():
    with pytest.raises(ValueError, match="disagree on the batch size"):
        dist.shard({"input_ids": torch.zeros(4, 3), "labels": torch.zeros(5)}, 2, 0)


def test_single_process_is_a_world_of_one():
    assert not dist.is_initialized() and dist.rank() == 0 and dist.world_size() == 1 and dist.is_main()
    batch = pretraining_batches(1)[0]
    (micro,) = dist.micro_batches(batch)
    assert all(torch.equal(micro[k], batch[k]) for k in batch)
    assert float(dist.share(torch.tensor(5), torch.tensor(5))) == 1.0  # the loss is left exactly as it was
    assert dist.provenance(32) == {"world_size": 1, "global_batch_size": 32, "grad_accum": 1,
                                   "per_device_batch_size": 32}


@pytest.mark.parametrize("kind", ["pretrain", "distill", "finetune"])
def test_gradient_accumulation_gives_the_same_update(kind):
    one, accumulated = train(kind), train(kind, grad_accum=2)
    assert max_difference(one, accumulated) < 1e-5


@pytest.mark.parametrize("kind", ["pretrain", "distill", "finetune"])
def test_a_batch_too_short_to_split_is_skipped(kind):
    # 3 rows cannot be cut into 4 micro-batches: the run trains on the other batches, exactly
    one, skipped = train(kind), train(kind, grad_accum=4, short=True)
    assert max_difference(one, skipped) < 1e-5


def test_a_batch_too_short_to_split_fails_clearly_when_every_batch_is():
    short = with_short_batches(pretraining_batches(1))[1:]
    with pytest.raises(ValueError, match="no batch of the training data has the 4 rows"):
        pretrain(BertForPreTraining(tiny_config()), short, 1, progress=False, grad_accum=4)


def test_grad_accum_must_be_positive():
    with pytest.raises(ValueError, match="grad_accum must be a positive int"):
        pretrain(BertForPreTraining(tiny_config()), pretraining_batches(1), 1, progress=False, grad_accum=0)


# --------------------------------------------------------------------------- two processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str, job: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with dist.process_group() as distributed:
        assert distributed and dist.world_size() == world
        if job == "stage":
            _stage_job(rank, out_dir)
        elif job.endswith("+short"):  # 2 processes x 2 micro-steps: 4 parts, the short batches have 3 rows
            torch.save(train(job[:-len("+short")], grad_accum=2, short=True), os.path.join(out_dir, f"{job}-rank{rank}.pt"))
        else:
            torch.save(train(job), os.path.join(out_dir, f"{job}-rank{rank}.pt"))


def _stage_job(rank: int, cache_dir: str) -> None:
    """A cached pipeline stage under 2 processes: who writes the checkpoint, what its info says."""
    from bertbook import pipeline

    writes = []
    real_save = pipeline.save_checkpoint
    pipeline.save_checkpoint = lambda path, *a, **k: writes.append(path) or real_save(path, *a, **k)
    _, info = pipeline.pretrained_teacher("tiny", cache_dir=cache_dir, progress=False)
    _, again = pipeline.pretrained_teacher("tiny", cache_dir=cache_dir, progress=False)
    with open(os.path.join(cache_dir, f"rank{rank}.json"), "w") as fh:
        json.dump({"writes": writes, "world_size": info["world_size"],
                   "global_batch_size": info["global_batch_size"], "cached_again": again["cached"]}, fh)


def _spawn(job: str, out_dir: str, world: int = 2) -> None:
    ctx = mp.start_processes(_worker, args=(world, _free_port(), out_dir, job), nprocs=world,
                             join=False, start_method="spawn")
    import time
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"2-process {job} did not finish in {TIMEOUT_S} s")


@pytest.mark.parametrize("kind", ["pretrain", "distill", "finetune"])
def test_two_processes_match_one(tmp_path, kind):
    _spawn(kind, str(tmp_path))
    ranks = [torch.load(tmp_path / f"{kind}-rank{r}.pt") for r in range(2)]
    assert max_difference(ranks[0], ranks[1]) == 0.0  # DDP keeps the replicas identical
    assert max_difference(ranks[0], train(kind)) < 1e-5  # and equal to one process on the global batch


def test_two_processes_skip_a_batch_too_short_to_split(tmp_path):
    _spawn("pretrain+short", str(tmp_path))
    ranks = [torch.load(tmp_path / f"pretrain+short-rank{r}.pt") for r in range(2)]
    assert max_difference(ranks[0], ranks[1]) == 0.0
    assert max_difference(ranks[0], train("pretrain")) < 1e-5  # trained on the batches that could be split


def test_only_rank_0_writes_the_cache(tmp_path):
    _spawn("stage", str(tmp_path))
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(reports[0]["writes"]) == 1 and reports[1]["writes"] == []
    assert os.path.exists(reports[0]["writes"][0])
    for r in reports:
        assert r["world_size"] == 2 and r["global_batch_size"] == 8 and r["cached_again"] is True


def test_torchrun_cli(tmp_path):
    """`torchrun --nproc_per_node=2 -m bertbook pretrain --scale tiny`: one line of results, one checkpoint."""
    env = {**os.environ, "BERTBOOK_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
           str(_free_port()), "-m", "bertbook", "pretrain", "--scale", "tiny", "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [l for l in done.stdout.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("BERT from scratch"), done.stdout
    from bertbook.cache import load_checkpoint
    (path,) = [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("pretrain-")]
    _, info = load_checkpoint(str(path))
    assert info["world_size"] == 2 and info["global_batch_size"] == 8


FAILING_RANK = """
from bertbook import distributed as dist

with dist.process_group():
    if dist.rank() == 1:
        raise RuntimeError("rank 1 fails")
    dist.all_reduce_sum([1.0])  # rank 0 waits in a collective that rank 1 never joins
print("rank 0 got past the collective")
"""


def test_failing_rank_leaves_at_once(tmp_path):
    """A rank that raises inside `process_group` leaves without waiting at the success-path barrier,
    so torchrun sees the failure and stops the other rank: the run fails in seconds, not after the
    process group's 60-minute timeout."""
    import time

    script = tmp_path / "fail.py"
    script.write_text(FAILING_RANK)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
           str(_free_port()), str(script)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode != 0 and "rank 1 fails" in done.stderr, done.stderr[-3000:]
    assert "got past the collective" not in done.stdout
    assert time.perf_counter() - t0 < 120, "a failing rank kept the run alive"
