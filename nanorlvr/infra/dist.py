"""
Several GPUs with torch.distributed: the process group and the reductions train.py needs (one GPU's
precision modes and memory estimate are in infra/precision.py).

`torchrun --nproc_per_node=N train.py ...`: every rank holds the whole model, takes whole
prompt groups (P/N prompts of the step's batch, so group advantages are the same as in one process),
samples and scores them, and computes its part of the loss divided by the GLOBAL normaliser (summed over
ranks). The gradients are then summed with one all-reduce per parameter before each optimizer step, so
every rank takes the same step as one process would on the whole batch. Why not DDP: the ranks keep
different numbers of rows (rows with zero advantage are dropped) and so run different numbers of
micro-batch backwards, which DDP's hook-per-backward synchronisation does not allow; summing once per
optimizer step is exact, and its cost is small next to the rollout. NCCL on GPU, gloo on CPU. Rank 0 logs (common.log)
and writes checkpoints; metrics are averaged over ranks; evaluation is sharded and combined.
"""
import datetime
import os

import torch
import torch.distributed as td

_device = "cpu"  # where collective tensors live (cuda:<local rank> under NCCL)
_owned = False   # the process group was made by init() (and so is destroyed by shutdown())

# -----------------------------------------------------------------------------
# process group


def init(device: str) -> str:
    """Join the process group if launched by torchrun (WORLD_SIZE > 1); returns this rank's device."""
    global _device, _owned
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or td.is_initialized():
        return device
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    elif device != "cpu":
        raise ValueError(f"distributed training runs on cuda (NCCL) or cpu (gloo), not {device!r}")
    td.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=datetime.timedelta(minutes=30))
    _device, _owned = device, True
    return device


def shutdown():
    global _owned
    if _owned and td.is_initialized():
        td.destroy_process_group()
    _owned = False


def rank() -> int:
    return td.get_rank() if td.is_initialized() else 0


def world() -> int:
    return td.get_world_size() if td.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier():
    if world() > 1:
        td.barrier()

# -----------------------------------------------------------------------------
# reductions (no-ops in one process: nothing changes for the single-process path)


def sum_(x: float) -> float:
    if world() == 1:
        return x
    t = torch.tensor(float(x), dtype=torch.float64, device=_device)
    td.all_reduce(t)
    return t.item()


def max_(x: float) -> float:
    if world() == 1:
        return x
    t = torch.tensor(float(x), dtype=torch.float64, device=_device)
    td.all_reduce(t, op=td.ReduceOp.MAX)
    return t.item()


def any_(flag: bool) -> bool:
    return sum_(float(bool(flag))) > 0 if world() > 1 else bool(flag)


def mean_dict(d: dict, sum_keys=()) -> dict:
    """d with its floats averaged over ranks and its sum_keys summed; other values (ints such as the step,
    strings) as they are. Every rank must pass the same keys."""
    if world() == 1:
        return d
    keys = sorted(k for k, v in d.items() if type(v) is float or (k in sum_keys and type(v) is int))
    t = torch.tensor([float(d[k]) for k in keys], dtype=torch.float64, device=_device)
    td.all_reduce(t)
    out = dict(d)
    for k, v in zip(keys, t.tolist()):
        out[k] = (int(round(v)) if type(d[k]) is int else v) if k in sum_keys else v / world()
    return out


def all_reduce_grads(model):
    """Sum the gradients over ranks (a parameter without one contributes zeros); frozen parameters (LoRA's
    base) have none and take no part."""
    if world() == 1:
        return
    works = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        works.append(td.all_reduce(p.grad, async_op=True))
    for w in works:
        w.wait()


def combine_evals(r: dict) -> dict:
    """evaluate() results of the ranks' shards -> one result (every field is a per-problem mean)."""
    if world() == 1:
        return r
    n = sum_(r["n"])
    out = {k: sum_(v * r["n"]) / n for k, v in r.items() if k != "n"}
    return {"n": int(n), **out}
