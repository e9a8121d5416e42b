"""
One GRPO step, in two halves that train.py calls in turn:

    rollout(...)      P prompts x G samples with the engine -> completions, old log-probs, rewards (verifier)
    grpo_update(...)  group advantages (x paper 1's token weights) -> clipped loss -> optimizer step(s)

The maths (advantages, weights, losses, KL) lives in grpo.py as pure functions; this file only moves data.
"""
import math
import time
from dataclasses import dataclass

import torch

from nanorlvr import grpo
from nanorlvr.engine import completion_logprobs, generate, pack
from nanorlvr.evaluate import score
from nanorlvr.tokenizer import encode_prompt


@dataclass
class Rollout:
    prompts: list          # P*G prompt id lists (each prompt repeated G times, prompt-major)
    completions: list      # P*G completion id lists (stop token included)
    old_logp: torch.Tensor  # (N, L) log-probs of the sampled tokens under the rollout policy
    truncated: torch.Tensor  # (N,) bool
    rewards: torch.Tensor  # (N,) float in {0, 1}
    seconds_gen: float
    seconds_verify: float


@torch.no_grad()
def rollout(model, enc, problems, group_size, max_new_tokens, temperature, seed, top_p=1.0, workers=2, autocast=None):
    t0 = time.time()
    prompts = [encode_prompt(enc, p["question"]) for p in problems for _ in range(group_size)]
    with autocast or torch.autocast("cpu", enabled=False):
        g = generate(model, prompts, max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                     stop_ids=[enc.eot_token])
    t1 = time.time()
    ok, _ = score(g.tokens, [p["answer"] for p in problems for _ in range(group_size)], enc, workers=workers)
    t2 = time.time()
    L = int(g.lengths.max())
    return Rollout(prompts, g.tokens, g.logprobs[:, :L].cpu(), g.truncated.cpu(), torch.tensor(ok, dtype=torch.float),
                   t1 - t0, t2 - t1)


def grpo_update(model, optimizer, scheduler, roll: Rollout, cfg, ref_model=None, autocast=None):
    """Advantages -> cfg.mu passes of cfg.n_minibatches optimizer steps. Returns a dict of floats."""
    device = next(model.parameters()).device
    G = cfg.group_size
    adv = grpo.group_advantages(roll.rewards, G, scale_std=cfg.scale_std)
    keep = torch.ones(len(adv), dtype=torch.bool)
    if cfg.dynamic_sampling:
        keep &= ~grpo.zero_variance_groups(roll.rewards, G)
    if cfg.mask_truncated:
        keep &= ~roll.truncated
    stats = {"zero_var_frac": grpo.zero_variance_groups(roll.rewards, G).float().mean().item(),
             "rows_used": int(keep.sum())}
    if not keep.any() or not adv[keep].abs().any():
        stats["skipped"] = "no row has a non-zero advantage"
        return stats
    # Rows with zero advantage have exactly zero policy gradient: without a KL term they only count in the
    # loss normaliser, so they are left out of the forward/backward (same gradient, less compute).
    lengths = torch.tensor([len(c) for c in roll.completions])
    full_norm = grpo.loss_normaliser(torch.arange(cfg.max_new_tokens)[None, :] < lengths[keep, None],
                                     cfg.loss_agg, constant=cfg.max_new_tokens)
    if cfg.kl_coef == 0:
        keep &= adv != 0
    rows = keep.nonzero().squeeze(-1)
    idx, plen, clen = pack([roll.prompts[i] for i in rows], [roll.completions[i] for i in rows])
    Lc = int(clen.max())
    old_logp, adv = roll.old_logp[rows, :Lc].to(device), adv[rows].to(device)
    idx, plen, clen = idx.to(device), plen.to(device), clen.to(device)
    ctx = autocast or torch.autocast("cpu", enabled=False)
    with torch.no_grad(), ctx:
        if cfg.top_p < 1.0:  # the engine's log-probs are of the nucleus distribution: use the full one
            old_logp, _ = completion_logprobs(model, idx, plen, clen, cfg.temperature)
        ref_logp = completion_logprobs(ref_model, idx, plen, clen, cfg.temperature)[0] if ref_model else None
    mask = (torch.arange(Lc, device=device)[None, :] < clen[:, None]).float()
    weights = grpo.token_weights(old_logp.exp(), cfg.reweight, cfg.reweight_c)
    n = len(rows)
    mb_size = math.ceil(n / cfg.n_minibatches)
    agg_stats, n_updates = {}, 0
    for epoch in range(cfg.mu):
        perm = torch.randperm(n) if cfg.n_minibatches > 1 else torch.arange(n)
        for mb in perm.split(mb_size):
            mb = mb.to(device)
            norm = full_norm * len(mb) / n  # this minibatch's share of the full batch's normaliser
            with ctx:
                logp, _, ent = completion_logprobs(model, idx[mb], plen[mb], clen[mb], cfg.temperature, with_entropy=True)
                loss, s = grpo.policy_loss(logp, old_logp[mb], adv[mb], mask[mb], eps_low=cfg.eps_low,
                                           eps_high=cfg.eps_high, agg=cfg.loss_agg, weights=weights[mb],
                                           ref_logp=None if ref_logp is None else ref_logp[mb],
                                           kl_coef=cfg.kl_coef, loss_norm=norm)
            if not torch.isfinite(loss):
                stats["skipped"] = f"non-finite loss {loss.item()} (epoch {epoch}): step skipped"
                optimizer.zero_grad(set_to_none=True)
                return stats
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            s.update(loss=loss.item(), grad_norm=gnorm.item(), entropy=grpo.masked_mean(ent.detach(), mask[mb]).item())
            for key, v in s.items():
                agg_stats[key] = agg_stats.get(key, 0.0) + v
            n_updates += 1
    scheduler.step()
    stats.update({key: v / n_updates for key, v in agg_stats.items()})
    return stats
