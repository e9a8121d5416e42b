"""The rollout/training log-prob mismatch: grpo_update logs it, and its two corrections (old log-probs
recomputed by the training model, verl's default; truncated importance sampling) are the identity when the
sampler and the trainer agree, while recomputing makes a bf16 sampler's first pass exactly on-policy."""

import torch

from nanorlvr.infra.precision import SamplingCopy
from nanorlvr.engine import generate
from nanorlvr.model import GPT, GPTConfig
from nanorlvr.grpo import GRPOConfig, Rollout, grpo_update

P, G, NEW = 4, 4, 8
REWARDS = torch.tensor([1., 0, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0])


def update(precision="fp32", **over):
    """One GRPO update (SGD, lr 1: the weight change is the gradient) on a rollout sampled by `precision`'s
    sampler (bf16-mixed: a bf16 copy). Returns (initial weights, updated weights, stats)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_embd=32, n_head=2))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    prompts = [p for p in ([1, 2, 3], [4, 5, 6, 7, 8], [9], [10, 11, 12]) for _ in range(G)]
    g = generate(SamplingCopy(model, precision).get(), prompts, NEW, temperature=1.0, seed=0)
    roll = Rollout(prompts, g.tokens, g.logprobs[:, :int(g.lengths.max())], torch.zeros(len(prompts), dtype=torch.bool), REWARDS, 0.0, 0.0)
    cfg = GRPOConfig(group_size=G, max_new_tokens=NEW, grad_clip=1e9, **over)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    stats = grpo_update(model, opt, roll, cfg)
    return init, model.state_dict(), stats


def test_corrections_are_the_identity_when_sampler_and_trainer_agree():
    init, plain, stats = update()
    assert stats["logp_diff_max"] < 1e-5  # the fp32 sampler is the training model
    assert any(not torch.equal(plain[k], init[k]) for k in plain)
    for over in (dict(old_logp="recompute"), dict(tis_cap=2.0), dict(old_logp="recompute", tis_cap=1.0)):
        _, w, _ = update(**over)
        for k in plain:
            torch.testing.assert_close(w[k], plain[k], rtol=1e-5, atol=1e-7, msg=f"{over} {k}")


def test_a_bf16_sampler_mismatch_is_logged_and_recomputing_makes_the_first_pass_on_policy():
    _, _, rollout = update("bf16-mixed")
    assert rollout["logp_diff_max"] > 1e-3 and rollout["logp_diff_mean"] > 0  # bf16 keeps ~3 significant digits
    _, _, recomputed = update("bf16-mixed", old_logp="recompute")
    assert abs(recomputed["ratio_mean"] - 1.0) < 1e-6 and recomputed["clip_frac"] == 0.0
    assert recomputed["logp_diff_mean"] == rollout["logp_diff_mean"]  # still measured against the sampler
    # truncated IS changes the step exactly where the policies disagree
    _, w_tis, _ = update("bf16-mixed", tis_cap=2.0)
    _, w_rec, _ = update("bf16-mixed", old_logp="recompute")
    assert any(not torch.allclose(w_tis[k], w_rec[k], rtol=1e-4, atol=1e-6) for k in w_tis)
