"""Specification of nanorlvr.grpo_loss (advantages, token weights, k3 KL, the clipped policy loss) and of the
parts of nanorlvr.grpo's step that need no model (minibatches and their normalisers, dynamic sampling).

Expected numbers are worked out by hand in the comments next to them."""

import math

import pytest
import torch

from nanorlvr.grpo import Rollout, informative_rollout, minibatches
from nanorlvr.grpo_loss import (group_advantages, kl_k3, logprob_mismatch, loss_normaliser, masked_mean,
                                overlong_penalty, policy_loss, tis_weights, token_weights, zero_variance_groups)

AGGS = ["token-mean", "seq-mean-token-mean", "seq-sum-constant"]


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


# ----------------------------------------------------------------------------- advantages

def test_group_advantages_use_population_std_per_consecutive_group():
    # group 1: mean 0.25, population std sqrt(0.1875) -> 0.75/std = sqrt(3), -0.25/std = -1/sqrt(3)
    # group 2: mean 0.5, population std 0.5 -> +-1
    r = torch.tensor([1., 0, 0, 0, 1, 1, 0, 0])
    s3 = math.sqrt(3)
    assert close(group_advantages(r, 4, eps=0.0), [s3, -1 / s3, -1 / s3, -1 / s3, 1, 1, -1, -1])


def test_group_advantages_add_eps_to_std():
    # mean 0.5, std 0.5, eps 0.1 -> 0.5 / 0.6
    assert close(group_advantages(torch.tensor([1., 0]), 2, eps=0.1), [0.5 / 0.6, -0.5 / 0.6])


def test_dr_grpo_advantages_are_centred_but_not_scaled():
    r = torch.tensor([1., 0, 0, 0, 1, 1, 0, 0])
    assert close(group_advantages(r, 4, scale_std=False), [0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5])


def test_zero_variance_groups_flag_every_row_of_constant_groups_and_get_exact_zero_advantage():
    r = torch.tensor([0.3, 0.3, 0.3, 1, 0, 1, 0.7, 0.7, 0.7])
    assert zero_variance_groups(r, 3).tolist() == [True] * 3 + [False] * 3 + [True] * 3
    for scale in (True, False):
        a = group_advantages(r, 3, scale_std=scale)
        assert (a[:3] == 0).all() and (a[6:] == 0).all() and (a[3:6] != 0).all()


# ----------------------------------------------------------------------------- token weights, KL, helpers

def test_lowprob_and_dominate_token_weights():
    p = torch.tensor([0.0, 0.5, 1.0], requires_grad=True)
    assert close(token_weights(p, "lowprob", 0.2), [1.2, 1.1, 1.0])   # 1 + c(1-p)
    assert close(token_weights(p, "dominate", 0.2), [0.8, 0.9, 1.0])  # 1 - c + c p
    assert close(token_weights(p, "none", 0.2), [1.0, 1.0, 1.0])
    assert not token_weights(p, "lowprob", 0.2).requires_grad
    with pytest.raises(ValueError):
        token_weights(p, "bogus", 0.2)


def test_kl_k3_hand_value_and_zero_when_equal():
    # pi = 0.5, pi_ref = 0.25: d = log 0.5; exp(d) - d - 1 = 0.5 + log 2 - 1
    assert close(kl_k3(torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25))), 0.5 + math.log(2) - 1)
    x = torch.randn(5)
    assert (kl_k3(x, x) == 0).all()


def test_masked_mean_ignores_masked_positions():
    assert close(masked_mean(torch.tensor([1., 2, 9]), torch.tensor([1, 1, 0])), 1.5)


# ----------------------------------------------------------------------------- policy loss, hand example
# ratios r = [[1.0, 1.5, 0.5], [1.1, 0.7, 2.0]], last token of seq 1 masked, A = [1, -2], clip range [0.8, 1.28]
# seq 0 (A=1):  -min(r, clip r)        = -1.0, -1.28 (clipped), -0.5
# seq 1 (A=-2): 2 max(r, clip r)       =  2.2,  1.6 (clipped), (4.0 masked)
# sum over the 5 tokens = 1.02

R = torch.tensor([[1.0, 1.5, 0.5], [1.1, 0.7, 2.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
ADV = torch.tensor([1.0, -2.0])


def hand_loss(**kw):
    return policy_loss(torch.log(R), torch.zeros(2, 3), ADV, MASK, **kw)


def test_token_mean_loss_and_stats_on_hand_example():
    loss, st = hand_loss(agg="token-mean")
    assert close(loss, 1.02 / 5)
    assert close(st["clip_frac"], 2 / 5)
    assert close(st["ratio_mean"], 4.8 / 5)
    # mean of r - 1 - log r over the 5 tokens
    assert close(st["approx_kl"], (0.5 - math.log(1.5) - 0.5 + math.log(2) + 0.1 - math.log(1.1) - 0.3 - math.log(0.7)) / 5)
    assert "kl_ref" not in st
    per_token_adv, _ = policy_loss(torch.log(R), torch.zeros(2, 3), ADV[:, None].expand(2, 3), MASK)
    assert close(per_token_adv, 1.02 / 5)


def test_seq_mean_token_mean_loss_on_hand_example():
    loss, _ = hand_loss(agg="seq-mean-token-mean")
    assert close(loss, ((-1 - 1.28 - 0.5) / 3 + (2.2 + 1.6) / 2) / 2)


def test_seq_sum_constant_loss_on_hand_example():
    loss, _ = hand_loss(agg="seq-sum-constant")  # default constant = padded length 3
    assert close(loss, 1.02 / (2 * 3))
    loss, _ = hand_loss(agg="seq-sum-constant", loss_norm=loss_normaliser(MASK, "seq-sum-constant", constant=10))
    assert close(loss, 1.02 / (2 * 10))


def test_token_weights_multiply_the_advantage():
    # weights 2 on (0,1): A~=2, r=1.5 -> -min(3, 2.56) = -2.56; 0.5 on (1,0): A~=-1, r=1.1 -> 1.1
    w = torch.tensor([[1.0, 2.0, 1.0], [0.5, 1.0, 1.0]])
    loss, _ = hand_loss(weights=w)
    assert close(loss, (-1 - 2.56 - 0.5 + 1.1 + 1.6) / 5)


def test_kl_penalty_adds_kl_coef_times_k3():
    # ref = logp + log 2 everywhere: k3 = 2 - log 2 - 1 per token
    k3 = 1 - math.log(2)
    loss, st = hand_loss(ref_logp=torch.log(R) + math.log(2), kl_coef=0.1)
    assert close(loss, 1.02 / 5 + 0.1 * k3)
    assert close(st["kl_ref"], k3)


def test_unknown_aggregation_raises():
    with pytest.raises(ValueError):
        hand_loss(agg="mean")


# ----------------------------------------------------------------------------- on-policy gradient

def test_on_policy_first_pass_has_no_clipping_and_gradient_minus_weighted_advantage():
    torch.manual_seed(0)
    logp = (-torch.rand(3, 4) * 3).requires_grad_()
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    adv = torch.tensor([0.5, -1.0, 2.0])
    w = token_weights(torch.exp(logp.detach()), "lowprob", 0.2)
    for agg in AGGS:
        logp.grad = None
        loss, st = policy_loss(logp, logp.detach(), adv, mask, agg=agg, weights=w)
        loss.backward()
        assert st["clip_frac"] == 0 and close(st["ratio_mean"], 1.0) and close(st["approx_kl"], 0.0)
        g = -adv[:, None] * w * mask  # d/dlogp of -ratio*A~ at ratio = 1, before aggregation
        if agg == "token-mean":
            expect = g / 7
        elif agg == "seq-mean-token-mean":
            expect = g / torch.tensor([4.0, 2.0, 1.0])[:, None] / 3
        else:
            expect = g / (3 * 4)
        assert close(logp.grad, expect)


def test_zero_variance_groups_contribute_no_policy_gradient():
    torch.manual_seed(1)
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0])  # first group constant
    adv = group_advantages(rewards, 3)
    logp = torch.randn(6, 5).requires_grad_()
    old = logp.detach() + 0.3 * torch.randn(6, 5)  # off-policy: ratios != 1, some clipped
    loss, _ = policy_loss(logp, old, adv, torch.ones(6, 5))
    loss.backward()
    assert (logp.grad[:3] == 0).all()
    assert (logp.grad[3:] != 0).any()


# ----------------------------------------------------------------------------- minibatching

@pytest.mark.parametrize("agg", AGGS)
def test_minibatch_losses_with_full_batch_normaliser_sum_to_full_batch_loss(agg):
    torch.manual_seed(2)
    n, t = 4, 6
    logp = (-torch.rand(n, t) * 2).requires_grad_()
    old = logp.detach() + 0.2 * torch.randn(n, t)
    ref = logp.detach() + 0.1 * torch.randn(n, t)
    adv = torch.tensor([1.0, -0.5, 0.3, -2.0])
    mask = torch.tensor([[1] * 6, [1] * 6, [1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]])  # halves: 12 vs 3 tokens
    full, _ = policy_loss(logp, old, adv, mask, agg=agg, ref_logp=ref, kl_coef=0.05)
    (g_full,) = torch.autograd.grad(full, logp)
    norm = loss_normaliser(mask, agg)
    halves = (slice(0, 2), slice(2, 4))
    total = sum(policy_loss(logp[s], old[s], adv[s], mask[s], loss_norm=norm, agg=agg, ref_logp=ref[s],
                            kl_coef=0.05)[0] for s in halves)
    (g_parts,) = torch.autograd.grad(total, logp)
    assert close(total, full, 1e-6)
    assert close(g_parts, g_full, 1e-7)


def test_loss_normaliser_values():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert loss_normaliser(mask, "token-mean") == 4
    assert loss_normaliser(mask, "seq-mean-token-mean") == 2
    assert loss_normaliser(mask, "seq-sum-constant") == 8
    assert loss_normaliser(mask, "seq-sum-constant", constant=100) == 200


def test_tis_weight_is_the_capped_probability_ratio_on_a_hand_example():
    train, rollout = torch.tensor([[-1.0, -2.0, -0.3]]), torch.tensor([[-1.5, -1.0, -0.3]])
    w = tis_weights(train, rollout, cap=1.5)
    assert close(w, torch.tensor([[1.5, math.exp(-1.0), 1.0]]))  # e^0.5 = 1.65 capped; e^-1; equal policies: 1
    mean, mx = logprob_mismatch(train, rollout, torch.tensor([[1, 1, 0]]))
    assert close(mean, 0.75) and close(mx, 1.0)  # the masked third token counts in neither


def test_importance_weights_multiply_each_token_policy_term_and_ones_change_nothing():
    plain, _ = hand_loss(agg="token-mean")
    ones, _ = hand_loss(agg="token-mean", is_weights=torch.ones(2, 3))
    assert torch.equal(plain, ones)
    w = torch.tensor([[2.0, 1.0, 1.0], [1.0, 1.0, 1.0]])  # doubles the first token's term, -(1.0 * 1)
    weighted, _ = hand_loss(agg="token-mean", is_weights=w)
    assert close(weighted, (1.02 - 1.0) / 5)


# ----------------------------------------------------------------------------- DAPO's rewards and sampling


def test_overlong_penalty_is_dapo_eq13_and_minus_one_when_truncated():
    # budget 10, buffer 4: free up to 6 tokens, then -1/4 per token, -1 at the budget or when cut off
    pen = overlong_penalty([5, 6, 7, 8, 10, 9], [False, False, False, False, False, True], max_len=10, buffer=4)
    assert pen.tolist() == [0.0, 0.0, -0.25, -0.5, -1.0, -1.0]
    assert overlong_penalty([10, 3], [True, False], max_len=10, buffer=0).tolist() == [0.0, 0.0]


def fake_round(rewards_per_group, G=2):
    """A Rollout whose group g has rewards rewards_per_group[g] (G values), prompt ids naming the group."""
    rows = [(g, r) for g, rs in enumerate(rewards_per_group) for r in rs]
    n = len(rows)
    return Rollout([[g] for g, _ in rows], [[7] * (1 + g) for g, _ in rows], torch.zeros(n, 3),
                   torch.zeros(n, dtype=torch.bool), torch.tensor([float(r) for _, r in rows]), 1.0, 0.5)


def test_dynamic_sampling_refills_the_batch_with_informative_groups_until_p():
    # round 0: groups 0 (flat), 1 (informative), 2 (flat); round 1: 0 (informative), 1 (flat), 2 (informative)
    rounds = [fake_round([[0, 0], [0, 1], [1, 1]]), fake_round([[1, 0], [0, 0], [0, 1]]), None]
    drawn = []

    def sample_round(r):
        drawn.append(r)
        return rounds[r]
    roll, info = informative_rollout(sample_round, n_groups=2, group_size=2, max_rounds=3)
    assert drawn == [0, 1]  # stops as soon as P groups are in
    assert roll.prompts == [[1], [1], [0], [0]] and roll.rewards.tolist() == [0, 1, 1, 0]
    assert info["sample_rounds"] == 2 and info["zero_var_frac"] == 3 / 6
    # the policy's figures over all 12 rows drawn (the batch's pass rate is 1 by construction): 5 rewards
    # of 1, 4 of the 6 groups with one, completions of 1 + g tokens for g = 0, 1, 2 in each round
    assert info["reward_drawn"] == pytest.approx(5 / 12) and info["pass_rate_drawn"] == pytest.approx(4 / 6)
    assert info["len_drawn"] == pytest.approx(2.0)
    assert roll.seconds_gen == 2.0  # both rounds' generation time


def test_dynamic_sampling_stops_at_the_round_cap_with_a_smaller_batch():
    roll, info = informative_rollout(lambda r: fake_round([[0, 0], [1, 0]]), n_groups=3, group_size=2, max_rounds=2)
    assert roll.rewards.tolist() == [1, 0, 1, 0] and info["sample_rounds"] == 2


def test_minibatches_are_exactly_n_minibatches_and_their_normalisers_weight_the_step_loss():
    # 5 rows, 4 minibatches: tensor_split sizes 2, 1, 1, 1 (as under torchrun), not ceil(5 / 4) = 2 -> 3 steps
    torch.manual_seed(0)
    mbs = minibatches(5, 4, full_norm=10.0)
    assert [len(mb) for mb, _ in mbs] == [2, 1, 1, 1] and sorted(torch.cat([mb for mb, _ in mbs]).tolist()) == [0, 1, 2, 3, 4]
    # norm = full_norm x share, share = rows / 5: the share-weighted minibatch losses sum / norm add up to
    # the step's loss sum / full_norm
    assert [norm for _, norm in mbs] == [4.0, 2.0, 2.0, 2.0]
    sums = [3.0, 1.0, 2.0, 0.5]  # each minibatch's summed per-token losses
    shares = [len(mb) / 5 for mb, _ in mbs]
    assert math.isclose(sum(w * s / norm for w, s, (_, norm) in zip(shares, sums, mbs)), sum(sums) / 10.0)
    # one minibatch: the rows in order, the step's own normaliser (the default path: no shuffle drawn)
    assert [(mb.tolist(), norm) for mb, norm in minibatches(3, 1, full_norm=7.0)] == [([0, 1, 2], 7.0)]
    # more minibatches than rows: the empty ones are no steps
    assert [len(mb) for mb, _ in minibatches(2, 4, full_norm=1.0)] == [1, 1]


def test_group_advantages_of_an_empty_batch_are_empty():
    assert group_advantages(torch.zeros(0), 8).shape == (0,)
