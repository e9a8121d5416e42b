"""
One GRPO step, in two halves that train.py calls in turn:

    rollout(...)      P prompts x G samples with the engine -> completions, old log-probs, rewards (verifier)
    grpo_update(...)  group advantages (x paper 1's token weights) -> clipped loss -> optimizer step(s)

The maths (advantages, weights, losses, KL) lives in grpo_loss.py as pure functions; this file moves data.
grpo_update reads as the step itself; below it sit its helpers, the plumbing a first read may skip: the
rows with a loss packed once (TrainRows), one minibatch's forward/backward, the statistics, the log-prob
mismatch probe. Under torchrun each rank passes its own prompt groups; grpo_update then divides by the
global normaliser and sums the gradients over ranks (infra/dist.py), so the step is the one a single
process would take.

The rollout engine's log-probs (a bf16 copy, other kernels) differ slightly from the trainer's: every step
logs their gap (logp_diff_mean / logp_diff_max) on the tokens of the first optimizer step's rows, whose
weights are still the rollout's (with top_p = 1 only: a nucleus' log-probs are of another distribution).
cfg.old_logp = "recompute" takes the old policy from the training model instead (verl's default);
cfg.tis_cap = C > 0 also weights each token's loss by min(pi_train / pi_rollout, C) (truncated importance
sampling, grpo_loss.tis_weights), which corrects for having sampled from the engine's distribution.
"""
import time
from dataclasses import dataclass

import torch

from nanorlvr import grpo_loss
from nanorlvr.infra import dist
from nanorlvr.infra.common import opt
from nanorlvr.engine import generate
from nanorlvr.logprobs import completion_logprobs, pack
from nanorlvr.verifier import reward

# -----------------------------------------------------------------------------
# the settings of one GRPO step: declared here once, and train.py's flags of the same names (TrainConfig,
# nanorlvr/train_config.py, extends this class). Each opt(...) carries its default, its --help and the values it allows (checked when
# the flags are parsed, infra/common.parse_config).


@dataclass
class GRPOConfig:
    """The settings of one GRPO step: everything grpo_update reads."""
    group_size: int = opt(8, "G: samples per prompt (advantages compare the samples of a group: with one, "
                             "every advantage is 0 and nothing is learned)", ge=2)
    max_new_tokens: int = opt(48, "completion budget of rollouts and evaluations alike (longer ones are "
                                  "truncated); the constant of seq-sum-constant (Dr. GRPO)", ge=1)
    temperature: float = opt(1.0, "rollout temperature; the update scores tokens at the same one", gt=0)
    top_p: float = opt(1.0, "rollout nucleus (old log-probs are then recomputed on the full distribution)",
                       gt=0, le=1)
    scale_std: bool = opt(True, "divide advantages by the group std (False: Dr. GRPO)")
    dynamic_sampling: bool = opt(False, "DAPO dynamic sampling: drop groups whose rewards are all equal and "
                                        "sample more prompts until P groups remain (or --sample_rounds)")
    overlong_buffer: int = opt(0, "L > 0: DAPO's soft overlong penalty, 0 to -1 over the budget's last L "
                                  "tokens, added to the reward", ge=0)
    # A sample that hits --max_new_tokens without its end token gave no final answer: it scores 0, in the
    # reward and in every evaluation (verifier.reward), whatever its last number; the share truncated is
    # logged beside every accuracy. --mask_truncated decides only whether such rows also get a loss.
    mask_truncated: bool = opt(True, "no loss on truncated samples (overlong filtering); they score 0 "
                                     "either way")
    loss_agg: str = opt("token-mean", "how per-token losses are summed and normalised (seq-sum-constant: "
                                      "Dr. GRPO; grpo_loss.loss_normaliser)", choices=grpo_loss.AGGS)
    kl_coef: float = opt(0.0, "KL(pi || base) coefficient, k3 estimator (0: no reference model)", ge=0)
    eps_low: float = opt(0.2, "PPO clip: 1 - eps_low", ge=0, lt=1)
    eps_high: float = opt(0.28, "PPO clip: 1 + eps_high (DAPO clip-higher)", ge=0)
    reweight: str = opt("none", "paper 1's token weights: lowprob w = 1 + c(1 - p_old), dominate "
                                "w = 1 - c + c p_old", choices=("none", "lowprob", "dominate"))
    reweight_c: float = opt(0.2, "c of the token reweighting", ge=0, le=1)
    mu: int = opt(1, "passes over each step's batch", ge=1)
    n_minibatches: int = opt(1, "optimizer steps per pass", ge=1)
    grad_clip: float = opt(1.0, "max gradient norm", gt=0)
    micro_batch: int = opt(0, "rows per forward/backward, gradients accumulated (0: a whole minibatch "
                              "at once)", ge=0)
    old_logp: str = opt("rollout", "old log-probs from the sampler (rollout) or recomputed by the training "
                                   "model (recompute: verl)", choices=("rollout", "recompute"))
    tis_cap: float = opt(0.0, "C > 0: weight each token's loss by min(pi_train / pi_rollout, C) "
                              "(truncated IS; recomputes)", ge=0)


# -----------------------------------------------------------------------------
# first half: the rollout (sampling and the verifier's rewards)


@dataclass
class Rollout:
    prompts: list          # P*G prompt id lists (each prompt repeated G times, prompt-major)
    completions: list      # P*G completion id lists (stop token included)
    old_logp: torch.Tensor  # (N, L) log-probs of the sampled tokens under the rollout policy
    truncated: torch.Tensor  # (N,) bool
    rewards: torch.Tensor  # (N,) float in {0, 1} (0 for every truncated row)
    seconds_gen: float
    seconds_verify: float


@torch.no_grad()
def rollout(model, fmt, problems, group_size, max_new_tokens, temperature, seed, top_p=1.0, workers=2,
            batch_size=None, static=False):
    """fmt: the prompt format (prompts.py). batch_size: rows decoding at once (None: all); a group's G samples
    share one prefill (engine.generate).
    static: engine.generate's fixed-batch decoding (one CUDA graph per token on a GPU)."""
    t0 = time.time()
    prompts = [fmt.encode(p["question"]) for p in problems for _ in range(group_size)]
    g = generate(model, prompts, max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                 stop_ids=fmt.stop_ids, batch_size=batch_size, static=static)
    t1 = time.time()
    golds = [p["answer"] for p in problems for _ in range(group_size)]
    questions = [p["question"] for p in problems for _ in range(group_size)]
    ok = reward([fmt.decode(c) for c in g.tokens], golds, truncated=g.truncated.tolist(), questions=questions,
                workers=workers)  # truncated = no final answer = reward 0; so is the question copied back
    t2 = time.time()
    L = int(g.lengths.max())
    return Rollout(prompts, g.tokens, g.logprobs[:, :L].cpu(), g.truncated.cpu(),
                   torch.tensor(ok, dtype=torch.float), t1 - t0, t2 - t1)


def concat_rollouts(rolls):
    """One Rollout holding the rows of several, in order (old log-probs zero-padded to the longest)."""
    L = max(r.old_logp.size(1) for r in rolls)
    pad = [torch.nn.functional.pad(r.old_logp, (0, L - r.old_logp.size(1))) for r in rolls]
    return Rollout(sum((r.prompts for r in rolls), []), sum((r.completions for r in rolls), []),
                   torch.cat(pad), torch.cat([r.truncated for r in rolls]),
                   torch.cat([r.rewards for r in rolls]),
                   sum(r.seconds_gen for r in rolls), sum(r.seconds_verify for r in rolls))


def select_groups(roll, groups, group_size):
    """The rows of the given prompt groups (indices into the P groups of roll)."""
    rows = [g * group_size + j for g in groups for j in range(group_size)]
    idx = torch.tensor(rows, dtype=torch.long)
    return Rollout([roll.prompts[i] for i in rows], [roll.completions[i] for i in rows], roll.old_logp[idx],
                   roll.truncated[idx], roll.rewards[idx], roll.seconds_gen, roll.seconds_verify)


# DAPO (arXiv 2503.14476), dynamic sampling: keep sampling until the batch holds P groups with unequal rewards
def informative_rollout(sample_round, n_groups, group_size, max_rounds):
    """sample_round(r) -> the Rollout of round r (a fresh draw of prompts). Rounds are drawn until n_groups
    groups whose rewards are not all equal have been collected, or max_rounds rounds; the batch is the first
    n_groups such groups (fewer if the cap is hit). Returns (rollout, info): info's sample_rounds, and over
    every group drawn (the policy's own figures; the batch's are biased, its pass rate is 1 by construction):
    zero_var_frac (the share of equal-reward groups), reward_drawn, pass_rate_drawn and len_drawn."""
    kept, n_kept, n_drawn, n_flat = [], 0, 0, 0
    rewards, passed, length = 0.0, 0.0, 0.0  # sums over every row (passed: over every group) drawn
    for r in range(max_rounds):
        roll = sample_round(r)
        flat = grpo_loss.zero_variance_groups(roll.rewards, group_size)[::group_size]
        n_drawn, n_flat = n_drawn + len(flat), n_flat + int(flat.sum())
        rewards += roll.rewards.sum().item()
        passed += roll.rewards.view(-1, group_size).amax(1).sum().item()
        length += sum(len(c) for c in roll.completions)
        good = (~flat).nonzero().squeeze(-1).tolist()[:n_groups - n_kept]
        kept.append(select_groups(roll, good, group_size))
        n_kept += len(good)
        if n_kept >= n_groups:
            break
    rows = max(1, n_drawn * group_size)
    return concat_rollouts(kept), {"sample_rounds": r + 1, "zero_var_frac": n_flat / max(1, n_drawn),
                                   "reward_drawn": rewards / rows,
                                   "pass_rate_drawn": passed / max(1, n_drawn), "len_drawn": length / rows}


# -----------------------------------------------------------------------------
# second half: the update (advantages, token weights, clipped loss, optimizer steps)


def grpo_update(model, optimizer, roll: Rollout, cfg: GRPOConfig, ref_model=None, autocast=None):
    """Advantages -> cfg.mu passes of cfg.n_minibatches optimizer steps. Returns a dict of floats.
    The learning rate is the caller's (train.py sets it from the step count before each call).
    cfg.micro_batch (if set): rows per forward/backward, gradients accumulated over a minibatch's chunks.
    cfg.old_logp ("rollout" | "recompute") and cfg.tis_cap: the mismatch corrections (module docstring).
    autocast: the context of every forward (precision.autocast; None: none).
    A step is skipped (stats["skipped"] says why) when no row has a non-zero advantage, or at the first
    optimizer step whose loss is not finite: that one and the step's later ones are not taken, the earlier
    ones stay applied (the message counts them).
    Under torchrun every rank calls this with its own groups; the normaliser, the skip decisions and the
    gradients are global, so the ranks take identical steps (those of one process on the whole batch)."""
    G, ctx = cfg.group_size, autocast or torch.autocast("cpu", enabled=False)
    # advantages: the verifier's reward (+ DAPO's overlong penalty), compared within each group of G samples
    lengths = torch.tensor([len(c) for c in roll.completions])
    penalty = grpo_loss.overlong_penalty(lengths, roll.truncated, cfg.max_new_tokens, cfg.overlong_buffer)
    adv = grpo_loss.group_advantages(roll.rewards + penalty, G, scale_std=cfg.scale_std)
    keep = rows_with_loss(roll, cfg)
    stats = {"zero_var_frac": grpo_loss.zero_variance_groups(roll.rewards, G).float().mean().item(),
             "rows_used": int(keep.sum())}
    if not dist.any_(keep.any() and adv[keep].abs().any()):
        return {**stats, "skipped": "no row has a non-zero advantage"}
    full_norm = step_normaliser(lengths[keep], cfg)
    # Rows with zero advantage have exactly zero policy gradient: without a KL term they only count in
    # full_norm, so they are left out of the forward/backward.
    if cfg.kl_coef == 0:
        keep &= adv != 0
    # the old (and reference) log-probs of the kept rows' tokens, and paper 1's token weights
    rows = TrainRows.build(model, ref_model, roll, keep.nonzero().squeeze(-1), adv, cfg, ctx)
    steps, probe = StepStats(), MismatchProbe(cfg.top_p >= 1.0)
    n_steps = cfg.mu * min(cfg.n_minibatches, int(dist.max_(rows.n)))  # optimizer steps, if none skipped
    for _ in range(cfg.mu):  # mu passes over the batch, each cut into minibatches (one optimizer step each)
        for mb, norm in minibatches(rows.n, cfg.n_minibatches, full_norm):
            # one optimizer step: the gradient of this minibatch's clipped loss (sum / norm), accumulated
            # over its micro-batches
            optimizer.zero_grad(set_to_none=True)
            first = probe if steps.n == 0 else None  # the rollout's weights still: measure the mismatch
            loss, parts, bad = minibatch_backward(model, rows, mb, norm, cfg, ctx, first)
            if dist.any_(bad is not None):  # on any rank: no rank steps alone
                optimizer.zero_grad(set_to_none=True)
                stats["skipped"] = non_finite_message(bad, steps.n, n_steps)
                break
            dist.all_reduce_grads(model)
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            steps.add({**token_means(parts, rows.stat_keys), "loss": dist.sum_(loss),
                       "grad_norm": gnorm.item()})
        if "skipped" in stats:
            break
    return {**stats, **steps.means(), **probe.stats()}


def rows_with_loss(roll, cfg):
    """(N,) bool: the rows that get a loss: all but DAPO's dropped groups (--dynamic_sampling) and the
    truncated samples (--mask_truncated)."""
    keep = torch.ones(len(roll.rewards), dtype=torch.bool)
    if cfg.dynamic_sampling:
        keep &= ~grpo_loss.zero_variance_groups(roll.rewards, cfg.group_size)
    if cfg.mask_truncated:
        keep &= ~roll.truncated
    return keep


# -----------------------------------------------------------------------------
# the loss normaliser, stated once. A minibatch's loss is the sum of its per-token losses (per-sequence means
# for seq-mean-token-mean) divided by
#     norm = full_norm * share,    share = the minibatch's rows / the step's rows (both over all ranks),
# full_norm being grpo_loss.loss_normaliser of the whole step's rows with a loss, over all ranks (its token
# count for token-mean). The share-weighted sum of the minibatch losses is then the whole step's loss
# (sum / full_norm), and the ranks' parts of one minibatch add up to that minibatch's loss in the
# gradient all-reduce.


def step_normaliser(lengths, cfg):
    """full_norm: loss_normaliser of the step's rows with a loss (lengths: their completion lengths), summed
    over ranks."""
    mask = torch.arange(cfg.max_new_tokens)[None, :] < lengths[:, None]
    return dist.sum_(grpo_loss.loss_normaliser(mask, cfg.loss_agg, constant=cfg.max_new_tokens))


def minibatches(n, n_minibatches, full_norm):
    """One pass over this rank's n rows, cut into its optimizer steps: [(rows, norm)], the rows shuffled
    (when there are several minibatches) and split into n_minibatches chunks whose sizes differ by at most
    one (tensor_split), in one process as under torchrun, where a rank's chunk may be empty; a minibatch
    empty on every rank (fewer rows than minibatches) is no step. norm: the normaliser above."""
    perm = torch.randperm(n) if n_minibatches > 1 else torch.arange(n)
    total = dist.sum_(n)
    out = []
    for mb in perm.tensor_split(n_minibatches):
        share_rows = dist.sum_(len(mb))
        if share_rows:
            out.append((mb, full_norm * share_rows / total))
    return out


# -----------------------------------------------------------------------------
# the plumbing of grpo_update: the rows packed once, one minibatch's backward, statistics, the mismatch probe


@dataclass
class TrainRows:
    """The rows with a loss, packed once, on the model's device, with what their loss needs per token:
    old_logp (the rollout's, or recomputed), rollout_logp (the rollout's), ref_logp (KL), weights (paper 1),
    is_w (truncated IS), mask. n = 0 (a rank with no such row under torchrun): every tensor is None."""
    n: int
    stat_keys: list
    idx: torch.Tensor = None
    plen: torch.Tensor = None
    clen: torch.Tensor = None
    seq_lens: torch.Tensor = None  # prompt + completion per row: micro-batches group rows of similar length
    adv: torch.Tensor = None
    old_logp: torch.Tensor = None
    rollout_logp: torch.Tensor = None
    ref_logp: torch.Tensor = None
    weights: torch.Tensor = None
    is_w: torch.Tensor = None
    mask: torch.Tensor = None

    @classmethod
    def build(cls, model, ref_model, roll, rows, adv, cfg, ctx):
        keys = ["clip_frac", "approx_kl", "ratio_mean", "entropy"] + (["kl_ref"] if ref_model else [])
        if not len(rows):
            return cls(0, keys)
        device = next(model.parameters()).device
        idx, plen, clen = pack([roll.prompts[i] for i in rows], [roll.completions[i] for i in rows])
        Lc = int(clen.max())
        old_logp, adv = roll.old_logp[rows, :Lc].to(device), adv[rows].to(device)
        idx, plen, clen = idx.to(device), plen.to(device), clen.to(device)
        rollout_logp, ref_logp, is_w = old_logp, None, None
        with ctx:
            # the old policy from the training model (with top_p < 1 the engine's are a nucleus')
            if cfg.top_p < 1.0 or cfg.old_logp == "recompute" or cfg.tis_cap > 0:
                old_logp = _logprobs(model, idx, plen, clen, cfg.temperature, cfg.micro_batch, Lc)
            if ref_model is not None:
                ref_logp = _logprobs(ref_model, idx, plen, clen, cfg.temperature, cfg.micro_batch, Lc)
        mask = (torch.arange(Lc, device=device)[None, :] < clen[:, None]).float()
        weights = grpo_loss.token_weights(old_logp.exp(), cfg.reweight, cfg.reweight_c)
        if cfg.tis_cap > 0:
            is_w = grpo_loss.tis_weights(old_logp, rollout_logp, cfg.tis_cap)
        return cls(len(rows), keys, idx, plen, clen, plen + clen, adv, old_logp, rollout_logp, ref_logp,
                   weights, is_w, mask)


def minibatch_backward(model, rows, mb, norm, cfg, ctx, probe=None):
    """loss.backward() of the minibatch `mb` (indices into rows), cfg.micro_batch rows at a time.
    Returns (its loss, [(stats, tokens)] per micro-batch, None), or (.., .., the loss) at the first
    micro-batch whose loss is not finite (no backward for it)."""
    total, parts = 0.0, []
    for c in micro_batches(mb.to(rows.idx.device) if rows.n else mb, cfg.micro_batch, rows.seq_lens):
        Lm = int(rows.clen[c].max())
        mask = rows.mask[c, :Lm]

        def cut(t):  # a per-token tensor's rows of this micro-batch, trimmed to its longest completion
            return None if t is None else t[c, :Lm]
        with ctx:
            logp, _, ent = completion_logprobs(model, *packed_rows(rows.idx, rows.plen, rows.clen, c),
                                               cfg.temperature, with_entropy=True)
            loss, s = grpo_loss.policy_loss(
                logp, cut(rows.old_logp), rows.adv[c], mask, eps_low=cfg.eps_low, eps_high=cfg.eps_high,
                agg=cfg.loss_agg, weights=cut(rows.weights), ref_logp=cut(rows.ref_logp),
                kl_coef=cfg.kl_coef, loss_norm=norm, is_weights=cut(rows.is_w))
        s["entropy"] = grpo_loss.masked_mean(ent, mask).item()
        if probe is not None:
            probe.add(logp, cut(rows.rollout_logp), mask)
        if not torch.isfinite(loss):
            return total, parts, loss.item()
        loss.backward()
        parts.append((s, int(mask.sum())))
        total += loss.item()
    return total, parts, None


def token_means(parts, keys):
    """The micro-batches' statistics (each a mean over its tokens) as means over all their tokens. No
    micro-batch (a rank without rows): zeros, so that every rank reports the same keys."""
    if len(parts) == 1:
        return dict(parts[0][0])
    tokens = sum(k for _, k in parts)
    return {key: sum(s[key] * k for s, k in parts) / max(1, tokens) for key in keys}


class StepStats:
    """The statistics of each optimizer step taken; means() averages them over those steps."""

    def __init__(self):
        self.sums, self.n = {}, 0

    def add(self, s):
        for key, v in s.items():
            self.sums[key] = self.sums.get(key, 0.0) + v
        self.n += 1

    def means(self):
        return {key: v / self.n for key, v in self.sums.items()}


def non_finite_message(bad, taken, n_steps):
    """stats["skipped"] of a step stopped by a non-finite loss (bad: this rank's loss, None: another's)."""
    where = "on another rank" if bad is None else bad
    if not taken:
        return f"non-finite loss {where}: step skipped"
    return (f"non-finite loss {where} in optimizer step {taken + 1} of {n_steps}: it and the later ones "
            f"skipped, the {taken} before it applied")


class MismatchProbe:
    """|log pi_train - log pi_rollout| on the tokens of the step's first optimizer step (whose weights are
    still the rollout's): mean and max over all ranks' tokens. on=False (top_p < 1): nothing logged."""

    def __init__(self, on):
        self.on, self.sum, self.max, self.tokens = on, 0.0, 0.0, 0

    def add(self, logp, rollout_logp, mask):
        if self.on:
            g_mean, g_max = grpo_loss.logprob_mismatch(logp, rollout_logp, mask)
            k = int(mask.sum())
            self.sum, self.max, self.tokens = self.sum + g_mean * k, max(self.max, g_max), self.tokens + k

    def stats(self):  # every rank reports the same keys and values
        if not self.on:
            return {}
        return {"logp_diff_mean": dist.sum_(self.sum) / max(1, dist.sum_(self.tokens)),
                "logp_diff_max": dist.max_(self.max)}


def packed_rows(idx, plen, clen, rows):
    """The rows of a packed batch, trimmed to their own longest sequence."""
    return idx[rows, :int((plen[rows] + clen[rows]).max())], plen[rows], clen[rows]


def micro_batches(rows, micro, seq_lens=None):
    """Micro-batches of `rows` (one batch if micro is 0). With seq_lens, rows are first ordered longest
    first, so each chunk pads to about its own rows' length (and the largest comes first: an out-of-memory
    shows at once). The accumulated gradient is the same for any grouping."""
    if micro and seq_lens is not None and len(rows) > micro:
        rows = rows[torch.argsort(seq_lens[rows], descending=True, stable=True)]
    return [c for c in (rows.split(micro) if micro else [rows]) if len(c)]


@torch.no_grad()
def _logprobs(model, idx, plen, clen, temperature, micro, Lc):
    """completion_logprobs over all rows, micro rows at a time, as one (N, Lc) tensor."""
    out = torch.zeros(len(idx), Lc, device=idx.device)
    for c in micro_batches(torch.arange(len(idx), device=idx.device), micro, plen + clen):
        lp = completion_logprobs(model, *packed_rows(idx, plen, clen, c), temperature)[0]
        out[c, :lp.size(1)] = lp
    return out
