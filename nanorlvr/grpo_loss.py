"""The GRPO objective as pure tensor functions: group advantages, DAPO's overlong penalty, paper 1's token
weights, truncated importance weights, the k3 KL and the clipped policy loss with its normaliser.

grpo.py's update calls these in that order; each is tested against hand-computed values (tests/test_grpo.py).
Everything here takes tensors and returns tensors (or floats for logging); there is no model and no I/O.
Layout conventions used throughout:
- a batch holds N sampled responses, grouped prompt-major: rows [g*G:(g+1)*G] are the G samples of prompt g;
- per-token tensors are (N, T) over the response positions, with a 0/1 `mask` marking real response tokens;
- `logp` / `old_logp` / `ref_logp` are log-probabilities of the sampled tokens under the current policy,
  the rollout (old) policy and the frozen reference policy.
"""

import torch

AGGS = ("token-mean", "seq-mean-token-mean", "seq-sum-constant")


# -----------------------------------------------------------------------------
# small helpers


def masked_mean(x, mask, dim=None):
    """Mean of x over positions where mask is 1 (all of them if dim is None). Empty -> 0."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


# -----------------------------------------------------------------------------
# advantages and dynamic sampling


def zero_variance_groups(rewards, group_size):
    """Per row: True if every reward in the row's group is equal (DAPO dynamic sampling drops these groups).

    rewards: (N,) with N a multiple of group_size, prompt-major. Returns BoolTensor (N,)."""
    r = rewards.view(-1, group_size)
    same = r.amax(dim=1) == r.amin(dim=1)
    return same.repeat_interleave(group_size)


# GRPO (DeepSeekMath, arXiv 2402.03300) group-relative advantage; Dr. GRPO (arXiv 2503.20783) when
# scale_std=False
def group_advantages(rewards, group_size, scale_std=True, eps=1e-4):
    """A_i = (r_i - mean_g) / (std_g + eps) (GRPO) or r_i - mean_g (Dr. GRPO, scale_std=False).

    rewards: (N,), prompt-major groups of size group_size. Returns float (N,).
    std is the POPULATION std (divide by G, not G-1): it makes the advantages of a group have unit spread
    regardless of G and is defined for G = 1. (TRL / verl use the Bessel-corrected std; for G = 16 the two
    differ by a factor sqrt(15/16) ~ 0.97, which only rescales the step.)
    Groups whose rewards are all equal get advantages of exactly 0, so they contribute no policy gradient."""
    r = rewards.float().view(-1, group_size)
    if r.numel() == 0:  # no group at all (dynamic sampling found none to keep)
        return r.view(-1)
    adv = r - r.mean(dim=1, keepdim=True)
    if scale_std:
        adv = adv / (r.std(dim=1, unbiased=False, keepdim=True) + eps)
    same = r.amax(dim=1, keepdim=True) == r.amin(dim=1, keepdim=True)
    adv = torch.where(same, torch.zeros_like(adv), adv)  # exact zeros, immune to rounding in the mean
    return adv.view(-1)


# DAPO (arXiv 2503.14476), Eq. 13: soft overlong punishment, added to the verifier's reward
def overlong_penalty(lengths, truncated, max_len, buffer):
    """0 for responses up to max_len - buffer tokens, then falling linearly to -1 at max_len; -1 for every
    truncated response (it ran past the budget). lengths: (N,) response lengths, truncated: (N,) bool.
    buffer = 0: no penalty (all zeros)."""
    lengths = torch.as_tensor(lengths, dtype=torch.float)
    if buffer <= 0:
        return torch.zeros_like(lengths)
    pen = ((max_len - buffer) - lengths).clamp(max=0) / buffer
    truncated = torch.as_tensor(truncated, dtype=torch.bool)
    return torch.where(truncated, torch.full_like(pen, -1.0), pen.clamp(min=-1.0))


# -----------------------------------------------------------------------------
# per-token reweighting (paper 1)


# Paper 1 (arXiv 2603.22117), training-time reweighting: w = 1 + c(1 - pi_old) ("lowprob");
# its baseline "Dominate": w = 1 - c + c pi_old
def token_weights(p_old, mode="none", c=0.0):
    """Detached per-token advantage weights from the rollout policy's token probabilities p_old (N, T).

    "lowprob": w = 1 + c (1 - p_old) in [1, 1+c], up-weights low-probability tokens (the paper's method);
    "dominate": w = 1 - c + c p_old in [1-c, 1], up-weights high-probability tokens (the paper's baseline);
    "none": w = 1. No normalisation; the weights multiply the advantage of every response token."""
    p_old = p_old.detach().float()
    if mode == "lowprob":
        return 1.0 + c * (1.0 - p_old)
    if mode == "dominate":
        return 1.0 - c + c * p_old
    if mode == "none":
        return torch.ones_like(p_old)
    raise ValueError(f"unknown token weight mode {mode!r}")


# -----------------------------------------------------------------------------
# rollout / training mismatch: the engine (e.g. a bf16 copy) and the trainer (fp32 master weights under
# autocast) give the same tokens slightly different log-probs, so the rollout is a little off-policy


def logprob_mismatch(train_logp, rollout_logp, mask):
    """(mean, max) of |log pi_train - log pi_rollout| over the response tokens (floats, 0 if none)."""
    d = (train_logp.detach().float() - rollout_logp.float()).abs() * mask
    return (masked_mean(d, mask).item(), d.max().item() if d.numel() else 0.0)


# Truncated importance sampling (F. Yao et al., "Your efficient RL framework secretly brings you off-policy
# RL training", 2025; in verl and TRL): w = min(pi_train / pi_rollout, C) per token
def tis_weights(train_logp, rollout_logp, cap):
    """Detached per-token weights min(exp(train_logp - rollout_logp), cap): the tokens were drawn from the
    rollout engine's distribution, the loss is of the trainer's; cap C bounds the variance. train_logp are
    the old log-probs recomputed by the training model, before any update."""
    return torch.exp(train_logp.detach().float() - rollout_logp.float()).clamp(max=cap)


# -----------------------------------------------------------------------------
# KL to the reference policy


# GRPO (DeepSeekMath, arXiv 2402.03300), k3 estimator of KL(pi_theta || pi_ref):
# exp(ref - logp) - (ref - logp) - 1
def kl_k3(logp, ref_logp):
    """Per-token k3 estimate of KL(pi_theta || pi_ref) on tokens sampled from pi_theta; >= 0 elementwise."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


# -----------------------------------------------------------------------------
# clipped policy loss with minibatch-safe aggregation


def loss_normaliser(mask, agg="token-mean", constant=None):
    """The number the summed per-token (or per-sequence) loss is divided by, for a batch with this mask.

    token-mean:          total number of response tokens in the batch (DAPO);
    seq-mean-token-mean: number of sequences (each sequence is first averaged over its own tokens; GRPO);
    seq-sum-constant:    number of sequences x constant (Dr. GRPO; constant = max_new_tokens,
                         defaulting to the padded length mask.shape[-1]).
    Computed ONCE on the whole step's mask: passed as `loss_norm` to the policy_loss of each micro-batch of
    one optimizer step, their losses sum exactly to that batch's loss (gradient accumulation). A step cut
    into several optimizer steps divides each minibatch's loss by this x the minibatch's share of the rows
    (grpo.minibatches): the share-weighted sum of the minibatch losses is the whole batch's loss."""
    n_seq = mask.shape[0]
    if agg == "token-mean":
        return float(mask.sum())
    if agg == "seq-mean-token-mean":
        return float(n_seq)
    if agg == "seq-sum-constant":
        return float(n_seq * (mask.shape[-1] if constant is None else constant))
    raise ValueError(f"unknown loss aggregation {agg!r}, expected one of {AGGS}")


# PPO clipped surrogate as used by GRPO/DAPO (decoupled eps_low / eps_high, DAPO "clip-higher")
def clipped_surrogate(ratio, adv, eps_low=0.2, eps_high=0.28):
    """Per-token loss -min(ratio A, clip(ratio, 1-eps_low, 1+eps_high) A) and a bool 'clipped branch active'."""
    unclipped = -ratio * adv
    clipped = -ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv
    return torch.maximum(unclipped, clipped), clipped > unclipped


def policy_loss(logp, old_logp, advantages, mask, *, eps_low=0.2, eps_high=0.28, agg="token-mean",
                weights=None, ref_logp=None, kl_coef=0.0, loss_norm=None, is_weights=None):
    """Clipped GRPO/DAPO policy loss of one (mini)batch. Returns (scalar loss, stats dict of floats).

    logp (N, T) requires grad; old_logp (N, T) from the rollout policy; advantages (N,) one per sequence,
    broadcast over its tokens (or already (N, T)), multiplied by `weights` (N, T) if given (Paper 1);
    mask (N, T) 0/1 response tokens; ref_logp (N, T) adds kl_coef * k3 per token; is_weights (N, T)
    multiply each token's clipped policy term (truncated importance sampling, tis_weights).
    The per-token loss is aggregated per `agg` and divided by `loss_norm` (default: this batch's own
    loss_normaliser(mask, agg); pass the full batch's value when this is a minibatch of a larger step).
    stats (over this batch's response tokens): clip_frac = fraction of tokens whose clipped branch was
    selected and differs from the unclipped one; approx_kl = k3 estimate of KL(pi_old || pi_theta),
    mean((ratio - 1) - log ratio); ratio_mean; kl_ref = mean k3 to the reference (if ref_logp given)."""
    mask = mask.to(logp.dtype)
    log_ratio = logp - old_logp.detach()
    ratio = torch.exp(log_ratio)
    adv = advantages.detach().to(logp.dtype)
    adv = adv if adv.dim() == logp.dim() else adv.unsqueeze(-1).expand_as(logp)  # (N,) -> (N, T)
    if weights is not None:
        adv = adv * weights.detach().to(logp.dtype)
    per_token, clipped = clipped_surrogate(ratio, adv, eps_low, eps_high)
    if is_weights is not None:
        per_token = per_token * is_weights.detach().to(logp.dtype)
    kl_ref = None
    if ref_logp is not None:
        kl_ref = kl_k3(logp, ref_logp.detach())
        per_token = per_token + kl_coef * kl_ref

    if loss_norm is None:
        loss_norm = loss_normaliser(mask, agg)
    if agg in ("token-mean", "seq-sum-constant"):
        loss = (per_token * mask).sum() / loss_norm
    elif agg == "seq-mean-token-mean":
        per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        loss = per_seq.sum() / loss_norm
    else:
        raise ValueError(f"unknown loss aggregation {agg!r}, expected one of {AGGS}")

    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean(clipped.to(mask.dtype), mask).item(),
            "approx_kl": masked_mean(ratio - 1.0 - log_ratio, mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
        }
        if kl_ref is not None:
            stats["kl_ref"] = masked_mean(kl_ref, mask).item()
    return loss, stats
