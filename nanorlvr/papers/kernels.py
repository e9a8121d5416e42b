"""Fused logit extrapolation: mix two models' next-token logits, then normalise or sample.

Two decoding rules of the papers (README "The three papers") mix, row by row, the logits `a`
(earlier checkpoint / base model) and `b` (later checkpoint / RL model) of shape (B, V):

  mode "logits" (paper 2, Eq. 1):  z = a + alpha * (b - a)
  mode "dlogp"  (paper 1):         z = (1 + gamma) * log_softmax(b) - gamma * log_softmax(a)

and then sample from softmax(z / T). Paper 1's gate also needs, for a given token y,
dlogp(y) = log_softmax(b)[y] - log_softmax(a)[y].

  mix_logprobs(a, b, mode, coef, temperature)      -> (B, V) fp32 log-probs of softmax(z / T)
  mix_sample(a, b, mode, coef, temperature, seed)  -> (B,) int64 tokens, top-p = 1 (Gumbel-max)
  token_dlogp(a, b, tokens)                        -> (B,) fp32

Each has a torch reference (`*_torch`, any device) and a Triton version (`*_triton`); the plain
name picks Triton for CUDA tensors and torch otherwise (impl="auto"|"torch"|"triton").

How the kernels work. A row (V = 151,936 for Qwen) is too long to keep on chip, so a program
streams a group of 4 rows in (4, BLOCK) tiles, keeping per lane a running max and sum of exp
(online log-sum-exp) or a running argmax, and reduces the lanes once at the end. Mode "dlogp"
needs no per-row log-sum-exp: log_softmax(x) = x - const(row), so z = b + gamma * (b - a) +
const(row), and the constant cancels in softmax and argmax. Both modes are z = base + coef * (b - a).
  sample      one pass over a and b: argmax(z / T + G), Gumbel noise G = -log(-log U), U from
              Triton's counter-based Philox (tl.randint4x: one call per column gives the 4 rows);
  logprobs    two passes, log-sum-exp of z / T and then z / T - lse written, so a and b are read
              twice; the second pass runs in reverse order and so starts on rows still in L2;
  token_dlogp one pass with two online log-sum-exps (of a and of b), then a[y], b[y] gathered.
With few rows, each row is split over `chunks` programs (about 16 per SM in all) so that B = 1
also spreads over the GPU; a tiny kernel (or the write pass itself) merges the chunks' partials.
Off CUDA the plain names run the torch references; the tests run the kernels there in Triton's
interpreter (TRITON_INTERPRET=1, set by tests/conftest.py before Triton is imported; slow, so small shapes).
"""

import torch

from nanorlvr.papers.stats import dlogp

try:
    import triton
    import triton.language as tl

    jit = triton.jit
except ImportError:  # no Triton (e.g. macOS): the torch references still work
    from types import SimpleNamespace

    triton, tl = None, SimpleNamespace(constexpr=None)  # lets the kernels below be defined

    def jit(fn=None, **kwargs):
        return fn if fn is not None else (lambda f: f)

MODES = ("logits", "dlogp")
ROWS = 4  # rows per program (written as 4 in the kernels): one Philox call gives 4 words, one per row
BLOCK = 1024  # columns per step: a step streams a (ROWS, BLOCK) tile of a and of b
PHILOX_ROUNDS = 10  # Triton's default; 7 also passes BigCrush and costs fewer instructions (see bench/kernel_tune.py)


# ----------------------------------------------------------------------------- torch references

# Paper 2 (Linearity of RLVR), Eq. 1: logits extrapolation z = z_t0 + alpha (z_t1 - z_t0)
def logits_extrapolation(a, b, alpha):
    a = a.float()
    return a + alpha * (b.float() - a)


# Paper 1 (Direction of RLVR updates), test-time extrapolation: (1 + gamma) log pi_RL - gamma log pi_base
def dlogp_extrapolation(a, b, gamma):
    return (1 + gamma) * b.float().log_softmax(-1) - gamma * a.float().log_softmax(-1)


def mixed_logits_torch(a, b, mode, coef):
    """The mixed logits z (fp32), literally as the papers write them (the references of the kernels)."""
    assert mode in MODES, mode
    return logits_extrapolation(a, b, coef) if mode == "logits" else dlogp_extrapolation(a, b, coef)


def mix_logprobs_torch(a, b, mode, coef, temperature=1.0):
    z = mixed_logits_torch(a, b, mode, coef)
    if temperature == 0:  # greedy: all mass on the argmax
        return _one_hot_logprobs(z.argmax(-1), z.shape[-1])
    return (z / temperature).log_softmax(-1)


def mix_sample_torch(a, b, mode, coef, temperature=1.0, seed=None, generator=None):
    z = mixed_logits_torch(a, b, mode, coef)
    if temperature == 0:
        return z.argmax(-1)
    if generator is None and seed is not None:
        generator = torch.Generator(z.device).manual_seed(seed)
    u = torch.empty_like(z).uniform_(generator=generator)
    return (z / temperature - torch.log(-torch.log(u))).argmax(-1)  # Gumbel-max


def token_dlogp_torch(a, b, tokens):
    return dlogp(a.float().log_softmax(-1), b.float().log_softmax(-1), tokens.view(-1))


def _one_hot_logprobs(idx, V):
    out = torch.full((idx.shape[0], V), float("-inf"), device=idx.device)
    return out.scatter_(1, idx.view(-1, 1), 0.0)


# ----------------------------------------------------------------------------- Triton kernels

@jit
def _tile(group, start, B, V, BLOCK: tl.constexpr):
    """Row ids (4, 1), column ids (1, BLOCK) and in-bounds mask of one step's tile."""
    rows = group.to(tl.int64) * 4 + tl.arange(0, 4)[:, None]
    cols = start + tl.arange(0, BLOCK)[None, :]
    return rows, cols, (rows < B) & (cols < V)


@jit
def _mixed(a_ptr, b_ptr, sa, sb, rows, cols, mask, coef, inv_t, BASE_IS_B: tl.constexpr):
    """z / T on a tile in fp32, z = base + coef * (b - a); -inf outside the tensor."""
    a = tl.load(a_ptr + rows * sa + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + rows * sb + cols, mask=mask, other=0.0).to(tl.float32)
    z = (b if BASE_IS_B else a) + coef * (b - a)
    return tl.where(mask, z * inv_t, float("-inf"))


@jit
def _lse_add(m, s, x):
    """Fold x into per-lane (max m, sum s of exp(. - m)), with one exp per element."""
    e = tl.exp(-tl.abs(x - m))  # exp(smaller - larger); m starts finite, so never exp(nan)
    s = tl.where(x > m, s * e + 1.0, s + e)
    return tl.maximum(m, x), s


@jit
def _lse_store(m, s, out, mask):
    """Reduce the lanes of each row; store (max, sum of exp(. - max)) at out[0], out[1]."""
    mx = tl.max(m, axis=1)
    tl.store(out, mx, mask=mask)
    tl.store(out + 1, tl.sum(s * tl.exp(m - mx[:, None]), axis=1), mask=mask)


@jit
def _lse_merge(part, mask):
    """Per row, the log-sum-exp from its chunks' (max, sum) pairs at part[..., 0], part[..., 1]."""
    m = tl.load(part, mask=mask, other=float("-inf"))
    s = tl.load(part + 1, mask=mask, other=0.0)
    mx = tl.max(m, axis=1)
    return mx + tl.log(tl.sum(s * tl.exp(m - mx[:, None]), axis=1))


@jit
def _lse_kernel(a_ptr, b_ptr, sa, sb, B, V, CHUNK, coef, inv_t, part_ptr,
                SPLIT: tl.constexpr, BASE_IS_B: tl.constexpr, BLOCK: tl.constexpr):
    """Partial log-sum-exps of 4 rows over one chunk: of z / T, or (SPLIT) of a and of b."""
    group, chunk = tl.program_id(0), tl.program_id(1)
    m1 = tl.full([4, BLOCK], -3.4e38, tl.float32)
    s1 = tl.zeros([4, BLOCK], tl.float32)
    m2, s2 = m1, s1
    for start in range(chunk * CHUNK, tl.minimum(chunk * CHUNK + CHUNK, V), BLOCK):
        rows, cols, mask = _tile(group, start, B, V, BLOCK)
        if SPLIT:
            a = tl.load(a_ptr + rows * sa + cols, mask=mask, other=float("-inf")).to(tl.float32)
            b = tl.load(b_ptr + rows * sb + cols, mask=mask, other=float("-inf")).to(tl.float32)
            m1, s1 = _lse_add(m1, s1, a)
            m2, s2 = _lse_add(m2, s2, b)
        else:
            m1, s1 = _lse_add(m1, s1, _mixed(a_ptr, b_ptr, sa, sb, rows, cols, mask, coef, inv_t, BASE_IS_B))
    rows = group * 4 + tl.arange(0, 4)
    out = part_ptr + (rows * tl.num_programs(1) + chunk) * 4
    _lse_store(m1, s1, out, rows < B)
    if SPLIT:
        _lse_store(m2, s2, out + 2, rows < B)


@jit
def _write_kernel(a_ptr, b_ptr, sa, sb, B, V, CHUNK, coef, inv_t, part_ptr, out_ptr, chunks,
                  BASE_IS_B: tl.constexpr, CHUNKS: tl.constexpr, BLOCK: tl.constexpr):
    """out = z / T - lse on 4 rows over one chunk (second pass of mix_logprobs)."""
    pid = tl.num_programs(0) - 1 - tl.program_id(0)  # reverse order: the last rows read are in L2
    group, chunk = pid // chunks, pid % chunks
    c = tl.arange(0, CHUNKS)[None, :]
    r = tl.minimum(group * 4 + tl.arange(0, 4), B - 1)[:, None]  # rows past B: a copy of the last
    lse = _lse_merge(part_ptr + (r * chunks + c) * 4, c < chunks)  # (4,)
    for start in range(chunk * CHUNK, tl.minimum(chunk * CHUNK + CHUNK, V), BLOCK):
        rows, cols, mask = _tile(group, start, B, V, BLOCK)
        z = _mixed(a_ptr, b_ptr, sa, sb, rows, cols, mask, coef, inv_t, BASE_IS_B)
        tl.store(out_ptr + rows * V + cols, z - lse[:, None], mask=mask)


@jit(do_not_specialize=["seed"])
def _sample_kernel(a_ptr, b_ptr, sa, sb, B, V, CHUNK, coef, inv_t, seed, part_ptr, idx_ptr,
                   GUMBEL: tl.constexpr, BASE_IS_B: tl.constexpr, BLOCK: tl.constexpr, FAST_LOG2: tl.constexpr,
                   ROUNDS: tl.constexpr):
    """Partial argmax of 4 rows over one chunk of z / T + Gumbel noise (or of z: greedy)."""
    group, chunk = tl.program_id(0), tl.program_id(1)
    k = tl.arange(0, 4)[:, None]
    best = tl.full([4, BLOCK], float("-inf"), tl.float32)
    arg = tl.zeros([4, BLOCK], tl.int32)
    for start in range(chunk * CHUNK, tl.minimum(chunk * CHUNK + CHUNK, V), BLOCK):
        rows, cols, mask = _tile(group, start, B, V, BLOCK)
        z = _mixed(a_ptr, b_ptr, sa, sb, rows, cols, mask, coef, inv_t, BASE_IS_B)
        if GUMBEL:  # Philox counter (group, column) is unique; its 4 output words go to the 4 rows
            counter = group.to(tl.int64) * ((V + BLOCK - 1) // BLOCK * BLOCK) + start + tl.arange(0, BLOCK)
            r0, r1, r2, r3 = tl.randint4x(seed, counter, ROUNDS)
            r = tl.where(k == 0, r0[None, :], tl.where(k == 1, r1[None, :],
                                                       tl.where(k == 2, r2[None, :], r3[None, :])))
            u = (r >> 9).to(tl.float32) * (1.0 / 8388608) + (0.5 / 8388608)  # 23 bits, inside (0, 1)
            if FAST_LOG2:  # the GPU's approximate log2 (rel. error ~2e-7); tl.log2 is a long polynomial
                g = tl.inline_asm_elementwise(
                    "{ .reg .f32 t; lg2.approx.ftz.f32 t, $1; neg.f32 t, t; lg2.approx.ftz.f32 $0, t; }",
                    "=f,f", [u], dtype=tl.float32, is_pure=True, pack=1)
            else:
                g = tl.log2(-tl.log2(u))
            z -= g  # = log2(e) * (z / T + Gumbel) + const, as inv_t carries log2(e): the same argmax
        take = z > best  # strict: a lane keeps its first (smallest) column on ties
        best = tl.where(take, z, best)
        arg = tl.where(take, cols, arg)
    mx = tl.max(best, axis=1)
    i = tl.min(tl.where(best == mx[:, None], arg, V), axis=1)  # ties: smallest column
    rows = group * 4 + tl.arange(0, 4)
    pid = rows * tl.num_programs(1) + chunk
    tl.store(part_ptr + pid * 4, mx, mask=rows < B)
    tl.store(idx_ptr + pid, i.to(tl.int64), mask=rows < B)


@jit
def _finish_kernel(part_ptr, idx_ptr, chunks, out_ptr, a_ptr, b_ptr, sa, sb, tok_ptr, B, V,
                   DLOGP: tl.constexpr, CHUNKS: tl.constexpr):
    """Merge the chunk partials of 4 rows: sampled tokens, or (DLOGP) dlogp of the given tokens."""
    rows = tl.program_id(0) * 4 + tl.arange(0, 4)
    r = tl.minimum(rows, B - 1)  # rows past B compute a copy of the last row, and are not stored
    c = tl.arange(0, CHUNKS)[None, :]
    part = part_ptr + (r[:, None] * chunks + c) * 4
    if DLOGP:
        y = tl.load(tok_ptr + r).to(tl.int64)
        la = tl.load(a_ptr + r.to(tl.int64) * sa + y).to(tl.float32) - _lse_merge(part, c < chunks)
        lb = tl.load(b_ptr + r.to(tl.int64) * sb + y).to(tl.float32) - _lse_merge(part + 2, c < chunks)
        tl.store(out_ptr + rows, lb - la, mask=rows < B)
    else:
        v = tl.load(part, mask=c < chunks, other=float("-inf"))
        i = tl.load(idx_ptr + r[:, None] * chunks + c, mask=c < chunks, other=V)
        best = (c < chunks) & (v == tl.max(v, axis=1)[:, None])
        tl.store(out_ptr + rows, tl.min(tl.where(best, i, V), axis=1), mask=rows < B)


# ----------------------------------------------------------------------------- Triton launchers

def _rows(a, b, mode):
    """Check the inputs; the kernels need unit stride along the vocabulary, any row stride."""
    assert mode in MODES, mode
    assert a.dim() == 2 and a.shape == b.shape and a.device == b.device, (a.shape, b.shape)
    return (a if a.stride(1) == 1 else a.contiguous()), (b if b.stride(1) == 1 else b.contiguous())


_SMS = {}


def _warps(a):
    """Warps per program such that each thread loads 16 bytes per row and holds all 4 rows."""
    return 8 if a.element_size() >= 4 else 4


def _split(a, chunks):
    """Row groups of 4, chunks per row, and the columns (a multiple of BLOCK) each chunk streams."""
    B, V = a.shape
    groups = triton.cdiv(B, ROWS)
    if chunks is None:
        chunks = 1
        if a.is_cuda:  # ~16 programs per SM: small batches fill the GPU too, and the last wave is short
            if a.device not in _SMS:
                _SMS[a.device] = torch.cuda.get_device_properties(a.device).multi_processor_count
            chunks = max(1, 16 * _SMS[a.device] // groups)
    per = triton.cdiv(triton.cdiv(V, chunks), BLOCK) * BLOCK
    return groups, triton.cdiv(V, per), per


def mix_logprobs_triton(a, b, mode, coef, temperature=1.0, chunks=None):
    a, b = _rows(a, b, mode)
    B, V = a.shape
    if temperature == 0:
        return _one_hot_logprobs(mix_sample_triton(a, b, mode, coef, 0.0, chunks=chunks), V)
    out = torch.empty(B, V, device=a.device)
    if B == 0:
        return out
    groups, chunks, per = _split(a, chunks)
    part = torch.empty(B * chunks, 4, device=a.device)
    args = (a, b, a.stride(0), b.stride(0), B, V, per, float(coef), 1.0 / temperature, part)
    meta = dict(BASE_IS_B=mode == "dlogp", BLOCK=BLOCK, num_warps=_warps(a))
    _lse_kernel[(groups, chunks)](*args, SPLIT=False, **meta)
    _write_kernel[(groups * chunks,)](*args, out, chunks, CHUNKS=triton.next_power_of_2(chunks), **meta)
    return out


def mix_sample_triton(a, b, mode, coef, temperature=1.0, seed=None, generator=None, chunks=None):
    """Gumbel-max sample. Without `seed`, one is drawn from `generator` (or torch's default)."""
    a, b = _rows(a, b, mode)
    B, V = a.shape
    if seed is None and temperature > 0:  # a CUDA generator costs a host sync here
        gen_device = generator.device if generator is not None else "cpu"
        seed = int(torch.randint(2**31 - 1, (), generator=generator, device=gen_device))
    groups, chunks, per = _split(a, chunks)
    part = torch.empty(B * chunks, 4, device=a.device)
    idx = torch.empty(B * chunks, dtype=torch.int64, device=a.device)
    if B == 0:
        return idx
    inv_t = 1.4426950408889634 / temperature if temperature > 0 else 1.0  # log2(e) / T, see the kernel
    _sample_kernel[(groups, chunks)](a, b, a.stride(0), b.stride(0), B, V, per, float(coef), inv_t, seed or 0,
                                     part, idx, GUMBEL=temperature > 0, BASE_IS_B=mode == "dlogp",
                                     BLOCK=BLOCK, FAST_LOG2=a.is_cuda and not torch.version.hip, ROUNDS=PHILOX_ROUNDS,
                                     num_warps=_warps(a))
    if chunks == 1:
        return idx
    out = torch.empty(B, dtype=torch.int64, device=a.device)
    _finish_kernel[(groups,)](part, idx, chunks, out, a, b, a.stride(0), b.stride(0), idx, B, V,
                              DLOGP=False, CHUNKS=triton.next_power_of_2(chunks))
    return out


def token_dlogp_triton(a, b, tokens, chunks=None):
    a, b = _rows(a, b, "logits")
    B, V = a.shape
    out = torch.empty(B, device=a.device)
    if B == 0:
        return out
    groups, chunks, per = _split(a, chunks)
    part = torch.empty(B * chunks, 4, device=a.device)
    _lse_kernel[(groups, chunks)](a, b, a.stride(0), b.stride(0), B, V, per, 0.0, 1.0, part,
                                  SPLIT=True, BASE_IS_B=False, BLOCK=BLOCK, num_warps=_warps(a))
    _finish_kernel[(groups,)](part, part, chunks, out, a, b, a.stride(0), b.stride(0), tokens.contiguous(),
                              B, V, DLOGP=True, CHUNKS=triton.next_power_of_2(chunks))
    return out


# ----------------------------------------------------------------------------- public dispatch

def _use_triton(impl, x):
    assert impl in ("auto", "torch", "triton"), impl
    if impl == "auto":
        return triton is not None and x.is_cuda
    return impl == "triton"


def mix_logprobs(a, b, mode, coef, temperature=1.0, impl="auto"):
    """(B, V) fp32 log-probs of softmax(z / T); coef is alpha ("logits") or gamma ("dlogp")."""
    fn = mix_logprobs_triton if _use_triton(impl, a) else mix_logprobs_torch
    return fn(a, b, mode, coef, temperature)


def mix_sample(a, b, mode, coef, temperature=1.0, seed=None, generator=None, impl="auto"):
    """(B,) int64 tokens sampled from softmax(z / T) (top-p = 1); T = 0 is greedy."""
    fn = mix_sample_triton if _use_triton(impl, a) else mix_sample_torch
    return fn(a, b, mode, coef, temperature, seed=seed, generator=generator)


def token_dlogp(a, b, tokens, impl="auto"):
    """(B,) fp32 log_softmax(b)[y] - log_softmax(a)[y] for y = tokens (paper 1's gate)."""
    fn = token_dlogp_triton if _use_triton(impl, a) else token_dlogp_torch
    return fn(a, b, tokens)
