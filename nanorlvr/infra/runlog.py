"""
What a GRPO run reports: one metrics.jsonl row per step, the console line of each step and of each
evaluation. train.py writes the rows; infra/curves.py draws them; bench/ reads their keys, which stay as they are.

A row: step, real_steps (RL-Extra's virtual steps excluded), reward (mean 0/1 verifier reward), pass_rate
(share of prompts with at least one correct sample), len (mean completion tokens), truncated (share cut off
at the budget), s_gen / s_verify / s_update (seconds), tok_per_s, and grpo.grpo_update's statistics (loss,
clip_frac, entropy, grad_norm, ...: token means, averaged over the step's optimizer steps). reward,
pass_rate, len and truncated are of the batch trained on; under --dynamic_sampling that is the kept groups
only (their pass rate is 1 by construction), and reward_drawn, pass_rate_drawn and len_drawn are the same
figures over every group drawn, the policy's own (grpo.informative_rollout). Under torchrun each value is
the mean over ranks (counts: the sum).
"""
import torch

from nanorlvr.infra import dist
from nanorlvr.infra.common import log  # rank 0 only under torchrun


def step_row(step, real_steps, roll, stats, group_size, seconds_update):
    """The metrics.jsonl row of one GRPO step from its rollout (grpo.Rollout) and update statistics."""
    lens = torch.tensor([len(c) for c in roll.completions], dtype=torch.float)
    row = {"step": step, "real_steps": real_steps, "reward": roll.rewards.mean().item(),
           "pass_rate": roll.rewards.view(-1, group_size).amax(1).mean().item(), "len": lens.mean().item(),
           "truncated": roll.truncated.float().mean().item(), "s_gen": roll.seconds_gen,
           "s_verify": roll.seconds_verify, "s_update": seconds_update,
           "tok_per_s": lens.sum().item() / roll.seconds_gen, **stats}
    return dist.mean_dict(row, sum_keys=("rows_used", "tok_per_s"))  # over ranks


def log_step(row, total_steps, eta):
    """The console line of one step, and a warning for whatever made it useless or suspect."""
    step = row["step"] if "rl_extra_jump_to" not in row else row["rl_extra_jump_to"]
    if "skipped" in row:
        log(f"warning: step {row['step']}: {row['skipped']}")
    if row["truncated"] > 0.5:
        log(f"warning: step {row['step']}: {row['truncated']:.0%} of samples truncated: "
            "raise --max_new_tokens")
    drawn = f" (kept {row['reward']:.3f})" if "reward_drawn" in row else ""  # dynamic sampling's batch
    log(f"step {step:4d}/{total_steps} reward {row.get('reward_drawn', row['reward']):.3f}{drawn} "
        f"pass {row.get('pass_rate_drawn', row['pass_rate']):.2f} len {row.get('len_drawn', row['len']):.1f} "
        f"ent {row.get('entropy', float('nan')):.3f} "
        f"clip {row.get('clip_frac', 0):.3f} kl {row.get('kl_ref', 0):.4f} "
        f"gnorm {row.get('grad_norm', 0):.2f} | gen {row['s_gen']:.1f}s ver {row['s_verify']:.1f}s "
        f"upd {row['s_update']:.1f}s {row['tok_per_s']:.0f} tok/s | eta {eta}")
    if row.get("zero_var_frac", 0) == 1.0:
        log(f"warning: step {step}: every group has equal rewards: zero gradient "
            "(task too easy or too hard?)")


def eval_line(name, r, k):
    """Accuracies, each beside the share of its responses truncated (which score 0)."""
    line = f"{name}: greedy {r['greedy_acc']:.3f} (exact match {r['greedy_exact_match']:.3f}, truncated " \
           f"{r['greedy_truncated']:.3f})"
    if k:
        line += f"  avg@{k} {r[f'avg{k}']:.3f}  pass@{k} {r[f'pass{k}']:.3f} (truncated {r['truncated']:.3f})"
    return line
