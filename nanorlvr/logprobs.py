"""
Log-probabilities of given completions under a model (teacher forcing): what the GRPO update (new policy,
recomputed old policy, reference model), the SFT loss and the analyses read.

`pack` right-pads prompt + completion rows into one batch; `completion_logprobs` runs one forward over it
(plain causal attention: no real token sees a pad) and reads the log-prob of every completion token. With a
real vocabulary the (rows, tokens, vocab) logits would not fit, so lm_head is then applied to the completion
tokens only, a chunk at a time, each chunk recomputed in the backward.
"""
import torch
import torch.nn.functional as F


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
