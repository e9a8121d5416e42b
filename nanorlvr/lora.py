"""
LoRA: train a low-rank update of each weight matrix instead of the matrix itself, the base frozen.

LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", arXiv 2106.09685) replaces the
update of a linear layer's weight W (out x in) by a product B A of rank r: A (r x in), B (out x r), and

    y = x W^T + b + (alpha / r) (x A^T) B^T,      the merged weight  W' = W + (alpha / r) B A.

A starts random (uniform in +-1/sqrt(in), the default of nn.Linear and of PEFT), B at zero, so at step 0
the adapted model is exactly the base. Only A and B are trained: the optimizer, its state, the gradient
clip and the all-reduce see r (in + out) numbers per matrix instead of in x out. For RL, Thinking
Machines' "LoRA Without Regret" (Schulman et al., 2025) reports that even rank 1 matches full fine-tuning
(a policy-gradient episode carries about one bit), at a learning rate about 10x the full one, with alpha
fixed (32) across ranks: with the 1/r scale the best lr then hardly depends on r. Hence alpha = 32 here.

Where each piece is used:
- `add_adapters` puts a `LoRALinear` in place of every targeted linear (q/k/v/o and gate/up/down by default;
  the embedding, the norms and the head stay frozen). Parameter names stay those of infra/hf.py's mapping
  (`...q_proj.weight`), the adapter adds `...q_proj.lora_A` / `lora_B`.
- `BaseView` is the model with its adapters switched off: the KL term's reference (the base) without a
  second copy of the weights.
- `merged_copy` / `merge_into`: the plain model of the merged weights that rollouts and evaluations sample
  from (infra/precision.SamplingCopy), refreshed by merging before each use. What is exact: the sampler
  and every saved checkpoint hold the same merged weights W' (computed in fp32, then rounded to the
  weights' dtype), so evaluating a step folder reproduces the run's own evaluation; the training forward
  computes x W^T + s (x A^T) B^T unmerged (no full-size product in the graph), which differs from x W'^T
  by rounding only (~1e-7 relative in fp32).
- `merged_state_dict` and `save_adapter`: a checkpoint is an ordinary HF folder of merged weights plus, in
  its subfolder `adapter/`, the adapter in PEFT's layout (adapter_config.json + adapter_model.safetensors,
  keys `base_model.model.<module>.lora_A.weight`), for the Llama/Qwen2/Qwen3 names (GPT-2's fused c_attn
  has no per-matrix adapter: GPT-2 checkpoints carry the merged weights only). A subfolder, because
  transformers treats a folder holding both config.json and adapter_config.json as a model with an
  embedded adapter and would apply it to the merged weights a second time.
- `adapter_state` / `load_adapter_state`: what --resume restores (the frozen base is reloaded from the
  run's source; merged weights are rounded and so are not the source of truth for resuming).
"""
import contextlib
import copy
import json
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanorlvr.model import GPT

# every linear of attention and MLP (GPT-2 has no gate_proj: absent names are skipped)
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_DIR, ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter", "adapter_config.json", "adapter_model.safetensors"


class LoRALinear(nn.Linear):
    """A linear layer with a frozen weight (and bias) and a trainable rank-r update (alpha / r) B A. It keeps
    the base layer's own Parameters (no copy); A and B are fp32 whatever the base's dtype (an AdamW step on
    a bf16 adapter would round away, infra/precision.py)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.rank, self.alpha, self.scale, self.enabled = rank, alpha, alpha / rank, True
        dev = base.weight.device
        bound = 1 / math.sqrt(self.in_features)  # kaiming_uniform(a=sqrt(5)): nn.Linear's and PEFT's init
        a = torch.empty(rank, self.in_features).uniform_(-bound, bound, generator=generator)
        self.lora_A = nn.Parameter(a.to(dev))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=dev))  # step 0 = the base

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if not self.enabled:
            return y
        # unmerged: two thin products instead of a full-size W + s B A in the autograd graph
        a = x.to(self.lora_A.dtype)
        return y + (F.linear(F.linear(a, self.lora_A), self.lora_B) * self.scale).to(y.dtype)

    @torch.no_grad()
    def merged_weight(self):
        """W + (alpha / r) B A, computed in fp32 and rounded once to the weight's dtype."""
        delta = (self.lora_B.float() @ self.lora_A.float()) * self.scale
        return (self.weight.float() + delta).to(self.weight.dtype)


def add_adapters(model, rank, alpha, targets=TARGETS, seed=0):
    """Freeze every parameter of `model` and put a rank-`rank` LoRALinear in place of each linear whose name
    ends in one of `targets`. A is drawn from its own generator (seeded by `seed`), so the global random
    streams are those of a run without LoRA. Returns the adapted module names."""
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    names = [n for n, m in model.named_modules()
             if type(m) is nn.Linear and n.rpartition(".")[2] in targets]
    if not names:
        raise ValueError(f"no linear layer named {', '.join(targets)} in the model")
    for name in names:
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, LoRALinear(model.get_submodule(name), rank, alpha, g))
    return names


def adapters(model) -> dict:
    """name -> LoRALinear of every adapted linear of `model` (empty: full fine-tuning)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def has_adapters(model) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


def trainable(model) -> list:
    """The parameters an optimizer steps: the adapters with LoRA, every parameter without."""
    return [p for p in model.parameters() if p.requires_grad]


@contextlib.contextmanager
def disabled(model):
    """Inside: the model computes the frozen base alone (adapters switched off)."""
    mods = list(adapters(model).values())
    for m in mods:
        m.enabled = False
    try:
        yield model
    finally:
        for m in mods:
            m.enabled = True


class BaseView:
    """The adapted model seen as its frozen base: calling it runs the forward with the adapters off, every
    other attribute (config, lm_head, parameters) is the model's. The KL term's reference without a
    second model in memory."""

    def __init__(self, model):
        self.model = model

    def __call__(self, *args, **kwargs):
        with disabled(self.model):
            return self.model(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)

# -----------------------------------------------------------------------------
# merged weights: the sampler and the checkpoints


def merged_state_dict(model) -> dict:
    """The model's state dict with each adapted weight merged (W + (alpha / r) B A) and no lora_* keys: the
    weights of the plain model the adapters define (the tied head stays the embedding's tensor)."""
    ad = adapters(model)
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith((".lora_A", ".lora_B"))}
    for name, m in ad.items():
        sd[f"{name}.weight"] = m.merged_weight()
    return sd


def merged_copy(model, dtype):
    """A plain copy of the model (nn.Linear in place of each LoRALinear) holding the merged weights in
    `dtype`, without gradients: what rollouts sample from. Refresh it with merge_into."""
    grads = [p.grad for p in model.parameters()]
    for p in model.parameters():  # not copied
        p.grad = None
    out = copy.deepcopy(model)
    for p, g in zip(model.parameters(), grads):
        p.grad = g
    for name, m in adapters(out).items():
        plain = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
        plain.weight, plain.bias = nn.Parameter(m.merged_weight()), m.bias
        parent, _, attr = name.rpartition(".")
        setattr(out.get_submodule(parent), attr, plain)
    out = out.to(dtype)
    for p in out.parameters():
        p.requires_grad_(False)
    return out.eval()


@torch.no_grad()
def merge_into(dst, model):
    """Write the merged weight of each adapter of `model` into the same-named linear of `dst` (its other
    weights are the frozen base's, copied once by merged_copy)."""
    for name, m in adapters(model).items():
        dst.get_submodule(name).weight.copy_(m.merged_weight())

# -----------------------------------------------------------------------------
# the adapter on disk (PEFT's layout) and in the trainer state


def peft_tensors(model) -> dict:
    """The adapters under the names PEFT saves for a Llama/Qwen2/Qwen3 causal LM."""
    out = {}
    for name, m in adapters(model).items():
        out[f"base_model.model.{name}.lora_A.weight"] = m.lora_A.detach()
        out[f"base_model.model.{name}.lora_B.weight"] = m.lora_B.detach()
    return out


def peft_config(model) -> dict:
    """adapter_config.json: the fields PEFT's LoraConfig reads (absent ones take PEFT's defaults)."""
    ad = list(adapters(model).values())
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": ad[0].rank, "lora_alpha": ad[0].alpha,
            "target_modules": sorted({n.rpartition(".")[2] for n in adapters(model)}), "lora_dropout": 0.0,
            "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
            "init_lora_weights": True, "inference_mode": True, "modules_to_save": None,
            "base_model_name_or_path": None}


def save_adapter(model, path, save_tensors) -> bool:
    """adapter_config.json + adapter_model.safetensors into `path`/adapter/ (save_tensors: infra/hf's
    writer): `PeftModel.from_pretrained(base, path / "adapter")` loads it. Llama-family models only
    (GPT-2's fused attention has no per-matrix adapter): returns whether it wrote them."""
    if model.config.arch != "llama":
        return False
    out = Path(path) / ADAPTER_DIR
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(peft_tensors(model), out / ADAPTER_WEIGHTS)
    (out / ADAPTER_CONFIG).write_text(json.dumps(peft_config(model), indent=2) + "\n")
    return True


def adapter_state(model) -> dict:
    """The adapters' values (CPU copies) by parameter name: what --resume restores."""
    return {f"{n}.{k}": getattr(m, k).detach().cpu().clone() for n, m in adapters(model).items()
            for k in ("lora_A", "lora_B")}


@torch.no_grad()
def load_adapter_state(model, state: dict):
    """Set the adapters from adapter_state's dict; the names and shapes must match exactly."""
    params = {f"{n}.{k}": getattr(m, k) for n, m in adapters(model).items() for k in ("lora_A", "lora_B")}
    if set(params) != set(state):
        raise ValueError(f"the saved adapters do not match the model's ({len(state)} vs {len(params)} tensors)")
    for name, p in params.items():
        if p.shape != state[name].shape:
            raise ValueError(f"adapter {name}: saved shape {tuple(state[name].shape)}, model {tuple(p.shape)}")
        p.copy_(state[name])


def count_adapter_params(model_or_cfg, rank, targets=TARGETS) -> int:
    """r (in + out) summed over the linears that would be adapted: the trainable parameters of a LoRA run.
    Takes a model or a GPTConfig (a model is then built on the meta device)."""
    model = model_or_cfg
    if not isinstance(model, nn.Module):
        with torch.device("meta"):
            model = GPT(model_or_cfg)
    return sum(rank * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and n.rpartition(".")[2] in targets)
