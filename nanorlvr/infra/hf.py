"""
Hugging Face checkpoints in and out: config.json <-> GPTConfig, HF tensor names <-> ours, and loading /
saving a local checkpoint directory (config.json + model.safetensors, or shards listed in
model.safetensors.index.json). Nothing is downloaded: `path` is always a local directory.

Supported architectures: GPT2LMHeadModel, LlamaForCausalLM (incl. Llama 3 rope scaling),
Qwen2ForCausalLM (q/k/v biases), Qwen3ForCausalLM (per-head q/k RMSNorm).

Llama/Qwen tensor names are already ours (model.py follows them). GPT-2 needs renaming, and its
attention/MLP matrices are Conv1D layers, stored (in, out): they are transposed, and the fused c_attn
is split into q/k/v. Tied heads are stored once, under the embedding's name, as transformers does.
"""
import json
import shutil
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from nanorlvr.model import GPT, GPTConfig, rope_inv_freq

SUPPORTED = ("GPT2LMHeadModel", "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
MODEL_TYPES = {"GPT2LMHeadModel": "gpt2", "LlamaForCausalLM": "llama",
               "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}
LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
# files copied next to an exported model (the tokenizer and generation defaults of the source checkpoint)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                   "chat_template.jinja", "vocab.json", "merges.txt")

# -----------------------------------------------------------------------------
# config.json <-> GPTConfig


def architecture_of(d: dict) -> str:
    """The HF architecture name of a config dict (from `architectures`, else `model_type`); must be supported."""
    archs = d.get("architectures") or []
    name = archs[0] if archs else {v: k for k, v in MODEL_TYPES.items()}.get(d.get("model_type"), d.get("model_type"))
    if name not in SUPPORTED:
        raise ValueError(f"unsupported architecture {name!r}: nanorlvr loads {', '.join(SUPPORTED)}")
    return name


def _get(d, key, default=None, required=False):
    if d.get(key) is not None:
        return d[key]
    if required:
        raise ValueError(f"config.json lacks required key {key!r}")
    return default


def _rope_from_hf(d):
    """(rope_theta, rope_scaling or None) from either transformers 5's `rope_parameters` or the older
    top-level `rope_theta` + `rope_scaling`."""
    params = {**(d.get("rope_scaling") or {}), **(d.get("rope_parameters") or {})}
    theta = params.pop("rope_theta", None) or _get(d, "rope_theta", 10000.0)
    if params.get("partial_rotary_factor", d.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError("partial_rotary_factor != 1 is not supported")
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return float(theta), None
    if kind != "llama3":
        raise ValueError(f"unsupported rope type {kind!r}: only 'default' and 'llama3' are implemented")
    params.setdefault("original_max_position_embeddings", _get(d, "max_position_embeddings", required=True))
    return float(theta), {"rope_type": "llama3", **{k: params[k] for k in LLAMA3_KEYS}}


def config_from_hf(d: dict) -> GPTConfig:
    """GPTConfig from a Hugging Face config.json dict. Absent optional keys take transformers' defaults."""
    arch = architecture_of(d)
    if arch == "GPT2LMHeadModel":
        act = _get(d, "activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"GPT-2 activation_function {act!r} is not supported (only tanh-approximate GELU)")
        if not _get(d, "scale_attn_weights", True) or _get(d, "scale_attn_by_inverse_layer_idx", False):
            raise ValueError("GPT-2 attention scaling other than 1/sqrt(head_dim) is not supported")
        n_embd, n_head = _get(d, "n_embd", required=True), _get(d, "n_head", required=True)
        return GPTConfig(arch="gpt2", vocab_size=_get(d, "vocab_size", required=True),
                         n_layer=_get(d, "n_layer", required=True), n_head=n_head, n_kv_head=n_head, n_embd=n_embd,
                         intermediate_size=_get(d, "n_inner", 4 * n_embd), max_seq_len=_get(d, "n_positions", 1024),
                         norm_eps=_get(d, "layer_norm_epsilon", 1e-5),
                         tie_embeddings=_get(d, "tie_word_embeddings", True))
    if _get(d, "hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {d['hidden_act']!r} is not supported (only silu)")
    if _get(d, "mlp_bias", False):
        raise ValueError("mlp_bias=True is not supported (the MLP has no biases)")
    if arch != "Qwen2ForCausalLM" and _get(d, "attention_bias", False):
        raise ValueError("attention_bias=True (biases on q/k/v/o) is not supported; only Qwen2's q/k/v biases are")
    if _get(d, "use_sliding_window", False):
        raise ValueError("use_sliding_window=True is not supported")
    theta, scaling = _rope_from_hf(d)
    hidden, n_head = _get(d, "hidden_size", required=True), _get(d, "num_attention_heads", required=True)
    qwen = arch.startswith("Qwen")
    return GPTConfig(arch="llama", vocab_size=_get(d, "vocab_size", required=True),
                     n_layer=_get(d, "num_hidden_layers", required=True), n_head=n_head,
                     n_kv_head=_get(d, "num_key_value_heads", n_head), n_embd=hidden,
                     head_dim=_get(d, "head_dim", 128 if arch == "Qwen3ForCausalLM" else hidden // n_head),
                     intermediate_size=_get(d, "intermediate_size", required=True),
                     max_seq_len=_get(d, "max_position_embeddings", 32768 if qwen else 2048),
                     norm_eps=_get(d, "rms_norm_eps", 1e-6), rope_theta=theta, rope_scaling=scaling,
                     qkv_bias=arch == "Qwen2ForCausalLM", qk_norm=arch == "Qwen3ForCausalLM",
                     tie_embeddings=_get(d, "tie_word_embeddings", False))


def _default_architecture(cfg):
    if cfg.arch == "gpt2":
        return "GPT2LMHeadModel"
    return "Qwen3ForCausalLM" if cfg.qk_norm else "Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM"


def config_to_hf(cfg: GPTConfig, architecture: str | None = None) -> dict:
    """A config.json dict that transformers loads as `architecture` (default: the one matching cfg).
    Token ids (bos/eos/pad) are left null; save_pretrained fills them from the source checkpoint."""
    arch = architecture or _default_architecture(cfg)
    if arch not in SUPPORTED:
        raise ValueError(f"unsupported architecture {arch!r}: nanorlvr exports {', '.join(SUPPORTED)}")
    if arch != _default_architecture(cfg):
        raise ValueError(f"config (arch={cfg.arch}, qkv_bias={cfg.qkv_bias}, qk_norm={cfg.qk_norm}) cannot be "
                         f"expressed as {arch}; it exports as {_default_architecture(cfg)}")
    common = {"architectures": [arch], "model_type": MODEL_TYPES[arch], "vocab_size": cfg.vocab_size,
              "tie_word_embeddings": cfg.tie_embeddings, "bos_token_id": None, "eos_token_id": None,
              "pad_token_id": None}
    if arch == "GPT2LMHeadModel":
        if cfg.n_kv_head != cfg.n_head or cfg.head_dim * cfg.n_head != cfg.n_embd:
            raise ValueError("GPT-2 needs n_kv_head == n_head and head_dim == n_embd // n_head")
        return {**common, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
                "n_inner": cfg.intermediate_size, "n_positions": cfg.max_seq_len, "n_ctx": cfg.max_seq_len,
                "layer_norm_epsilon": cfg.norm_eps, "activation_function": "gelu_new", "scale_attn_weights": True}
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling:
        rope = {"rope_type": "llama3", "rope_theta": cfg.rope_theta, **{k: cfg.rope_scaling[k] for k in LLAMA3_KEYS}}
    out = {**common, "hidden_size": cfg.n_embd, "intermediate_size": cfg.intermediate_size,
           "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_kv_head,
           "head_dim": cfg.head_dim, "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps,
           "hidden_act": "silu",
           # transformers >= 5 reads rope_parameters; older readers rope_theta + rope_scaling
           "rope_parameters": rope, "rope_theta": cfg.rope_theta,
           "rope_scaling": {k: v for k, v in rope.items() if k != "rope_theta"} if cfg.rope_scaling else None}
    if arch == "LlamaForCausalLM":
        out.update(attention_bias=False, mlp_bias=False)
    if arch == "Qwen3ForCausalLM":
        out.update(attention_bias=False)
    if arch.startswith("Qwen"):
        out.update(use_sliding_window=False, sliding_window=None)
    return out

# -----------------------------------------------------------------------------
# tensor names: HF <-> ours

# GPT-2 block modules, ours -> HF, and whether the HF tensor is a Conv1D weight (stored transposed)
GPT2_BLOCK = {"input_layernorm": ("ln_1", False), "post_attention_layernorm": ("ln_2", False),
              "self_attn.o_proj": ("attn.c_proj", True), "mlp.up_proj": ("mlp.c_fc", True),
              "mlp.down_proj": ("mlp.c_proj", True)}
GPT2_TOP = {"model.embed_tokens": "wte", "model.embed_positions": "wpe", "model.norm": "ln_f"}
# tensors some checkpoints carry that are recomputed here: GPT-2's causal-mask buffers, old Llama rope buffers
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")


def _gpt2_from_hf(name, t):
    """Ours for one GPT-2 tensor: a list of (name, tensor) (three for the fused c_attn)."""
    name = name.removeprefix("transformer.")
    if name == "lm_head.weight":
        return [(name, t)]
    module, _, param = name.rpartition(".")
    for ours, hf in GPT2_TOP.items():
        if module == hf:
            return [(f"{ours}.{param}", t)]
    parts = module.split(".", 2)  # "h", i, rest
    if len(parts) == 3 and parts[0] == "h":
        prefix = f"model.layers.{parts[1]}"
        if parts[2] == "attn.c_attn":
            qkv = (t.t() if param == "weight" else t).chunk(3, dim=0)
            return [(f"{prefix}.self_attn.{p}_proj.{param}", x.contiguous()) for p, x in zip("qkv", qkv)]
        for ours, (hf, conv) in GPT2_BLOCK.items():
            if parts[2] == hf:
                return [(f"{prefix}.{ours}.{param}", t.t().contiguous() if conv and param == "weight" else t)]
    return [(name, t)]  # unknown: reported as unexpected by the caller


def tensors_from_hf(name: str, t: torch.Tensor, cfg: GPTConfig) -> list[tuple[str, torch.Tensor]]:
    """Our (name, tensor) pairs for one checkpoint tensor; [] for tensors we recompute or that are tied."""
    if name.endswith(IGNORED_SUFFIXES) or (cfg.tie_embeddings and name == "lm_head.weight"):
        return []
    return _gpt2_from_hf(name, t) if cfg.arch == "gpt2" else [(name, t)]


def state_dict_to_hf(sd: dict, cfg: GPTConfig) -> dict:
    """Ours -> HF. Tied heads are stored once (under the embedding), the way transformers saves them."""
    sd = {k: v for k, v in sd.items() if not (cfg.tie_embeddings and k == "lm_head.weight")}
    if cfg.arch != "gpt2":
        return dict(sd)
    out = {}
    for name, t in sd.items():
        module, _, param = name.rpartition(".")
        if module in GPT2_TOP:
            out[f"transformer.{GPT2_TOP[module]}.{param}"] = t
        elif name == "lm_head.weight":
            out[name] = t
        elif module.endswith("self_attn.q_proj"):
            i = module.split(".")[2]
            qkv = torch.cat([sd[f"model.layers.{i}.self_attn.{p}_proj.{param}"] for p in "qkv"], dim=0)
            out[f"transformer.h.{i}.attn.c_attn.{param}"] = qkv.t().contiguous() if param == "weight" else qkv
        elif module.endswith(("self_attn.k_proj", "self_attn.v_proj")):
            continue  # fused into c_attn with q
        else:
            _, _, i, sub = module.split(".", 3)
            hf, conv = GPT2_BLOCK[sub]
            out[f"transformer.h.{i}.{hf}.{param}"] = t.t().contiguous() if conv and param == "weight" else t
    return out

# -----------------------------------------------------------------------------
# loading


def _shard_files(path: Path) -> list[Path]:
    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        files = [path / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"shard {f.name} listed in {index} is missing")
        return files
    raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {path} "
                            "(only safetensors checkpoints are supported)")


def _resolve_dtype(dtype, device):
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def _set_param(model, name, t):
    module, _, attr = name.rpartition(".")
    setattr(model.get_submodule(module), attr, nn.Parameter(t))


def load_pretrained(path, dtype=None, device="cpu") -> GPT:
    """A GPT from a local HF checkpoint directory. dtype defaults to fp32 on CPU, bf16 on CUDA.
    The model is built on the meta device and filled one tensor at a time, so peak memory is about
    the model itself plus one tensor."""
    path, device = Path(path), torch.device(device)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {path}")
    cfg = config_from_hf(json.loads((path / "config.json").read_text()))
    dtype = _resolve_dtype(dtype, device)
    with torch.device("meta"):
        model = GPT(cfg)
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}  # a tied head is listed once
    loaded, unexpected = set(), []
    for file in _shard_files(path):
        with safe_open(file, framework="pt") as f:
            for hf_name in f.keys():
                for name, t in tensors_from_hf(hf_name, f.get_tensor(hf_name), cfg):
                    if name not in expected:
                        unexpected.append(hf_name)
                        continue
                    if tuple(t.shape) != expected[name]:
                        ours = f" (our {name})" if name != hf_name else ""
                        raise ValueError(f"shape mismatch for tensor {hf_name}{ours} in {file.name}: checkpoint "
                                         f"has {tuple(t.shape)}, the config implies {expected[name]}")
                    _set_param(model, name, t.to(device=device, dtype=dtype))
                    loaded.add(name)
    missing = sorted(set(expected) - loaded)
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not match its config: missing tensors {missing}, "
                         f"unexpected tensors {sorted(unexpected)}")
    if cfg.tie_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    if cfg.arch == "llama":
        model.inv_freq = rope_inv_freq(cfg).to(device)  # kept in fp32, like transformers
    return model

# -----------------------------------------------------------------------------
# saving


def save_safetensors(tensors: dict, file) -> None:
    """Write tensors (moved to CPU, made contiguous) to a .safetensors file with the metadata transformers
    expects. Tensors must not share memory (drop tied duplicates first, e.g. with state_dict_to_hf)."""
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(file), metadata={"format": "pt"})


def save_pretrained(model: GPT, path, tokenizer_dir=None, state_dict=None) -> None:
    """Write `model` as a HF checkpoint into directory `path`: model.safetensors + config.json, plus the
    tokenizer / generation files found in `tokenizer_dir` (typically the source checkpoint), whose
    config.json, if any, also supplies bos/eos/pad token ids. `state_dict` (our names) replaces the
    model's own weights (LoRA's merged ones)."""
    model = getattr(model, "_orig_mod", model)  # torch.compile'd: save the module itself, without the prefix
    path, cfg = Path(path), model.config
    path.mkdir(parents=True, exist_ok=True)
    hf = config_to_hf(cfg)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    hf.update(dtype=dtype, torch_dtype=dtype)  # the key is "dtype" from transformers 5, "torch_dtype" before
    if tokenizer_dir is not None:
        tokenizer_dir = Path(tokenizer_dir)
        if not tokenizer_dir.is_dir():
            raise FileNotFoundError(f"tokenizer directory {tokenizer_dir} does not exist")
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copyfile(tokenizer_dir / name, path / name)
        if (tokenizer_dir / "config.json").is_file():
            src = json.loads((tokenizer_dir / "config.json").read_text())
            hf.update({k: src[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in src})
    sd = model.state_dict() if state_dict is None else state_dict
    save_safetensors(state_dict_to_hf(sd, cfg), path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
