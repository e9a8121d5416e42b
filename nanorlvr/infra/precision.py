"""
Precision modes, the bf16 copy of the weights that rollouts sample from, and a memory estimate: what it
takes to fit train.py on one GPU.

`--precision=bf16-mixed` (the default on CUDA) keeps fp32 master weights, gradients and AdamW states, runs
the update's forward/backward under bf16 autocast, and samples rollouts from a bf16 copy of the weights
(SamplingCopy), refreshed before every rollout. Why not plain bf16 weights: at RL learning rates (~1e-6) an
AdamW step moves a weight by ~lr, while a bf16 weight of magnitude 0.02 has a spacing of ~1e-4, so most
updates round away to nothing. Why a copy for sampling rather than autocast: autocast re-casts every
weight at every decoding step, and the engine's KV cache takes the parameters' dtype (fp32 under autocast,
twice the memory and a cast of the whole cache per step); the bf16 copy decodes in pure bf16.
"""
import contextlib
import copy

import torch

from nanorlvr import lora
from nanorlvr.model import GPT
from nanorlvr.logprobs import LOGITS_PER_CHUNK

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


class SamplingCopy:
    """The weights rollouts and evaluations sample from: the model itself, or (bf16-mixed) a detached bf16
    copy of it, refreshed from the fp32 master weights by `get()` before each use. With LoRA adapters, in
    every precision, a plain model of the merged weights W + (alpha / r) B A (fp32 under --precision=fp32,
    else bf16), refreshed by merging the adapted matrices only: the rest is the frozen base (nanorlvr/lora.py)."""

    def __init__(self, model, precision):
        self.model, self.copy, self.merge = model, None, lora.has_adapters(model)
        if self.merge:
            self.copy = lora.merged_copy(model, torch.float32 if precision == "fp32" else torch.bfloat16)
        elif precision == "bf16-mixed":
            self.copy = _detached_copy(model).to(torch.bfloat16).eval()

    @torch.no_grad()
    def get(self):
        if self.copy is None:
            return self.model
        if self.merge:
            lora.merge_into(self.copy, self.model)
            return self.copy
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
    with torch.device("meta"):
        return GPT(mcfg).num_params()


def memory_estimate(mcfg, *, gen_rows, update_rows, prompt_len, new_tokens, precision="bf16-mixed",
                    grad_ckpt=False, kl=False, lora_rank=0, lora_targets=lora.TARGETS) -> dict:
    """Rough peak bytes on one device, by part. gen_rows: rows sampled at once (one generate call);
    update_rows: rows per forward/backward (the micro-batch). Static: weights, gradients, AdamW's two
    moments (in the weight dtype), the bf16 sampling copy (bf16-mixed), the reference model (kl > 0).
    Rollout: the KV cache plus the prefill's largest activations (MLP hidden and residual streams over the
    prompt) and the fp32 sampling temporaries of one (rows, V) logits row (prefill computes only the last).
    Update: per token and layer ~(34 h + 8 i + 8 kv) bytes of saved activations in bf16 (one block's worth
    plus 4 h per layer with checkpointing), and the vocabulary-sized tensors: where a micro-batch's logits
    fit in logprobs.LOGITS_PER_CHUNK (the toy), ~2 V bytes per token of bf16 logits and ~16 V per completion
    token for their fp32 copy, log-softmax, entropy and gradients; above it, logprobs.completion_logprobs
    computes them a chunk at a time, ~(2 + 16) bytes per logit of one chunk. Plus (bf16-mixed) autocast's
    bf16 copy of the weights. Peak = static + max(rollout, update). On an H100 (bench/train_step.py,
    before the chunking) the rollout peaks were within 0.3 GiB and the update peaks within 8 V bytes per
    completion token; the chunked path is measured on the CPU only (bench/logprob_memory.py). Treat it
    as +-20%.
    With LoRA (lora_rank > 0; nanorlvr/lora.py) the base is frozen: no gradient, no AdamW state; the
    adapters' a = r (in + out) numbers per matrix are fp32 with fp32 gradients and AdamW moments (16 a
    bytes); the sampling copy holds the merged weights (fp32 under fp32, else bf16); the KL reference is
    the base itself (no second model); autocast caches casts of trainable leaves only, so under bf16-mixed
    the frozen weights are cast per use (one block's worth with checkpointing)."""
    n, L, h, V = count_params(mcfg), mcfg.n_layer, mcfg.n_embd, mcfg.vocab_size
    kv, i = mcfg.n_kv_head * mcfg.head_dim, mcfg.intermediate_size
    wb = 2 if precision == "bf16" else 4         # weight / grad / optimizer-state bytes
    cb = 4 if precision == "fp32" else 2         # activation bytes
    T = prompt_len + new_tokens
    out = {"params": n, "weights": n * wb, "grads": n * wb, "adamw": 2 * n * wb,
           "sampling_copy": 2 * n if precision == "bf16-mixed" else 0, "ref_model": n * (2 if cb == 2 else 4) if kl else 0}
    if lora_rank:  # frozen base + fp32 adapters; sampling from a merged copy; the reference is the base
        a = lora.count_adapter_params(mcfg, lora_rank, lora_targets)
        out.update(trainable=a, weights=n * wb + 4 * a, grads=4 * a, adamw=8 * a,
                   sampling_copy=n * (4 if precision == "fp32" else 2), ref_model=0)
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
    if lora_rank and precision == "bf16-mixed" and grad_ckpt:  # frozen weights' casts: one block's at a time
        out["autocast_cache"] = 2 * (n // L + out["trainable"])
    out["update_peak"] = out["activations"] + out["logits"] + out["autocast_cache"]
    out["total"] = static + max(out["rollout_peak"], out["update_peak"])
    return out


def memory_line(m: dict) -> str:
    g = lambda b: f"{b / 2**30:.1f}"
    lora_part = f", {m['trainable'] / 1e6:.2f}M trainable (LoRA)" if "trainable" in m else ""
    return (f"memory estimate {g(m['total'])} GiB ({m['params'] / 1e6:.0f}M params{lora_part}): weights "
            f"{g(m['weights'])} + "
            f"grads {g(m['grads'])} + AdamW {g(m['adamw'])} + sampling copy {g(m['sampling_copy'])} + ref "
            f"{g(m['ref_model'])} + max(rollout: KV cache {g(m['kv_cache'])} + prefill "
            f"{g(m['prefill'])}, update: activations {g(m['activations'])} + logits {g(m['logits'])} + "
            f"autocast weights {g(m['autocast_cache'])})")
