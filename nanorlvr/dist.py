"""
Scaling train.py up (one GPU: precision and a memory estimate) and out (several: torch.distributed).

One GPU. `--precision=bf16-mixed` (the default on CUDA) keeps fp32 master weights, gradients and AdamW
states, runs the update's forward/backward under bf16 autocast, and samples rollouts from a bf16 snapshot
of the weights, refreshed before every rollout. Why not plain bf16 weights: at RL learning rates (~1e-6) an
AdamW step moves a weight by ~lr, while a bf16 weight of magnitude 0.02 has a spacing of ~1e-4, so most
updates round away to nothing. Why a snapshot for sampling rather than autocast: autocast re-casts every
weight at every decoding step, and the engine's KV cache takes the parameters' dtype (fp32 under autocast,
twice the memory and a cast of the whole cache per step); the bf16 snapshot decodes in pure bf16.

Several GPUs. `torchrun --nproc_per_node=N train.py ...`: every rank holds the whole model, takes whole
prompt groups (P/N prompts of the step's batch, so group advantages are the same as in one process),
samples and scores them, and computes its part of the loss divided by the GLOBAL normaliser (summed over
ranks). The gradients are then summed with one all-reduce per parameter before each optimizer step, so
every rank takes the same step as one process would on the whole batch. Why not DDP: the ranks keep
different numbers of rows (rows with zero advantage are dropped) and so run different numbers of
micro-batch backwards, which DDP's hook-per-backward synchronisation does not allow; summing once per
optimizer step is exact, and its cost is small next to the rollout. NCCL on GPU, gloo on CPU. Rank 0 logs
and writes checkpoints; metrics are averaged over ranks; evaluation is sharded and combined.
"""
import contextlib
import copy
import datetime
import os
import sys

import torch
import torch.distributed as td

from nanorlvr.engine import LOGITS_PER_CHUNK

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


def log(msg, file=None):
    """common.log on rank 0 only."""
    if is_main():
        print(msg, file=file or sys.stdout, flush=True)


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
    """Sum the gradients over ranks (a parameter without one contributes zeros)."""
    if world() == 1:
        return
    works = []
    for p in model.parameters():
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

# -----------------------------------------------------------------------------
# precision


def resolve_precision(name: str, device: str) -> str:
    if name == "auto":
        return "bf16-mixed" if device.startswith("cuda") else "fp32"
    if name not in ("fp32", "bf16-mixed", "bf16"):
        raise ValueError(f"unknown --precision {name!r}: auto, fp32, bf16-mixed or bf16")
    return name


def weight_dtype(precision):
    return torch.bfloat16 if precision == "bf16" else torch.float32


def autocast(precision, device):
    """The context the update's forward runs in."""
    if precision == "bf16-mixed":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Sampler:
    """The model rollouts and evaluations sample from: the model itself, or (bf16-mixed) a bf16 copy
    refreshed from the fp32 master weights by `get()`."""

    def __init__(self, model, precision):
        self.model, self.copy = model, None
        if precision == "bf16-mixed":
            self.copy = _detached_copy(model).to(torch.bfloat16).eval()

    @torch.no_grad()
    def get(self):
        if self.copy is None:
            return self.model
        for dst, src in zip(self.copy.parameters(), self.model.parameters()):
            dst.copy_(src)
        return self.copy


def _detached_copy(model):
    """A deep copy (tied weights stay tied) without gradients and requires_grad."""
    grads = [p.grad for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    out = copy.deepcopy(model)
    for p, g in zip(model.parameters(), grads):
        p.grad = g
    for p in out.parameters():
        p.requires_grad_(False)
    return out

# -----------------------------------------------------------------------------
# memory


def count_params(mcfg) -> int:
    from nanorlvr.model import GPT
    with torch.device("meta"):
        return GPT(mcfg).num_params()


def memory_estimate(mcfg, *, gen_rows, update_rows, prompt_len, new_tokens, precision="bf16-mixed",
                    grad_ckpt=False, kl=False) -> dict:
    """Rough peak bytes on one device, by part. gen_rows: rows sampled at once (one generate call);
    update_rows: rows per forward/backward (the micro-batch). Static: weights, gradients, AdamW's two
    moments (in the weight dtype), the bf16 sampling copy (bf16-mixed), the reference model (kl > 0).
    Rollout: the KV cache plus the prefill's largest activations (MLP hidden and residual streams over the
    prompt) and the fp32 sampling temporaries of one (rows, V) logits row (prefill computes only the last).
    Update: per token and layer ~(34 h + 8 i + 8 kv) bytes of saved activations in bf16 (one block's worth
    plus 4 h per layer with checkpointing), and the vocabulary-sized tensors: where a micro-batch's logits
    fit in engine.LOGITS_PER_CHUNK (the toy), ~2 V bytes per token of bf16 logits and ~16 V per completion
    token for their fp32 copy, log-softmax, entropy and gradients; above it, engine.completion_logprobs
    computes them a chunk at a time, ~(2 + 16) bytes per logit of one chunk. Plus (bf16-mixed) autocast's
    bf16 copy of the weights. Peak = static + max(rollout, update). On an H100 (bench/train_step.py,
    before the chunking) the rollout peaks were within 0.3 GiB and the update peaks within 8 V bytes per
    completion token; the chunked path is measured on the CPU only (bench/logprob_memory.py). Treat it
    as +-20%."""
    n, L, h, V = count_params(mcfg), mcfg.n_layer, mcfg.n_embd, mcfg.vocab_size
    kv, i = mcfg.n_kv_head * mcfg.head_dim, mcfg.intermediate_size
    wb = 2 if precision == "bf16" else 4         # weight / grad / optimizer-state bytes
    cb = 4 if precision == "fp32" else 2         # activation bytes
    T = prompt_len + new_tokens
    out = {"params": n, "weights": n * wb, "grads": n * wb, "adamw": 2 * n * wb,
           "sampling_copy": 2 * n if precision == "bf16-mixed" else 0, "ref_model": n * (2 if cb == 2 else 4) if kl else 0}
    per_layer_token = (34 * h + 8 * i + 8 * kv) * cb // 2
    out["kv_cache"] = 2 * L * gen_rows * kv * T * cb
    out["prefill"] = gen_rows * (prompt_len * (2 * i + 4 * h) * cb + 12 * V)
    act_tokens = update_rows * T
    out["activations"] = act_tokens * (L * 4 * h + per_layer_token) if grad_ckpt else act_tokens * L * per_layer_token
    if update_rows * T * V <= LOGITS_PER_CHUNK:
        out["logits"] = update_rows * (T * V * cb + new_tokens * V * 16)
    else:
        out["logits"] = LOGITS_PER_CHUNK * (cb + 16)
    static = sum(out[k] for k in ("weights", "grads", "adamw", "sampling_copy", "ref_model"))
    out["rollout_peak"] = out["kv_cache"] + out["prefill"]
    out["autocast_cache"] = 2 * n if precision == "bf16-mixed" else 0
    out["update_peak"] = out["activations"] + out["logits"] + out["autocast_cache"]
    out["total"] = static + max(out["rollout_peak"], out["update_peak"])
    return out


def memory_line(m: dict) -> str:
    g = lambda b: f"{b / 2**30:.1f}"
    return (f"memory estimate {g(m['total'])} GiB ({m['params'] / 1e6:.0f}M params): weights {g(m['weights'])} + "
            f"grads {g(m['grads'])} + AdamW {g(m['adamw'])} + sampling copy {g(m['sampling_copy'])} + ref "
            f"{g(m['ref_model'])} + max(rollout: KV cache {g(m['kv_cache'])} + prefill "
            f"{g(m['prefill'])}, update: activations {g(m['activations'])} + logits {g(m['logits'])} + "
            f"autocast weights {g(m['autocast_cache'])})")
