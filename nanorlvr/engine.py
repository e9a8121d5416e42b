"""
Batched sampling with a pre-allocated KV cache, and teacher-forced scoring of completions.

`generate` takes many *different* prompts at once. They are left-padded to one length so that every row
writes its keys/values at the same cache position; each row gets its own positions (so padding changes
nothing) and a key mask hides the pads. Rows that stop (EOS / stop string) are dropped from the batch, so
later steps only compute what is still running. For every sampled token it returns the log-prob under the
distribution it was sampled from (after temperature / top-k / top-p), which GRPO uses as the old policy.

`completion_logprobs` recomputes those log-probs with one teacher-forced forward (right-padded, plain
causal attention): the trainer's new policy, the SFT loss, the reference model and the analyses all go
through it. With a real vocabulary it applies lm_head to the completion tokens only, a chunk at a time.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nanorlvr.model import KVCache


@dataclass
class Generation:
    ids: torch.Tensor        # (N, max_new_tokens) completion ids, padded with 0 past `lengths`
    logprobs: torch.Tensor   # (N, max_new_tokens) log-prob of each sampled token (0 past `lengths`)
    lengths: torch.Tensor    # (N,) tokens generated, the stop token included
    truncated: torch.Tensor  # (N,) bool: hit max_new_tokens without stopping

    @property
    def tokens(self) -> list[list[int]]:
        return [row[:n].tolist() for row, n in zip(self.ids, self.lengths.tolist())]


def sample_next(logits, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    """Sample one token per row from (B, V) logits. Returns (tokens, log-probs under the sampling
    distribution). temperature 0 is greedy (log-prob 0: the sampling distribution is a point mass)."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1), torch.zeros(logits.size(0), device=logits.device)
    logits = logits / temperature
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # tokens entirely past the nucleus (the first always stays)
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    logp = logits.log_softmax(-1)
    tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


def prefill_inputs(prompts, max_new_tokens, device):
    """Left-padded prompt batch as engine.generate builds it: (idx, pos, mask or None, valid, prompt lens).
    valid[b, j]: cache slot j holds a real token of row b; mask is None when no row is padded."""
    B, P = len(prompts), max(len(p) for p in prompts)
    plen = torch.tensor([len(p) for p in prompts], device=device)
    pad = P - plen
    idx = torch.zeros(B, P, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        idx[i, P - len(p):] = torch.tensor(p, device=device)
    valid = torch.arange(P + max_new_tokens, device=device)[None, :] >= pad[:, None]
    causal = torch.tril(torch.ones(P, P, dtype=torch.bool, device=device))
    eye = torch.eye(P, dtype=torch.bool, device=device)  # pads attend to themselves: no all-masked rows
    mask = (valid[:, None, None, :P] & causal) | eye if bool(pad.any()) else None
    pos = (torch.arange(P, device=device)[None, :] - pad[:, None]).clamp(min=0)
    return idx, pos, mask, valid, plen


def retire_stopped(stopped, t, last, lengths, truncated, caches, rows, *running):
    """Bookkeeping after decoding step t: rows that stopped get length t + 1 and are not truncated; unless
    this was the last step, they leave the KV caches and the per-row tensors (`rows` = original indices,
    then `running`). Returns (rows, *running) of the rows still decoding (empty rows: all done)."""
    lengths[rows[stopped]] = t + 1
    truncated[rows[stopped]] = False
    if last or not bool(stopped.any()):
        return (rows, *running)
    keep = (~stopped).nonzero().squeeze(-1)
    for cache in caches:
        cache.keep_rows(keep)
    return (rows[keep], *(x[keep] for x in running))


@torch.no_grad()
def generate(model, prompts, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, stop_ids=(),
             stop_strings=(), decode=None, seed=None, generator=None, batch_size=None,
             static=False) -> Generation:
    """Sample completions for a list of prompts (lists of token ids, any lengths).
    stop_ids: token ids that end a row (kept as its last token). stop_strings need `decode` (ids -> str).
    seed / generator: reproducible sampling. batch_size: split very large requests into chunks.
    static: decode with a fixed batch and a full-length masked cache (decode_static), as one CUDA graph
    replayed per token on a GPU: far fewer kernel launches, the same tokens."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs a non-empty list of non-empty prompts")
    if stop_strings and decode is None:
        raise ValueError("stop_strings need a `decode` function")
    if static and stop_strings:
        raise ValueError("static decoding supports stop_ids, not stop_strings")
    device = next(model.parameters()).device
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    if batch_size and len(prompts) > batch_size:
        parts = [generate(model, prompts[i:i + batch_size], max_new_tokens, temperature, top_k, top_p, stop_ids,
                          stop_strings, decode, None, generator, static=static) for i in range(0, len(prompts), batch_size)]
        return Generation(*(torch.cat([getattr(p, f) for p in parts]) for f in ("ids", "logprobs", "lengths", "truncated")))

    B, P = len(prompts), max(len(p) for p in prompts)
    if P + max_new_tokens > model.config.max_seq_len:
        raise ValueError(f"prompt ({P}) + max_new_tokens ({max_new_tokens}) exceeds max_seq_len {model.config.max_seq_len}")
    idx, pos, mask, valid, plen = prefill_inputs(prompts, max_new_tokens, device)
    any_pad = mask is not None
    cache = KVCache(model.config, B, P + max_new_tokens, device, next(model.parameters()).dtype)
    logits = model(idx, pos=pos, attn_mask=mask, cache=cache, last_only=True)[:, -1]
    stop_t = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    if static:
        return decode_static(model, cache, logits, plen, valid, max_new_tokens, stop_t,
                             lambda x: sample_next(x, temperature, top_k, top_p, generator))

    out_ids = torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)
    out_lp = torch.zeros(B, max_new_tokens, device=device)
    lengths = torch.full((B,), max_new_tokens, device=device)
    truncated = torch.ones(B, dtype=torch.bool, device=device)
    rows = torch.arange(B, device=device)   # original index of each row still running
    next_pos = plen.clone()
    for t in range(max_new_tokens):
        tok, lp = sample_next(logits, temperature, top_k, top_p, generator)
        out_ids[rows, t], out_lp[rows, t] = tok, lp
        stopped = torch.isin(tok, stop_t)
        if stop_strings:
            tails = [decode(out_ids[r, max(0, t - 15):t + 1].tolist()) for r in rows.tolist()]
            stopped |= torch.tensor([any(s in tail for s in stop_strings) for tail in tails], device=device)
        last = t == max_new_tokens - 1
        rows, tok, valid, next_pos = retire_stopped(stopped, t, last, lengths, truncated, [cache], rows, tok, valid, next_pos)
        if last or len(rows) == 0:
            break
        step_mask = valid[:, None, None, :cache.len + 1] if any_pad else None
        logits = model(tok[:, None], pos=next_pos[:, None], attn_mask=step_mask, cache=cache)[:, -1]
        next_pos += 1
    return Generation(out_ids, out_lp, lengths, truncated)


class StaticStep:
    """One decode step over a fixed batch and the whole (masked) KV cache: fixed shapes and addresses, so
    on a GPU it is captured once as a CUDA graph and replayed every token (one launch, not hundreds)."""

    def __init__(self, model, cache, graph):
        B, L, dev = cache.k.size(1), cache.k.size(3), cache.k.device
        self.model, self.cache = model, cache
        self.tok = torch.zeros(B, 1, dtype=torch.long, device=dev)
        self.pos = torch.zeros(B, 1, dtype=torch.long, device=dev)
        self.mask = torch.ones(B, 1, 1, L, dtype=torch.bool, device=dev)
        cache.write_pos = torch.full((1,), cache.len, dtype=torch.long, device=dev)  # the next slot
        self.graph = None
        if graph:  # warm up on a side stream (writes only the next slot, which the first step overwrites)
            stream = torch.cuda.Stream(dev)
            stream.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._forward()
            torch.cuda.current_stream(dev).wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            amp = torch.is_autocast_enabled("cuda")  # under autocast, its cast cache must be off while capturing
            with torch.cuda.graph(self.graph), torch.autocast("cuda", torch.get_autocast_dtype("cuda"), amp, cache_enabled=False):
                self.out = self._forward()

    def _forward(self):
        n = self.cache.len
        out = self.model(self.tok, pos=self.pos, attn_mask=self.mask, cache=self.cache)[:, -1]
        self.cache.len = n  # forward advances it; the decode loop does that itself
        return out

    def __call__(self, tok, pos, mask):
        self.tok.copy_(tok[:, None])
        self.pos.copy_(pos[:, None])
        self.mask.copy_(mask)
        self.cache.write_pos.fill_(self.cache.len)
        if self.graph is None:
            return self._forward()
        self.graph.replay()
        return self.out


def decode_static(model, cache, logits, plen, valid, max_new_tokens, stop_t, sample):
    """generate's decode loop for a fixed batch: every row runs every step (a finished row decodes padding
    that is never read), slot j of the cache is visible once written, and the step is a StaticStep, as a
    CUDA graph on a GPU. Returns the Generation that the compacting loop would."""
    B, L, device = logits.size(0), valid.size(1), logits.device
    out_ids = torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)
    out_lp = torch.zeros(B, max_new_tokens, device=device)
    lengths = torch.full((B,), max_new_tokens, device=device)
    alive = torch.ones(B, dtype=torch.bool, device=device)
    step = StaticStep(model, cache, graph=device.type == "cuda")
    pos, slots = plen.clone(), torch.arange(L, device=device)
    for t in range(max_new_tokens):
        tok, lp = sample(logits)
        tok, lp = torch.where(alive, tok, 0), torch.where(alive, lp, 0.0)
        out_ids[:, t], out_lp[:, t] = tok, lp
        stopped = alive & torch.isin(tok, stop_t)
        lengths[stopped] = t + 1
        alive &= ~stopped
        if t == max_new_tokens - 1 or not bool(alive.any()):
            break
        logits = step(tok, pos, (valid & (slots <= cache.len))[:, None, None, :])
        cache.len += 1
        pos += 1
    cache.write_pos = None
    return Generation(out_ids, out_lp, lengths, alive)


def pack(prompts, completions, pad_id=0):
    """Right-pad prompt+completion rows into one (N, L) tensor; returns (idx, prompt_lens, completion_lens)."""
    seqs = [list(p) + list(c) for p, c in zip(prompts, completions)]
    L = max(len(s) for s in seqs)
    idx = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        idx[i, :len(s)] = torch.tensor(s)
    return idx, torch.tensor([len(p) for p in prompts]), torch.tensor([len(c) for c in completions])


LOGITS_PER_CHUNK = 2 ** 26  # completion_logprobs' budget of logits at once (~1 GiB of temporaries at 16 B each)


def _token_logprobs(logits, targets, temperature, with_entropy):
    """log_softmax(logits / temperature) at the targets, and (without gradient) the entropies."""
    logits = logits.float()
    if temperature not in (0, 1):
        logits = logits / temperature
    logp_all = F.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, targets[..., None]).squeeze(-1)
    if not with_entropy:
        return logp, None
    with torch.no_grad():
        return logp, -(logp_all.exp() * logp_all).sum(-1)


def _head_logprobs(lm_head, hidden, targets, temperature, with_entropy):
    return _token_logprobs(lm_head(hidden), targets, temperature, with_entropy)


def completion_logprobs(model, idx, prompt_lens, completion_lens, temperature=1.0, with_entropy=False,
                        chunk=LOGITS_PER_CHUNK):
    """Teacher-forced log-probs of each completion token: (N, Lc) with Lc = max completion length,
    entry [i, j] for token j of completion i (0 past its length), plus the mask (and the entropy, which
    carries no gradient, if asked).
    Where the (N, T, vocab) logits would exceed `chunk` elements (a real vocabulary: 152k x 8 rows x 1k
    tokens is 1.2e9), lm_head is applied to the completion tokens only, `chunk` logits at a time, each
    chunk recomputed in the backward (torch.utils.checkpoint): the vocabulary-sized tensors then take
    O(chunk) memory instead of O(N T vocab), for one more lm_head forward."""
    device = next(model.parameters()).device
    idx, prompt_lens, completion_lens = idx.to(device), prompt_lens.to(device), completion_lens.to(device)
    Lc = int(completion_lens.max())
    j = torch.arange(Lc, device=device)
    mask = j[None, :] < completion_lens[:, None]
    # logits at position (prompt_len - 1 + j) predict completion token j
    src = (prompt_lens[:, None] - 1 + j[None, :]).clamp(max=idx.size(1) - 2)
    targets = idx.gather(1, src + 1)
    x = idx[:, :-1] if idx.size(1) > 1 else idx
    if x.numel() * model.config.vocab_size <= chunk:  # small (the toy): one (N, T, vocab) logits tensor
        logits = model(x)
        logp, entropy = _token_logprobs(logits.gather(1, src[..., None].expand(-1, -1, logits.size(-1))), targets,
                                        temperature, with_entropy)
    else:
        hidden = model(x, head=False)
        rows, cols = mask.nonzero(as_tuple=True)  # the completion tokens, no padding
        h, t = hidden[rows, src[rows, cols]], targets[rows, cols]
        n, parts = max(1, chunk // model.config.vocab_size), []
        for i in range(0, max(1, len(t)), n):  # at least one (maybe empty) chunk
            args = (model.lm_head, h[i:i + n], t[i:i + n], temperature, with_entropy)
            parts.append(torch.utils.checkpoint.checkpoint(_head_logprobs, *args, use_reentrant=False)
                         if torch.is_grad_enabled() else _head_logprobs(*args))

        def scatter(k):  # the chunks' k-th outputs back to their (row, column) places
            return torch.zeros(mask.shape, device=device).index_put((rows, cols), torch.cat([p[k] for p in parts]))
        logp, entropy = scatter(0), scatter(1) if with_entropy else None
    logp = logp * mask
    if not with_entropy:
        return logp, mask
    return logp, mask, entropy * mask
