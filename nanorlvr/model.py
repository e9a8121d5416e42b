"""
The GPT: one decoder-only transformer that covers two families, chosen by `GPTConfig.arch`.

- "gpt2":  learned positions, LayerNorm (with bias), GELU MLP, biases on every linear, tied embeddings.
- "llama": RoPE (configurable theta, optional Llama 3 scaling), RMSNorm, SwiGLU MLP, grouped-query
           attention; `qkv_bias` gives Qwen2, `qk_norm` (per-head RMSNorm on q and k) gives Qwen3.

Parameter names follow Hugging Face's Llama layout (`model.layers.0.self_attn.q_proj.weight`, ...) so that
Llama/Qwen checkpoints map one-to-one (see infra/hf.py) and the analyses can find matrices and norms by name.
`model(idx)` returns logits (B, T, vocab). A `KVCache` makes incremental decoding cheap (see engine.py).
"""
import math
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint


@dataclass
class GPTConfig:
    arch: str = "llama"            # "llama" (Llama / Qwen2 / Qwen3) or "gpt2"
    vocab_size: int = 260
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 0             # 0: n_head; fewer: grouped-query attention
    n_embd: int = 128
    head_dim: int = 0              # 0: n_embd // n_head (Qwen3 sets it explicitly)
    intermediate_size: int = 0     # 0: 4*n_embd (gpt2) or ~8/3*n_embd rounded to 32 (llama)
    max_seq_len: int = 256
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None   # Llama 3: factor, low/high_freq_factor, original_max_position_embeddings
    qkv_bias: bool = False         # Qwen2
    qk_norm: bool = False          # Qwen3
    tie_embeddings: bool = True

    def __post_init__(self):
        if self.arch not in ("llama", "gpt2"):
            raise ValueError(f"unknown arch {self.arch!r}: expected 'llama' or 'gpt2'")
        self.n_kv_head = self.n_kv_head or self.n_head
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        if not self.head_dim:
            self.head_dim = self.n_embd // self.n_head
        if not self.intermediate_size:
            self.intermediate_size = 4 * self.n_embd if self.arch == "gpt2" else 32 * math.ceil(8 * self.n_embd / 3 / 32)

    def to_dict(self):
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        dtype = x.dtype
        x = x.float()  # the mean of squares in fp32: in bf16 it is too coarse (Hugging Face does the same)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def make_norm(cfg, dim):
    # GPT-2 centres and has a bias (LayerNorm); Llama/Qwen only rescale (RMSNorm, cheaper, as good)
    return nn.LayerNorm(dim, eps=cfg.norm_eps) if cfg.arch == "gpt2" else RMSNorm(dim, cfg.norm_eps)


def rope_inv_freq(cfg):
    """Inverse frequencies of RoPE, with Llama 3's frequency-dependent scaling when configured."""
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    sc = cfg.rope_scaling
    if sc and sc.get("rope_type", sc.get("type")) == "llama3":
        factor, lo, hi = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
        old_len = sc["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / lo, inv_freq / factor, inv_freq)  # long waves: slowed down
        smooth = (old_len / wavelen - lo) / (hi - lo)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / hi) & (wavelen <= old_len / lo)
        inv_freq = torch.where(medium, blended, scaled)
    elif sc and sc.get("rope_type", sc.get("type")) not in (None, "default"):
        raise ValueError(f"unsupported rope_scaling {sc}: only 'llama3' is implemented")
    return inv_freq.float()


def apply_rope(x, cos, sin):
    # x: (B, T, H, D); cos/sin: (B, T, 1, D). Rotates the two halves of each head (HF convention).
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class KVCache:
    """Pre-allocated keys/values for all layers: (n_layer, B, n_kv_head, max_len, head_dim). Allocated once
    for the whole generation, so decoding a token writes one slot instead of concatenating (a copy of the
    whole cache per token). Three ways to write, one per decode loop of engine.py: the next slot of every
    row (plain), a slot given as a tensor (static: a CUDA graph cannot read a Python int), and each row's
    own slot (eager: rows of different lengths share the batch)."""

    def __init__(self, cfg, batch_size, max_len, device, dtype):
        shape = (cfg.n_layer, batch_size, cfg.n_kv_head, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.len = 0  # positions filled so far (the same for every row)
        self.write_pos = None  # static mode (CUDA graphs, engine.StaticStep): a (1,) tensor slot to write
        self.row_pos = None    # per-row mode (engine's eager decode): (B,) slot of each row; len = the largest

    def update(self, layer, k, v):
        if self.row_pos is not None:  # one token per row, each at its own slot; attend over slots 0..len (masked)
            assert k.size(2) == 1, "per-row cache writes take one token per row"
            rows = torch.arange(k.size(0), device=k.device)
            self.k[layer][rows, :, self.row_pos] = k[:, :, 0]
            self.v[layer][rows, :, self.row_pos] = v[:, :, 0]
            return self.k[layer, :, :, :self.len + 1], self.v[layer, :, :, :self.len + 1]
        if self.write_pos is not None:  # static: write one slot given as a tensor, attend over all (masked)
            self.k[layer].index_copy_(2, self.write_pos, k)
            self.v[layer].index_copy_(2, self.write_pos, v)
            return self.k[layer], self.v[layer]
        T = k.size(2)
        assert self.len + T <= self.k.size(3), "KV cache overflow: raise max_len"
        self.k[layer, :, :, self.len:self.len + T] = k
        self.v[layer, :, :, self.len:self.len + T] = v
        return self.k[layer, :, :, :self.len + T], self.v[layer, :, :, :self.len + T]

    def keep_rows(self, rows):
        """Drop finished rows (rows: LongTensor of the rows to keep) so later steps compute less."""
        self.k = self.k[:, rows]
        self.v = self.v[:, rows]


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        bias = cfg.arch == "gpt2"
        hd, nh, nkv = cfg.head_dim, cfg.n_head, cfg.n_kv_head
        self.q_proj = nn.Linear(cfg.n_embd, nh * hd, bias=bias or cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.n_embd, nkv * hd, bias=bias or cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.n_embd, nkv * hd, bias=bias or cfg.qkv_bias)
        self.o_proj = nn.Linear(nh * hd, cfg.n_embd, bias=bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(hd, cfg.norm_eps)
            self.k_norm = RMSNorm(hd, cfg.norm_eps)

    def forward(self, x, rope, attn_mask, cache, layer):
        B, T, _ = x.shape
        cfg = self.cfg
        # project to heads; fewer key/value heads than query heads (grouped-query attention) shrink the KV cache
        q = self.q_proj(x).view(B, T, cfg.n_head, cfg.head_dim)
        k = self.k_proj(x).view(B, T, cfg.n_kv_head, cfg.head_dim)
        v = self.v_proj(x).view(B, T, cfg.n_kv_head, cfg.head_dim)
        if cfg.qk_norm:  # Qwen3 normalises each head's q and k, before RoPE
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:  # positions enter as rotations of q and k, so scores depend on distances only
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
        if cache is not None:  # decoding: this step's keys/values join the cached ones, attended to as a whole
            k, v = cache.update(layer, k, v)
        # no mask: plain causal over T > 1 tokens (training, prefill), or a single new token that sees it all
        causal = attn_mask is None and T > 1
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal,
                                           enable_gqa=cfg.n_kv_head != cfg.n_head)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gpt2 = cfg.arch == "gpt2"
        if not self.gpt2:
            self.gate_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=self.gpt2)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.n_embd, bias=self.gpt2)

    def forward(self, x):
        # GPT-2: GELU with the tanh approximation it was trained with; Llama/Qwen: SwiGLU (a gated MLP)
        if self.gpt2:
            return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = make_norm(cfg, cfg.n_embd)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = make_norm(cfg, cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x, rope, attn_mask, cache, layer):
        # pre-norm: each sublayer reads a normalised copy and adds to the residual stream (stable when deep)
        x = x + self.self_attn(self.input_layernorm(x), rope, attn_mask, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.grad_ckpt = False  # recompute each block in the backward (torch.utils.checkpoint) to save memory
        # Hugging Face's module names (model.embed_tokens, model.layers.N...): infra/hf.py maps weights one to one
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        if cfg.arch == "gpt2":
            self.model.embed_positions = nn.Embedding(cfg.max_seq_len, cfg.n_embd)
        self.model.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.model.norm = make_norm(cfg, cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:  # the output head is the input embedding (GPT-2, small Qwen models): fewer weights
            self.lm_head.weight = self.model.embed_tokens.weight
        if cfg.arch == "llama":  # a buffer: it follows .to(device), but is no weight (not in checkpoints)
            self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # scaled init of the residual projections (GPT-2)
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)  # .to(bfloat16) must not round the RoPE frequencies: recompute in fp32
        if self.config.arch == "llama":
            self.inv_freq = rope_inv_freq(self.config).to(self.inv_freq.device)
        return self

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def rope(self, pos, dtype):
        # angles from each row's own positions (B, T): left-padded and per-row decoding need no shared offset
        freqs = pos.float()[..., None] * self.inv_freq  # (B, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, idx, pos=None, attn_mask=None, cache=None, last_only=False, head=True):
        """idx (B, T) token ids. pos (B, T) positions (default 0..T-1, after the cache if one is given).
        attn_mask: bool (B, 1, T, T_total), True = may attend; None = plain causal.
        Returns logits (B, T, vocab), or (B, 1, vocab) of the last position with last_only; with head=False
        the final hidden states (B, T, n_embd) instead, for a caller that applies lm_head to fewer positions."""
        B, T = idx.shape
        # positions continue after what the cache holds; a multi-token step after it needs a mask saying what it sees
        if pos is None:
            start = cache.len if cache is not None else 0
            pos = torch.arange(start, start + T, device=idx.device).expand(B, T)
        if attn_mask is None and cache is not None and cache.len > 0 and T > 1:
            raise ValueError("a multi-token forward after a non-empty cache needs an explicit attn_mask")
        # GPT-2 adds learned position embeddings to the tokens; Llama/Qwen rotate q and k in every layer instead
        x = self.model.embed_tokens(idx)
        rope = None
        if self.config.arch == "gpt2":
            x = x + self.model.embed_positions(pos)
        else:
            rope = self.rope(pos, x.dtype)
        # checkpointing trades a second forward per block in the backward for not storing its activations;
        # only training forwards have a backward (a cache means decoding)
        ckpt = self.grad_ckpt and cache is None and torch.is_grad_enabled()
        for i, block in enumerate(self.model.layers):
            if ckpt:
                x = torch.utils.checkpoint.checkpoint(block, x, rope, attn_mask, None, i, use_reentrant=False)
            else:
                x = block(x, rope, attn_mask, cache, i)
        if cache is not None:
            cache.len += T
        if last_only:  # sampling needs only the last position: skip a (B, T, vocab) tensor
            x = x[:, -1:]
        x = self.model.norm(x)
        return self.lm_head(x) if head else x
