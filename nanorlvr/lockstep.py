"""
Two-model lock-step decoding: model a (earlier checkpoint / base) and model b (later checkpoint / RL)
read the same tokens, each with its own KV cache, and every next token comes from a mix of their logits.

    mode "logits" (paper 2, Eq. 1):  z = a + alpha (b - a)                        raw logits
    mode "dlogp"  (paper 1):         z = (1 + gamma) log_softmax(b) - gamma log_softmax(a)

The mixing itself lives in kernels.py (fused Triton on CUDA, torch elsewhere). Two ways to decode:

- dense (gate=None): every token is sampled from softmax(z / T), nucleus top_p.
- gated (gate="dlogp" | "kl" | "entropy" | "random", paper 1's token replacement): model a leads and
  proposes y from its own distribution; where the gate fires at that position the token is re-sampled
  from the mix (gamma = 0 in mode "dlogp": from model b alone, "replace-only"), elsewhere y is kept.

Batching follows engine.generate's static layout: left-padded prompts with per-row positions and a key
mask (pads attend to themselves); rows that stop leave the batch and both caches at once. On CPU a mixed token is drawn with
engine.sample_next from the mixed log-probs with engine.generate's per-(row, token) uniforms, so coef 0
reproduces engine.generate of model a exactly for a given seed; on CUDA with top_p = 1 it is drawn by the
fused Gumbel-max kernel instead.
"""
from dataclasses import dataclass

import torch

from nanorlvr.analysis import replacement_gate, token_metrics
from nanorlvr.engine import Generation, prefill_inputs, retire_stopped, sample_next
from nanorlvr.kernels import mix_logprobs, mix_sample, token_dlogp
from nanorlvr.model import KVCache

GATES = ("dlogp", "kl", "entropy", "random")


@dataclass
class LockstepGeneration(Generation):
    fired: torch.Tensor      # (N, max_new_tokens) bool: the token came from the mix (always, when dense)

    @property
    def replacement_ratio(self) -> float:
        """Fraction of generated positions whose token came from the mix (the gate fired)."""
        return self.fired.sum().item() / max(1, self.lengths.sum().item())


def mix_next(a, b, mode, coef, temperature=1.0, top_p=1.0, generator=None, u=None):
    """One token per row from softmax(z / T) of the mixed logits z of (B, V) logits a, b (nucleus top_p).
    u: the rows' uniforms (engine.sample_next). Returns (tokens, log-probs under the distribution they were
    drawn from; 0 when greedy)."""
    if temperature == 0:
        return mix_sample(a, b, mode, coef, 0.0), torch.zeros(a.size(0), device=a.device)
    logp = mix_logprobs(a, b, mode, coef, temperature)
    if top_p >= 1.0 and a.is_cuda:  # fused Gumbel-max over the vocabulary
        tok = mix_sample(a, b, mode, coef, temperature, generator=generator)
        return tok, logp.gather(1, tok[:, None]).squeeze(1)
    return sample_next(logp, 1.0, 0, top_p, generator, u)


# Paper 1 (Direction of RLVR updates), token replacement: base proposes y; where the gate fires, re-sample from the mix
def replace_next(a, b, mode, coef, gate, tau, temperature=1.0, top_p=1.0, generator=None, u=None):
    """Model a proposes y ~ its own distribution (T, top_p; uniforms u); the gate is evaluated on y with the
    models' untempered log-probs; fired rows re-sample from the mix (fresh uniforms from `generator`).
    Returns (tokens, log-probs, fired)."""
    y, lp = sample_next(a, temperature, 0, top_p, generator, u)
    if gate == "dlogp":
        fired = replacement_gate(gate, tau, dlogp=token_dlogp(a, b, y))
    elif gate == "random":
        rand = torch.rand(a.size(0), device=a.device, generator=generator)
        fired = replacement_gate(gate, tau, rand=rand)
    else:
        m = token_metrics(a, b, y)
        fired = replacement_gate(gate, tau, kl=m["kl"], entropy=m["entropy_base"])
    if bool(fired.any()):
        rows = fired.nonzero().squeeze(-1)
        y[rows], lp[rows] = mix_next(a[rows], b[rows], mode, coef, temperature, top_p, generator)
    return y, lp, fired


@torch.no_grad()
def generate_lockstep(model_a, model_b, prompts, max_new_tokens, mode="logits", coef=1.0, *, temperature=1.0,
                      top_p=1.0, stop_ids=(), gate=None, tau=None, seed=None, generator=None,
                      batch_size=None, u=None) -> LockstepGeneration:
    """Decode `prompts` (lists of token ids) with models a and b in lock-step, drawing tokens from the mix
    of their logits (mode "logits": coef = alpha; "dlogp": coef = gamma). gate=None: every position from
    the mix; gate in GATES: model a leads and the gate (threshold tau) decides where the mix replaces it."""
    if mode not in ("logits", "dlogp"):
        raise ValueError(f"unknown mode {mode!r}: expected 'logits' or 'dlogp'")
    if gate is not None and (gate not in GATES or tau is None):
        raise ValueError(f"gate must be None or one of {GATES}, with a threshold tau")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate_lockstep needs a non-empty list of non-empty prompts")
    ca, cb = model_a.config, model_b.config
    if ca.vocab_size != cb.vocab_size:
        raise ValueError(f"the two models' vocabularies differ: {ca.vocab_size} vs {cb.vocab_size}")
    device = next(model_a.parameters()).device
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    if u is None:  # one uniform per (row, token), as engine.generate draws them
        u = torch.rand(len(prompts), max_new_tokens, device=device, generator=generator)
    if batch_size and len(prompts) > batch_size:
        parts = [generate_lockstep(model_a, model_b, prompts[i:i + batch_size], max_new_tokens, mode, coef,
                                   temperature=temperature, top_p=top_p, stop_ids=stop_ids, gate=gate, tau=tau,
                                   generator=generator, u=u[i:i + batch_size]) for i in range(0, len(prompts), batch_size)]
        fields = ("ids", "logprobs", "lengths", "truncated", "fired")
        return LockstepGeneration(*(torch.cat([getattr(p, f) for p in parts]) for f in fields))

    B, P = len(prompts), max(len(p) for p in prompts)
    if P + max_new_tokens > min(ca.max_seq_len, cb.max_seq_len):
        raise ValueError(f"prompt ({P}) + max_new_tokens ({max_new_tokens}) exceeds max_seq_len")
    idx, pos, mask, valid, plen = prefill_inputs(prompts, max_new_tokens, device)
    caches = [KVCache(m.config, B, P + max_new_tokens, device, next(m.parameters()).dtype) for m in (model_a, model_b)]
    la, lb = (m(idx, pos=pos, attn_mask=mask, cache=c, last_only=True)[:, -1] for m, c in zip((model_a, model_b), caches))

    out_ids = torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)
    out_lp = torch.zeros(B, max_new_tokens, device=device)
    out_fired = torch.zeros(B, max_new_tokens, dtype=torch.bool, device=device)
    lengths = torch.full((B,), max_new_tokens, device=device)
    truncated = torch.ones(B, dtype=torch.bool, device=device)
    stop_t = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    rows = torch.arange(B, device=device)  # original index of each row still running
    next_pos = plen.clone()
    for t in range(max_new_tokens):
        if gate is None:
            tok, lp = mix_next(la, lb, mode, coef, temperature, top_p, generator, u[rows, t])
            fired = torch.ones_like(tok, dtype=torch.bool)
        else:
            tok, lp, fired = replace_next(la, lb, mode, coef, gate, tau, temperature, top_p, generator, u[rows, t])
        out_ids[rows, t], out_lp[rows, t], out_fired[rows, t] = tok, lp, fired
        stopped = torch.isin(tok, stop_t)
        last = t == max_new_tokens - 1
        rows, tok, valid, next_pos = retire_stopped(stopped, t, last, lengths, truncated, caches, rows, tok, valid, next_pos)
        if last or len(rows) == 0:
            break
        step_mask = valid[:, None, None, :caches[0].len + 1] if mask is not None else None
        la, lb = (m(tok[:, None], pos=next_pos[:, None], attn_mask=step_mask, cache=c)[:, -1]
                  for m, c in zip((model_a, model_b), caches))
        next_pos += 1
    return LockstepGeneration(out_ids, out_lp, lengths, truncated, out_fired)


def lockstep_generate_fn(model_a, model_b, mode, coef, *, max_new_tokens, stop_ids=(), top_p=1.0, gate=None,
                         tau=None, batch_size=None, calls=None):
    """A `generate_fn(prompts, temperature, seed)` for evaluate.evaluate that decodes in lock-step.
    If `calls` (a list) is given, each call appends (temperature, positions fired, positions generated)."""
    def fn(prompts, temperature, seed):
        g = generate_lockstep(model_a, model_b, prompts, max_new_tokens, mode, coef, temperature=temperature,
                              top_p=top_p, stop_ids=stop_ids, gate=gate, tau=tau, seed=seed, batch_size=batch_size)
        if calls is not None:
            calls.append((temperature, g.fired.sum().item(), g.lengths.sum().item()))
        return g
    return fn


def replacement_ratio(calls) -> float:
    """The replacement ratio of a gated evaluation (sample.py and analyze.py dlogp report this one): the share
    of generated positions where the gate fired, over the sampled completions of the avg@k pass, or over the
    greedy ones when there is no sampled pass (k = 0). Greedy and sampled decoding fire at different rates,
    so the two passes are not pooled. `calls`: the list lockstep_generate_fn filled."""
    sampled = [c for c in calls if c[0] > 0] or calls
    return sum(f for _, f, _ in sampled) / max(1, sum(n for _, _, n in sampled))
