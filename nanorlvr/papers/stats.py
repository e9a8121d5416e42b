"""
The statistics of the papers' analyses, plus the pass@k estimator of evaluation: pure tensor functions, no
model, no I/O, each tested against hand-computed values (tests/test_stats.py).

    paper 1 (arXiv 2603.22117)   dlogp, token_metrics (dlogp, KL, entropies), replacement_gate,
                                 separability (AUC), histogram_overlap
    paper 2 (arXiv 2601.04537)   r2_vs_step, n_sample / sample_entries, weight_r2_filter, logprob_r2_filter
    evaluation                   pass_at_k (unbiased, Chen et al. 2021)

The analyses that use them: papers/paper1_direction.py, papers/paper2_linearity.py (papers/__init__.py is the index).
"""

import math

import torch
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# Paper 1: token-level metrics and the replacement gate


# Paper 1 (arXiv 2603.22117), the direction of a token: dlogp(y) = log pi_RL(y) - log pi_base(y)
def dlogp(logp_base, logp_rl, tokens):
    """Δlog p of the tokens (...) from the two models' (..., V) log-probs: the one place it is computed
    (token_metrics; kernels.token_dlogp_torch, the reference of the fused kernel behind lock-step's gate)."""
    idx = tokens.unsqueeze(-1)
    return (logp_rl.gather(-1, idx) - logp_base.gather(-1, idx)).squeeze(-1)


# Paper 1 (arXiv 2603.22117), token metrics: dlogp_t, KL_t = sum_y pi_RL (log pi_RL - log pi_base), entropy H_t
def token_metrics(logits_base, logits_rl, tokens):
    """Per-position metrics of the token y_t actually in the sequence, from the two models' logits.

    logits_*: (..., V), tokens: (...) ids. Returns float32 tensors of shape (...):
    dlogp = log pi_RL(y_t) - log pi_base(y_t) (signed, the "direction"),
    kl = KL(pi_RL || pi_base) over the full vocabulary, entropy_base / entropy_rl = -sum_y pi log pi."""
    lp_b = F.log_softmax(logits_base.float(), dim=-1)
    lp_r = F.log_softmax(logits_rl.float(), dim=-1)
    p_b, p_r = lp_b.exp(), lp_r.exp()
    return {
        "dlogp": dlogp(lp_b, lp_r, tokens),
        "kl": (p_r * (lp_r - lp_b)).sum(-1),
        "entropy_base": -(p_b * lp_b).sum(-1),
        "entropy_rl": -(p_r * lp_r).sum(-1),
    }


# Paper 1 (arXiv 2603.22117), token replacement gate: dlogp <= tau | KL >= tau | entropy >= tau | rand < tau
def replacement_gate(criterion, tau, *, dlogp=None, kl=None, entropy=None, rand=None):
    """Where to replace the base model's token by one sampled from pi_RL. Returns a BoolTensor.

    "dlogp":   dlogp(y_base) <= tau (tau < 0: the RL model learned to avoid this token);
    "kl":      KL(pi_RL || pi_base) >= tau;
    "entropy": base entropy >= tau;
    "random":  rand < tau, with rand ~ U[0, 1) supplied by the caller (tau is the replacement probability)."""
    inputs = {"dlogp": dlogp, "kl": kl, "entropy": entropy, "random": rand}
    if criterion not in inputs:
        raise ValueError(f"unknown criterion {criterion!r}, expected one of {list(inputs)}")
    x = inputs[criterion]
    if x is None:
        arg = "rand" if criterion == "random" else criterion
        raise ValueError(f"criterion {criterion!r} needs the {arg}= tensor")
    if criterion == "dlogp":
        return x <= tau
    if criterion == "random":
        return x < tau
    return x >= tau


def separability(x_a, x_b):
    """ROC AUC of a scalar metric for telling population a from population b: P(X_a > X_b) + 0.5 P(X_a = X_b),
    computed exactly via the Mann-Whitney U statistic with average ranks for ties.
    0.5 = no separation; 1 (or 0) = perfect separation with a larger (smaller); |AUC - 0.5| ignores direction."""
    x_a, x_b = x_a.flatten().double(), x_b.flatten().double()
    n_a, n_b = x_a.numel(), x_b.numel()
    if n_a == 0 or n_b == 0:
        raise ValueError("both populations must be non-empty")
    _, inverse, counts = torch.unique(torch.cat([x_a, x_b]), sorted=True, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()             # 1-based rank of the last element of each tied block
    avg_rank = last - (counts.double() - 1) / 2  # average of the block's ranks first..last
    rank_sum_a = avg_rank[inverse[:n_a]].sum()
    u_a = rank_sum_a - n_a * (n_a + 1) / 2
    return (u_a / (n_a * n_b)).item()


def histogram_overlap(x_a, x_b, bins=50):
    """Overlap coefficient sum_i min(p_a[i], p_b[i]) of the two normalised histograms on common bins spanning
    both samples: 1 = identical histograms, 0 = disjoint (the "histograms nearly coincide" check of Paper 1)."""
    x_a, x_b = x_a.flatten().double(), x_b.flatten().double()
    lo, hi = min(x_a.min(), x_b.min()).item(), max(x_a.max(), x_b.max()).item()
    if lo == hi:
        return 1.0
    h_a = torch.histc(x_a, bins, lo, hi)
    h_b = torch.histc(x_b, bins, lo, hi)
    return torch.minimum(h_a / h_a.sum(), h_b / h_b.sum()).sum().item()


# -----------------------------------------------------------------------------
# Paper 2: linearity of weights and log-probs in the training step


# Paper 2 (arXiv 2601.04537), R^2 per entry: squared Pearson correlation of value vs step over checkpoints
def r2_vs_step(values, steps):
    """values: (M, K) trajectories of M entries over K checkpoints, steps: (K,). Returns (M,) float64.
    Rows that do not vary (zero variance) get nan: the correlation is undefined there; the filters below
    drop such entries before R^2 is computed, and nan keeps any that slip through out of nanmean-style
    summaries instead of silently counting them as 0 or 1."""
    y = values.double()
    x = steps.double().to(y.device)
    xc = x - x.mean()
    yc = y - y.mean(dim=-1, keepdim=True)
    sxy = (yc * xc).sum(-1)
    syy = yc.square().sum(-1)
    sxx = xc.square().sum()
    r2 = sxy.square() / (sxx * syy)
    return torch.where(syy > 0, r2, torch.full_like(r2, float("nan")))


# Paper 2 (arXiv 2601.04537), sample size per weight tensor: k = max(50, 0.1% of entries)
def n_sample(numel):
    """Number of entries to sample from a tensor with numel entries (capped at numel)."""
    return min(numel, max(50, math.ceil(0.001 * numel)))


def sample_entries(numel, k, generator=None):
    """k distinct flat indices in [0, numel), drawn without replacement with the given (seeded) generator,
    so the same entries are read from every checkpoint."""
    return torch.randperm(numel, generator=generator)[:k]


# Paper 2 (arXiv 2601.04537), weight filter: drop entries with range <= 1e-4 or < 4 distinct values over checkpoints
def weight_r2_filter(traj, min_range=1e-4, min_distinct=4):
    """traj: (M, K). Returns BoolTensor (M,), True for the entries to KEEP: range over checkpoints > min_range
    and at least min_distinct distinct values (exact equality; bf16 checkpoints quantise to few values)."""
    rng = traj.amax(-1) - traj.amin(-1)
    s = traj.sort(dim=-1).values
    distinct = 1 + (s[:, 1:] != s[:, :-1]).sum(-1)
    return (rng > min_range) & (distinct >= min_distinct)


# Paper 2 (arXiv 2601.04537), log-prob filter: keep tokens whose log-prob changes by > 0.2 first -> last checkpoint
def logprob_r2_filter(lp, min_change=0.2):
    """lp: (M, K) per-token log-probs over checkpoints. Returns BoolTensor (M,), True for tokens to KEEP."""
    return (lp[:, -1] - lp[:, 0]).abs() > min_change


# -----------------------------------------------------------------------------
# evaluation


# Codex paper (Chen et al. 2021), unbiased pass@k = 1 - C(n-c, k) / C(n, k), in the stable product form
def pass_at_k(n, c, k):
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct.
    1 - prod_{i=n-c+1}^{n} (1 - k / i); equals 1 when n - c < k."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod
