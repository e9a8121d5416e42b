"""
Batched sampling with a pre-allocated KV cache: prompts in, completions and their log-probs out.

`generate` takes many prompts at once, any lengths, repeats included (GRPO's G samples of a prompt, avg@k's
k): each distinct prompt is prefilled once and its KV rows are copied to its samples. The eager loop keeps
up to `batch_size` rows in a right-padded cache where every row has its own length (its own write slot and
positions; a key mask hides the rest); every `check_every` tokens the host looks at which rows stopped
(EOS / stop string / budget) and hands their slots to waiting rows, or drops them when none wait. Row i's
j-th token is drawn with its own pre-drawn uniform u[i, j] (inverse CDF), so a row's tokens depend only on
its own logits: sharing, refilling and the check interval give the tokens of one row decoded alone. For
every token it returns the log-prob under the distribution it was sampled from (after temperature /
top-k / top-p), which GRPO uses as the old policy. static=True is the fixed-batch loop (decode_fixed) for
CUDA graphs; the same loop decodes two models in lock-step (papers/lockstep.py: only how the next token is picked
lives there). logprobs.py recomputes log-probs of given completions with one teacher-forced forward.
"""
from dataclasses import dataclass

import torch

from nanorlvr.infra.common import Progress, log
from nanorlvr.model import KVCache


@dataclass
class Generation:
    ids: torch.Tensor        # (N, max_new_tokens) completion ids, padded with 0 past `lengths`
    logprobs: torch.Tensor   # (N, max_new_tokens) log-prob of each sampled token (0 past `lengths`)
    lengths: torch.Tensor    # (N,) tokens generated, the stop token included
    truncated: torch.Tensor  # (N,) bool: hit its max_new_tokens without stopping
    fired: torch.Tensor | None = None  # (N, max_new_tokens) bool, lock-step decoding: the token came from the mix

    @property
    def tokens(self) -> list[list[int]]:
        return [row[:n].tolist() for row, n in zip(self.ids, self.lengths.tolist())]

    @property
    def replacement_ratio(self) -> float:
        """Lock-step decoding: the fraction of generated positions whose token came from the mix."""
        return self.fired.sum().item() / max(1, self.lengths.sum().item())


def sample_next(logits, temperature=1.0, top_k=0, top_p=1.0, generator=None, u=None):
    """Sample one token per row from (B, V) logits. Returns (tokens, log-probs under the sampling
    distribution). temperature 0 is greedy (log-prob 0: the sampling distribution is a point mass).
    u (B,): the rows' uniforms in [0, 1) (default: drawn from `generator`); the token is the first whose
    cumulative probability exceeds u, so a row's draw depends on its own logits and uniform only."""
    logits = logits.float()  # bf16 probabilities are too coarse to sample from
    if temperature == 0:
        return logits.argmax(-1), torch.zeros(logits.size(0), device=logits.device)
    logits = logits / temperature
    if top_k and top_k < logits.size(-1):  # only the k largest logits stay
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # tokens entirely past the nucleus (the first always stays)
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    logp = logits.log_softmax(-1)  # of the distribution actually sampled from: GRPO's old policy
    if u is None:
        u = torch.rand(logits.size(0), device=logits.device, generator=generator)
    cdf = logp.exp().cumsum(-1)
    # first index with cdf > u * total: a token of probability 0 never qualifies (its cdf equals the one before)
    tok = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(-1).clamp(max=logits.size(-1) - 1)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


def prefill_inputs(prompts, max_new_tokens, device):
    """Left-padded prompt batch (the static loop's and lockstep's layout): (idx, pos, mask or None, valid,
    prompt lens). valid[b, j]: cache slot j holds a real token of row b; mask is None when no row is padded."""
    # left padding puts every prompt's last token in the last column: one logits row per prompt, and decoded
    # tokens go to the same cache slot in every row
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
    pos = (torch.arange(P, device=device)[None, :] - pad[:, None]).clamp(min=0)  # each prompt starts at position 0
    return idx, pos, mask, valid, plen


def distinct_prompts(prompts, share=True):
    """(the distinct prompts, index of each prompt among them): repeated prompts are prefilled once."""
    if not share:
        return prompts, torch.arange(len(prompts))
    first = {}
    for p in prompts:
        first.setdefault(tuple(p), len(first))
    return [list(p) for p in first], torch.tensor([first[tuple(p)] for p in prompts])


def prefill_rows(model, prompts, share=True):
    """Prefill `prompts` right-padded (plain causal attention: no real token sees a pad), each distinct
    prompt once. Returns the keys and values (n_layer, len(prompts), n_kv_head, P, head_dim) with a
    repeated prompt's rows copied, and the (len(prompts), vocab) logits of each prompt's next token."""
    device = next(model.parameters()).device
    uniq, inv = distinct_prompts(prompts, share)
    P = max(len(p) for p in uniq)
    idx = torch.zeros(len(uniq), P, dtype=torch.long)
    for i, p in enumerate(uniq):
        idx[i, :len(p)] = torch.tensor(p)
    cache = KVCache(model.config, len(uniq), P, device, next(model.parameters()).dtype)
    hidden = model(idx.to(device), cache=cache, head=False)
    # lm_head on each prompt's last token only: (rows, vocab) logits, not (rows, P, vocab)
    last = torch.tensor([len(p) - 1 for p in uniq], device=device)
    logits = model.lm_head(hidden[torch.arange(len(uniq), device=device), last])
    if len(uniq) == len(prompts):  # nothing shared: inv is the identity, no copy
        return cache.k, cache.v, logits
    inv = inv.to(device)
    return cache.k[:, inv], cache.v[:, inv], logits[inv]


CPU_WORKING_SET = 2 ** 30  # bytes of KV cache and vocabulary-sized temporaries per decode batch on the CPU


def rows_within(models, max_len, rows, budget=None):
    """How many of `rows` to decode at once: on the CPU, as many as keep every model's KV cache (max_len
    positions a row) and the ~8 vocabulary-sized sampling temporaries a row within `budget` bytes, so a real
    model's 1,024-row evaluation does not take gigabytes (SmolLM2-135M: ~190 rows of 84 tokens); the toy's
    batch is never cut. On a GPU the caller's batch stands."""
    if next(models[0].parameters()).device.type != "cpu":
        return rows
    per_row, budget = 0, budget or CPU_WORKING_SET
    for m in models:
        c, itemsize = m.config, next(m.parameters()).element_size()
        per_row += 2 * c.n_layer * c.n_kv_head * c.head_dim * max_len * itemsize + 8 * 4 * c.vocab_size
    return max(1, min(rows, budget // per_row))


@torch.no_grad()
def generate(model, prompts, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, stop_ids=(),
             stop_strings=(), decode=None, seed=None, generator=None, batch_size=None,
             static=False, share_prefix=True, check_every=8) -> Generation:
    """Sample completions for a list of prompts (lists of token ids, any lengths, repeats allowed).
    max_new_tokens: the budget of every row, or a list with one per prompt (not with static).
    stop_ids: token ids that end a row (kept as its last token). stop_strings need `decode` (ids -> str).
    seed / generator: reproducible sampling. batch_size: rows decoded at once (the others wait for a
    finished row's slot; static: chunks). share_prefix: prefill each distinct prompt once.
    check_every: tokens between the host's looks at which rows stopped (every token with stop_strings).
    static: decode with a fixed batch and a full-length masked cache (decode_fixed), as one CUDA graph
    replayed per token on a GPU: far fewer kernel launches, the same tokens."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs a non-empty list of non-empty prompts")
    if stop_strings and decode is None:
        raise ValueError("stop_strings need a `decode` function")
    if static and stop_strings:
        raise ValueError("static decoding supports stop_ids, not stop_strings")
    budgets = list(max_new_tokens) if isinstance(max_new_tokens, (list, tuple)) else [max_new_tokens] * len(prompts)
    if len(budgets) != len(prompts) or min(budgets) < 1 or (static and len(set(budgets)) > 1):
        raise ValueError("max_new_tokens: a positive int, or one per prompt (static decoding: one for all)")
    P, max_new_tokens = max(len(p) for p in prompts), max(budgets)
    if P + max_new_tokens > model.config.max_seq_len:
        raise ValueError(f"prompt ({P}) + max_new_tokens ({max_new_tokens}) exceeds max_seq_len {model.config.max_seq_len}")
    device = next(model.parameters()).device
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    # one uniform per (row, token), drawn up front: row i's j-th token does not depend on its batch-mates
    u = torch.rand(len(prompts), max_new_tokens, device=device, generator=generator)
    sample = lambda logits, uu: sample_next(logits, temperature, top_k, top_p, u=uu)  # noqa: E731
    stop_t = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    if static:
        next_token = lambda logits, uu: (*sample(logits[0], uu), None)  # noqa: E731  (one model, nothing fired)
        return decode_fixed([model], prompts, u, next_token, stop_t, batch_size, share_prefix, check_every, static=True)
    batch_size = rows_within([model], P + max_new_tokens, batch_size or len(prompts))
    return decode_eager(model, prompts, u, sample, budgets, stop_t, stop_strings, decode,
                        batch_size, share_prefix, check_every)


def decode_eager(model, prompts, u, sample, budgets, stop_t, stop_strings, decode, batch_size,
                 share_prefix, check_every):
    """generate's loop: up to batch_size slots, each decoding one row at its own cache length (right-padded).
    Every step samples one token per slot and runs one forward for all slots; every check_every tokens the
    host looks at which rows finished and hands their slots to waiting rows, or drops them when none wait.
    The sampling and its log-probs are the first block of the loop; the slot bookkeeping lives in _Slots."""
    N, device, max_new_tokens = len(prompts), u.device, u.size(1)
    B = min(N, batch_size)
    cache = KVCache(model.config, B, max(len(p) for p in prompts) + max_new_tokens, device,
                    next(model.parameters()).dtype)
    out_ids = torch.zeros(N, max_new_tokens, dtype=torch.long, device=device)
    out_lp = torch.zeros(N, max_new_tokens, device=device)
    lengths = torch.tensor(budgets, device=device)
    truncated = torch.ones(N, dtype=torch.bool, device=device)
    slots = _Slots(model, prompts, budgets, cache, share_prefix)
    logits = slots.admit(list(range(B)), list(range(B)), t=0)  # the first B rows: one prefill
    t, next_row = 0, B  # t: tokens decoded so far (the loop's step); next_row: the first row still waiting
    progress, said = Progress(N), 0.0  # a long generation (rows waiting for slots) says how far it is
    while True:
        # sample: each slot's next token from its logits and its row's own uniform, with the log-prob of the
        # distribution it was drawn from (GRPO's old policy); a slot whose row stopped writes padding
        row, step, alive = slots.row, slots.step, slots.alive
        tok, lp = sample(logits, u[row, step])
        tok, lp = torch.where(alive, tok, 0), torch.where(alive, lp, 0.0)
        out_ids[row, step], out_lp[row, step] = tok, lp
        # stop: a stop id, or (the host decodes every running row's tail each token) a stop string
        stopped = alive & torch.isin(tok, stop_t)
        if stop_strings:
            tails = [decode(out_ids[r, max(0, j - 15):j + 1].tolist()) for r, j in zip(row.tolist(), step.tolist())]
            stopped |= alive & torch.tensor([any(s in tail for s in stop_strings) for tail in tails], device=device)
        lengths[row] = torch.where(stopped, step + 1, lengths[row])
        truncated[row] &= ~stopped
        slots.alive &= ~stopped
        slots.step += 1
        t += 1
        # bookkeeping (skip it on a first read): a row at its budget must leave now; stopped rows are looked
        # for only every check_every tokens (a host sync), with stop strings every token
        refill = []
        full = slots.at_budget(t)
        if stop_strings or any(full) or t % check_every == 0:
            refill, tok = slots.free_finished(full, N - next_row, tok)
            if refill is None:  # every row is done
                break
        logits = slots.forward(tok, t)
        if refill:  # the freed slots take the next waiting rows: their prefill's logits replace the wasted ones
            rows = list(range(next_row, next_row + len(refill)))
            logits[torch.tensor(refill, device=device)] = slots.admit(refill, rows, t)
            next_row += len(rows)
            if progress.elapsed() - said > 30:
                said = progress.elapsed()
                log(f"  generate: {next_row}/{N} rows started, eta ~{progress.eta(next_row - 1)}")
    cache.row_pos = None
    return Generation(out_ids, out_lp, lengths, truncated)


class _Slots:
    """decode_eager's batch: one entry per slot (a row of the KV cache), each decoding one prompt row.
    On the device, read by the model and the sampler without a host sync: `row` (the prompt it decodes),
    `step` (that row's tokens so far), `n` (its cache length: where its next token is written), `alive` (not
    stopped). On the host, so the loop knows without a sync when a row has used its budget and how long the
    longest row is: `start` (the loop step at which the row came in), `plen` (its prompt length), `limit` (its
    budget). After t steps of the loop a slot's row has t - start tokens."""

    def __init__(self, model, prompts, budgets, cache, share_prefix):
        B, device = cache.k.size(1), cache.k.device
        self.model, self.prompts, self.budgets, self.cache, self.share_prefix = model, prompts, budgets, cache, share_prefix
        self.row = torch.zeros(B, dtype=torch.long, device=device)
        self.step = torch.zeros(B, dtype=torch.long, device=device)
        self.n = torch.zeros(B, dtype=torch.long, device=device)
        self.alive = torch.zeros(B, dtype=torch.bool, device=device)
        self.start, self.plen, self.limit = [0] * B, [0] * B, [0] * B

    def admit(self, slots, rows, t):
        """Prefill prompt rows `rows` (together) into cache rows `slots` (the prompt's keys at positions
        0..plen-1) and start them at loop step t. Returns the logits of their first tokens."""
        device = self.n.device
        k, v, logits = prefill_rows(self.model, [self.prompts[r] for r in rows], self.share_prefix)
        s = torch.tensor(slots, device=device)
        self.cache.k[:, s, :, :k.size(3)], self.cache.v[:, s, :, :k.size(3)] = k, v
        self.row[s], self.step[s], self.alive[s] = torch.tensor(rows, device=device), 0, True
        self.n[s] = torch.tensor([len(self.prompts[r]) for r in rows], device=device)
        for slot, r in zip(slots, rows):
            self.start[slot], self.plen[slot], self.limit[slot] = t, len(self.prompts[r]), self.budgets[r]
        return logits

    def at_budget(self, t):
        """Per slot (host only, no sync): its row has generated its whole budget after t loop steps."""
        return [t - s == m for s, m in zip(self.start, self.limit)]

    def free_finished(self, full, waiting, tok):
        """A host look at the batch (one sync): slots whose row finished (at its budget or stopped) go to the
        `waiting` rows, as many as wait; the others are dropped from the batch and the cache, keeping the
        running slots first and the slots to refill after them. Returns (slots to refill, the batch's tokens in
        the new slot order), or (None, tok) when no slot is left: decoding is over."""
        done = [f or not a for f, a in zip(full, self.alive.tolist())]
        running = [s for s, d in enumerate(done) if not d]
        refill = [s for s, d in enumerate(done) if d][:waiting]
        if len(running) + len(refill) == len(done):  # nothing to drop: the batch keeps its shape
            return refill, tok
        keep = running + refill
        if not keep:
            return None, tok
        self.cache.keep_rows(torch.tensor(keep, device=tok.device))
        self.row, self.step, self.n, self.alive, tok = (x[keep] for x in (self.row, self.step, self.n, self.alive, tok))
        self.start, self.plen, self.limit = ([x[s] for s in keep] for x in (self.start, self.plen, self.limit))
        return list(range(len(running), len(keep))), tok

    def forward(self, tok, t):
        """One decode step for every slot at loop step t: slot i writes `tok[i]` at cache position n[i] and
        attends to positions 0..n[i]. Returns the next logits. A slot about to be refilled computes a token
        nobody reads (its row is done; admit then overwrites its cache and logits): the batch keeps its
        shape, which is cheaper than a second forward."""
        # the longest row's cache length, from the host's lists (n = plen + t - 1 - start): no sync
        self.cache.row_pos = self.n
        self.cache.len = max(p - s for p, s in zip(self.plen, self.start)) + t - 1
        mask = (torch.arange(self.cache.len + 1, device=tok.device) <= self.n[:, None])[:, None, None, :]
        logits = self.model(tok[:, None], pos=self.n[:, None], attn_mask=mask, cache=self.cache)[:, -1]
        self.n += 1
        return logits


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


def decode_fixed(models, prompts, u, next_token, stop_t, batch_size=None, share_prefix=True, check_every=8,
                 static=True):
    """The fixed-batch loop of generate(static=True) and of lock-step decoding (papers/lockstep.py), for one model or
    several reading the same tokens, each with its own KV cache. Left-padded prompts (each distinct one
    prefilled once, its KV rows then copied to its samples); next_token(logits of each model, uniforms) ->
    (tokens, their log-probs, fired or None) picks every row's token. Rows go batch_size at a time.
    static: every row runs every step (a finished row decodes padding that is never read), slot j of the
    cache is visible once written, and the step is a StaticStep, a CUDA graph on a GPU; the host looks for
    finished rows every check_every tokens. Otherwise rows that stop leave the batch and every cache at
    once (the gates of papers/lockstep.py draw from a generator per running row). Returns the Generation that the
    eager loop would, with `fired` (N, max_new_tokens) when next_token gives it."""
    n = rows_within(models, max(len(p) for p in prompts) + u.size(1), batch_size or len(prompts))
    parts, progress = [], Progress(len(prompts))
    for i in range(0, len(prompts), n):
        parts.append(_decode_chunk(models, prompts[i:i + n], u[i:i + n], next_token, stop_t, share_prefix,
                                   check_every, static))
        done = min(i + n, len(prompts))
        if progress.elapsed() > 30 and done < len(prompts):  # a long one (a real model, several chunks) says how far
            log(f"  generate: {done}/{len(prompts)} rows done, eta ~{progress.eta(done - 1)}")

    def cat(field):  # the chunks' tensors of one Generation field, in order (fired: None without a gate)
        return None if getattr(parts[0], field) is None else torch.cat([getattr(p, field) for p in parts])
    return Generation(*(cat(f) for f in ("ids", "logprobs", "lengths", "truncated", "fired")))


def _decode_chunk(models, prompts, u, next_token, stop_t, share_prefix, check_every, static):
    """decode_fixed on one chunk of at most batch_size rows."""
    device, max_new_tokens = u.device, u.size(1)
    uniq, inv = distinct_prompts(prompts, share_prefix)
    idx, pos, mask, valid, plen = prefill_inputs(uniq, max_new_tokens, device)
    inv = inv.to(device)
    caches, logits = [], []
    for model in models:  # each model prefills the distinct prompts into its own cache
        cache = KVCache(model.config, len(uniq), valid.size(1), device, next(model.parameters()).dtype)
        logits.append(model(idx, pos=pos, attn_mask=mask, cache=cache, last_only=True)[:, -1][inv])
        if len(uniq) < len(prompts):  # the samples of a prompt start from its KV rows
            cache.k, cache.v = cache.k[:, inv], cache.v[:, inv]
        caches.append(cache)
    valid, next_pos = valid[inv], plen[inv]
    B, L = len(prompts), valid.size(1)
    out_ids = torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)
    out_lp = torch.zeros(B, max_new_tokens, device=device)
    out_fired = None  # (B, max_new_tokens) bool once next_token says which tokens fired
    lengths = torch.full((B,), max_new_tokens, device=device)
    truncated = torch.ones(B, dtype=torch.bool, device=device)
    rows = torch.arange(B, device=device)  # the original index of each row in the batch
    alive = torch.ones(B, dtype=torch.bool, device=device)  # per row in the batch: not stopped yet
    steps = [StaticStep(m, c, graph=device.type == "cuda") for m, c in zip(models, caches)] if static else None
    slots = torch.arange(L, device=device)
    for t in range(max_new_tokens):
        tok, lp, fired = next_token(logits, u[rows, t])
        tok, lp = torch.where(alive, tok, 0), torch.where(alive, lp, 0.0)  # a stopped row writes padding
        out_ids[rows, t], out_lp[rows, t] = tok, lp
        if fired is not None:
            if out_fired is None:
                out_fired = torch.zeros(B, max_new_tokens, dtype=torch.bool, device=device)
            out_fired[rows, t] = fired
        stopped = alive & torch.isin(tok, stop_t)
        lengths[rows] = torch.where(stopped, t + 1, lengths[rows])
        truncated[rows] &= ~stopped
        alive &= ~stopped
        if t == max_new_tokens - 1:
            break
        if static:  # a host sync every check_every tokens only
            if (t + 1) % check_every == 0 and not bool(alive.any()):
                break
            step_mask = (valid & (slots <= caches[0].len))[:, None, None, :]
            logits = [step(tok, next_pos, step_mask) for step in steps]
            for cache in caches:
                cache.len += 1
        else:  # the rows that stopped leave the batch and the caches
            if bool(stopped.any()):
                keep = alive.nonzero().squeeze(-1)
                if len(keep) == 0:
                    break
                for cache in caches:
                    cache.keep_rows(keep)
                rows, tok, valid, next_pos, alive = rows[keep], tok[keep], valid[keep], next_pos[keep], alive[keep]
            step_mask = valid[:, None, None, :caches[0].len + 1] if mask is not None else None  # no pads: no mask
            logits = [m(tok[:, None], pos=next_pos[:, None], attn_mask=step_mask, cache=c)[:, -1]
                      for m, c in zip(models, caches)]
        next_pos += 1
    for cache in caches:
        cache.write_pos = None
    return Generation(out_ids, out_lp, lengths, truncated, out_fired)
