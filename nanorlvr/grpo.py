"""
One GRPO step, in two halves that train.py calls in turn:

    rollout(...)      P prompts x G samples with the engine -> completions, old log-probs, rewards (verifier)
    grpo_update(...)  group advantages (x paper 1's token weights) -> clipped loss -> optimizer step(s)

The maths (advantages, weights, losses, KL) lives in grpo_loss.py as pure functions; this file moves data.
Under torchrun each rank passes its own prompt groups; grpo_update then divides by the global normaliser
and sums the gradients over ranks (infra/dist.py), so the step is the one a single process would take.

The rollout engine's log-probs (a bf16 copy, other kernels) differ slightly from the trainer's: every step
logs their gap (logp_diff_mean / logp_diff_max) on the tokens of the first optimizer step's rows, whose
weights are still the rollout's (with top_p = 1 only: a nucleus' log-probs are of another distribution).
cfg.old_logp = "recompute" takes the old policy from the training model instead (verl's default);
cfg.tis_cap = C > 0 also weights each token's loss by min(pi_train / pi_rollout, C) (truncated importance
sampling, grpo_loss.tis_weights), which corrects for having sampled from the engine's distribution.
"""
import math
import time
from dataclasses import dataclass, fields

import torch

from nanorlvr import grpo_loss
from nanorlvr.infra import dist
from nanorlvr.infra.common import UsageError
from nanorlvr.engine import generate
from nanorlvr.logprobs import completion_logprobs, pack
from nanorlvr.verifier import reward

# -----------------------------------------------------------------------------
# the settings of one GRPO step, with the defaults train.py uses


@dataclass
class GRPOConfig:
    """Everything grpo_update reads. train.py's flags of the same names fill it (from_config)."""
    group_size: int = 8             # G samples per prompt (DeepSeekMath's GRPO)
    max_new_tokens: int = 48        # completion budget: the constant of seq-sum-constant (Dr. GRPO)
    temperature: float = 1.0        # of the rollout; the update scores tokens at the same temperature
    top_p: float = 1.0              # < 1: the rollout's log-probs are a nucleus': old ones are recomputed
    scale_std: bool = True          # divide advantages by the group std (GRPO); False: Dr. GRPO
    dynamic_sampling: bool = False  # drop groups whose rewards are all equal (DAPO; the batch is refilled)
    overlong_buffer: int = 0        # L_cache > 0: DAPO's soft overlong penalty over the budget's last L_cache
    mask_truncated: bool = True     # no loss on truncated samples (DAPO's overlong filtering)
    loss_agg: str = "token-mean"    # one of grpo_loss.AGGS (token-mean: DAPO)
    kl_coef: float = 0.0            # k3 KL to the reference (GRPO); 0: no reference model (DAPO, Dr. GRPO)
    eps_low: float = 0.2            # PPO clip below: 1 - eps_low
    eps_high: float = 0.28          # PPO clip above: 1 + eps_high (DAPO clip-higher)
    reweight: str = "none"          # none | lowprob | dominate: paper 1's token weights (token_weights)
    reweight_c: float = 0.2         # c of the token weights
    mu: int = 1                     # passes over each step's batch
    n_minibatches: int = 1          # optimizer steps per pass
    grad_clip: float = 1.0          # max gradient norm
    micro_batch: int = 0            # rows per forward/backward (0: a whole minibatch at once)
    old_logp: str = "rollout"       # rollout | recompute: where the old policy's log-probs come from
    tis_cap: float = 0.0            # C > 0: truncated importance weights min(pi_train / pi_rollout, C)

    @classmethod
    def from_config(cls, cfg):
        """The fields of this class, read off any config that has them (train.py's TrainConfig)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


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
    ok = reward([fmt.decode(c) for c in g.tokens], golds, truncated=g.truncated.tolist(),
                workers=workers)  # truncated = no final answer = reward 0
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
    n_groups such groups (fewer if the cap is hit). Returns (rollout, {"sample_rounds", "zero_var_frac"}):
    zero_var_frac is the share of equal-reward groups among all groups drawn."""
    kept, n_kept, n_drawn, n_flat = [], 0, 0, 0
    for r in range(max_rounds):
        roll = sample_round(r)
        flat = grpo_loss.zero_variance_groups(roll.rewards, group_size)[::group_size]
        n_drawn, n_flat = n_drawn + len(flat), n_flat + int(flat.sum())
        good = (~flat).nonzero().squeeze(-1).tolist()[:n_groups - n_kept]
        kept.append(select_groups(roll, good, group_size))
        n_kept += len(good)
        if n_kept >= n_groups:
            break
    return concat_rollouts(kept), {"sample_rounds": r + 1, "zero_var_frac": n_flat / max(1, n_drawn)}


# -----------------------------------------------------------------------------
# second half: the update (advantages, clipped loss, optimizer steps)


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


def minibatches(perm, n_minibatches, world):
    """The rows of one pass, cut into optimizer steps: (rows, part, whole), where part / whole is the
    minibatch's share of the step's loss normaliser. One process: chunks of ceil(n / n_minibatches) rows,
    share = rows / n. Under torchrun every rank cuts exactly n_minibatches chunks (maybe empty), so all ranks
    take the same optimizer steps, and each chunk's share is 1 / n_minibatches (the ranks' chunks of one
    step add up in the all-reduce)."""
    n = len(perm)
    if world > 1:
        return [(mb, 1, n_minibatches) for mb in perm.tensor_split(n_minibatches)]
    return [(mb, len(mb), n) for mb in perm.split(max(1, math.ceil(n / n_minibatches)))]


@torch.no_grad()
def _logprobs(model, idx, plen, clen, temperature, micro, Lc):
    """completion_logprobs over all rows, micro rows at a time, as one (N, Lc) tensor."""
    out = torch.zeros(len(idx), Lc, device=idx.device)
    for c in micro_batches(torch.arange(len(idx), device=idx.device), micro, plen + clen):
        lp = completion_logprobs(model, *packed_rows(idx, plen, clen, c), temperature)[0]
        out[c, :lp.size(1)] = lp
    return out


def grpo_update(model, optimizer, scheduler, roll: Rollout, cfg: GRPOConfig, ref_model=None, autocast=None):
    """Advantages -> cfg.mu passes of cfg.n_minibatches optimizer steps. Returns a dict of floats.
    cfg.micro_batch (if set): rows per forward/backward, gradients accumulated over a minibatch's chunks.
    cfg.old_logp ("rollout" | "recompute") and cfg.tis_cap: the mismatch corrections (module docstring).
    autocast: the context of every forward (precision.autocast; None: none).
    Under torchrun every rank calls this with its own groups; the normaliser, the skip decisions and the
    gradients are global, so the ranks take identical steps (those of one process on the whole batch)."""
    device = next(model.parameters()).device
    G, world, micro = cfg.group_size, dist.world(), cfg.micro_batch
    tis_cap, old_from = cfg.tis_cap, cfg.old_logp
    if old_from not in ("rollout", "recompute") or tis_cap < 0:
        raise UsageError(f"--old_logp={old_from} --tis_cap={tis_cap}: old_logp is rollout or recompute, "
                         "tis_cap >= 0")
    recompute = cfg.top_p < 1.0 or old_from == "recompute" or tis_cap > 0
    # advantages: the verifier's reward (+ DAPO's overlong penalty), compared within each group of G samples
    lengths = torch.tensor([len(c) for c in roll.completions])
    penalty = grpo_loss.overlong_penalty(lengths, roll.truncated, cfg.max_new_tokens, cfg.overlong_buffer)
    adv = grpo_loss.group_advantages(roll.rewards + penalty, G, scale_std=cfg.scale_std)
    keep = torch.ones(len(adv), dtype=torch.bool)
    if cfg.dynamic_sampling:
        keep &= ~grpo_loss.zero_variance_groups(roll.rewards, G)
    if cfg.mask_truncated:
        keep &= ~roll.truncated
    stats = {"zero_var_frac": grpo_loss.zero_variance_groups(roll.rewards, G).float().mean().item(),
             "rows_used": int(keep.sum())}
    if not dist.any_(keep.any() and adv[keep].abs().any()):
        stats["skipped"] = "no row has a non-zero advantage"
        return stats
    # The normaliser, written once: minibatch loss = sum of its per-token losses / (full_norm * part / whole),
    # full_norm that of the whole step over all ranks (grpo_loss.loss_normaliser: tokens for token-mean), and
    # part / whole the minibatch's share of the step (minibatches): the losses of the minibatches and of the
    # ranks add up to the loss of the whole batch. Rows with zero advantage have exactly zero policy gradient:
    # without a KL term they only count in full_norm, so they are left out of the forward/backward.
    full_norm = grpo_loss.loss_normaliser(torch.arange(cfg.max_new_tokens)[None, :] < lengths[keep, None],
                                          cfg.loss_agg, constant=cfg.max_new_tokens)
    full_norm = dist.sum_(full_norm)
    if cfg.kl_coef == 0:
        keep &= adv != 0
    rows = keep.nonzero().squeeze(-1)
    n = len(rows)  # may be 0 on some ranks under torchrun: they still join every all-reduce
    ctx = autocast or torch.autocast("cpu", enabled=False)
    seq_lens = None  # prompt + completion length per row: micro-batches group rows of similar length
    if n:
        # the kept rows packed once; the old (and reference) log-probs and the token weights of their tokens
        idx, plen, clen = pack([roll.prompts[i] for i in rows], [roll.completions[i] for i in rows])
        Lc = int(clen.max())
        old_logp, adv = roll.old_logp[rows, :Lc].to(device), adv[rows].to(device)
        idx, plen, clen = idx.to(device), plen.to(device), clen.to(device)
        rollout_logp, is_w = old_logp, None
        with ctx:
            if recompute:  # the old policy from the training model (with top_p < 1 the engine's: a nucleus')
                old_logp = _logprobs(model, idx, plen, clen, cfg.temperature, micro, Lc)
            ref_logp = (_logprobs(ref_model, idx, plen, clen, cfg.temperature, micro, Lc)
                        if ref_model is not None else None)
        mask = (torch.arange(Lc, device=device)[None, :] < clen[:, None]).float()
        weights = grpo_loss.token_weights(old_logp.exp(), cfg.reweight, cfg.reweight_c)
        if tis_cap > 0:
            is_w = grpo_loss.tis_weights(old_logp, rollout_logp, tis_cap)
        seq_lens = plen + clen
    stat_keys = ["clip_frac", "approx_kl", "ratio_mean", "entropy"] + (["kl_ref"] if ref_model else [])
    agg_stats, n_updates = {}, 0
    gap, gap_max, gap_tokens = 0.0, 0.0, 0  # |log pi_train - log pi_rollout| before the first optimizer step
    for epoch in range(cfg.mu):
        perm = torch.randperm(n) if cfg.n_minibatches > 1 else torch.arange(n)
        for mb, part, whole in minibatches(perm, cfg.n_minibatches, world):
            # one optimizer step: the gradient of this minibatch's loss, accumulated over its micro-batches
            mb = mb.to(device)
            norm = full_norm * part / whole
            optimizer.zero_grad(set_to_none=True)
            parts, mb_loss, bad = [], 0.0, None
            for c in micro_batches(mb, micro, seq_lens):
                Lm = int(clen[c].max())
                with ctx:
                    logp, _, ent = completion_logprobs(model, *packed_rows(idx, plen, clen, c),
                                                       cfg.temperature, with_entropy=True)
                    loss, s = grpo_loss.policy_loss(
                        logp, old_logp[c, :Lm], adv[c], mask[c, :Lm], eps_low=cfg.eps_low,
                        eps_high=cfg.eps_high, agg=cfg.loss_agg, weights=weights[c, :Lm],
                        ref_logp=None if ref_logp is None else ref_logp[c, :Lm], kl_coef=cfg.kl_coef,
                        loss_norm=norm, is_weights=None if is_w is None else is_w[c, :Lm])
                s["entropy"] = grpo_loss.masked_mean(ent, mask[c, :Lm]).item()
                if n_updates == 0 and cfg.top_p >= 1.0:  # still the rollout's weights (and distribution)
                    g_mean, g_max = grpo_loss.logprob_mismatch(logp, rollout_logp[c, :Lm], mask[c, :Lm])
                    k = int(mask[c, :Lm].sum())
                    gap, gap_max, gap_tokens = gap + g_mean * k, max(gap_max, g_max), gap_tokens + k
                if not torch.isfinite(loss):
                    bad = loss.item()
                    break
                loss.backward()
                parts.append(s)
                mb_loss += loss.item()
            # a non-finite loss on any rank skips the whole step on every rank (no rank steps alone)
            if dist.any_(bad is not None):
                where = "on another rank" if bad is None else bad
                stats["skipped"] = f"non-finite loss {where} (epoch {epoch}): step skipped"
                optimizer.zero_grad(set_to_none=True)
                return stats
            dist.all_reduce_grads(model)
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            s = parts[0] if len(parts) == 1 else {k: sum(p[k] for p in parts) / max(1, len(parts))
                                                  for k in stat_keys}
            s.update(loss=dist.sum_(mb_loss), grad_norm=gnorm.item())
            for key, v in s.items():
                agg_stats[key] = agg_stats.get(key, 0.0) + v
            n_updates += 1
    scheduler.step()
    stats.update({key: v / n_updates for key, v in agg_stats.items()})
    if cfg.top_p >= 1.0:  # over all ranks' tokens (every rank reports the same keys and values)
        stats.update(logp_diff_mean=dist.sum_(gap) / max(1, dist.sum_(gap_tokens)),
                     logp_diff_max=dist.max_(gap_max))
    return stats
