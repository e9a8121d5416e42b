"""
Two-model lock-step decoding: model a (earlier checkpoint / base) and model b (later checkpoint / RL)
read the same tokens, each with its own KV cache, and every next token comes from a mix of their logits.

    mode "logits" (paper 2, Eq. 1):  z = a + alpha (b - a)                        raw logits
    mode "dlogp"  (paper 1):         z = (1 + gamma) log_softmax(b) - gamma log_softmax(a)

The mixing itself lives in papers/kernels.py (fused Triton on CUDA, torch elsewhere). Two ways to decode:

- dense (gate=None): every token is sampled from softmax(z / T), nucleus top_p.
- gated (gate="dlogp" | "kl" | "entropy" | "random", paper 1's token replacement): model a leads and
  proposes y from its own distribution; where the gate fires at that position the token is re-sampled
  from the mix (gamma = 0 in mode "dlogp": from model b alone, "replace-only"), elsewhere y is kept.

The decoding loop is the engine's (engine.decode_fixed, the one of generate(static=True), here with two
models): left-padded prompts with per-row positions and a key mask (pads attend to themselves); rows that
stop leave the batch and both caches at once. This file only says how the next token is picked. On CPU a
mixed token is drawn with engine.sample_next from the mixed log-probs with engine.generate's per-(row,
token) uniforms, so coef 0 reproduces engine.generate of model a exactly for a given seed; on CUDA with
top_p = 1 it is drawn by the fused Gumbel-max kernel instead.
"""
import torch

from nanorlvr.papers.stats import replacement_gate, token_metrics
from nanorlvr.engine import Generation, decode_fixed, sample_next
from nanorlvr.papers.kernels import mix_logprobs, mix_sample, token_dlogp

GATES = ("dlogp", "kl", "entropy", "random")


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
                      batch_size=None) -> Generation:
    """Decode `prompts` (lists of token ids) with models a and b in lock-step, drawing tokens from the mix
    of their logits (mode "logits": coef = alpha; "dlogp": coef = gamma). gate=None: every position from
    the mix; gate in GATES: model a leads and the gate (threshold tau) decides where the mix replaces it.
    Returns an engine.Generation whose `fired` says which tokens came from the mix."""
    if mode not in ("logits", "dlogp"):
        raise ValueError(f"unknown mode {mode!r}: expected 'logits' or 'dlogp'")
    if gate is not None and (gate not in GATES or tau is None):
        raise ValueError(f"gate must be None or one of {GATES}, with a threshold tau")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate_lockstep needs a non-empty list of non-empty prompts")
    ca, cb = model_a.config, model_b.config
    if ca.vocab_size != cb.vocab_size:
        raise ValueError(f"the two models' vocabularies differ: {ca.vocab_size} vs {cb.vocab_size}")
    P = max(len(p) for p in prompts)
    if P + max_new_tokens > min(ca.max_seq_len, cb.max_seq_len):
        raise ValueError(f"prompt ({P}) + max_new_tokens ({max_new_tokens}) exceeds max_seq_len")
    device = next(model_a.parameters()).device
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    # one uniform per (row, token), as engine.generate draws them
    u = torch.rand(len(prompts), max_new_tokens, device=device, generator=generator)

    def next_token(logits, uu):  # the (tokens, log-probs, fired) of the running rows
        la, lb = logits
        if gate is None:
            tok, lp = mix_next(la, lb, mode, coef, temperature, top_p, generator, uu)
            return tok, lp, torch.ones_like(tok, dtype=torch.bool)
        return replace_next(la, lb, mode, coef, gate, tau, temperature, top_p, generator, uu)
    stop_t = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    # rows leave the batch when they stop (static=False): the gates draw from `generator` for running rows only
    return decode_fixed([model_a, model_b], prompts, u, next_token, stop_t, batch_size, share_prefix=False,
                        static=False)


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
