"""Specification of nanorlvr.papers.stats: Paper 1 token metrics / gate / separability, Paper 2 linearity R^2 and
filters, and pass@k."""

import math

import pytest
import torch

from nanorlvr.papers.stats import (histogram_overlap, logprob_r2_filter, n_sample, pass_at_k, r2_vs_step,
                            replacement_gate, sample_entries, separability, token_metrics, weight_r2_filter)

# ----------------------------------------------------------------------------- Paper 1


def test_token_metrics_hand_number():
    # pi_base = (1/2, 1/2), pi_RL = (3/4, 1/4), token 0
    m = token_metrics(torch.zeros(2), torch.log(torch.tensor([3.0, 1.0])), torch.tensor(0))
    assert math.isclose(m["dlogp"].item(), math.log(1.5), rel_tol=1e-5)
    assert math.isclose(m["kl"].item(), 0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel_tol=1e-5)
    assert math.isclose(m["entropy_base"].item(), math.log(2), rel_tol=1e-5)
    assert math.isclose(m["entropy_rl"].item(), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), rel_tol=1e-5)


def test_token_metrics_match_explicit_per_element_computation():
    g = torch.Generator().manual_seed(0)
    lb, lr = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    tok = torch.randint(0, 5, (2, 3), generator=g)
    m = token_metrics(lb, lr, tok)
    for i in range(2):
        for t in range(3):
            pb, pr = torch.softmax(lb[i, t].double(), 0), torch.softmax(lr[i, t].double(), 0)
            y = tok[i, t]
            assert math.isclose(m["dlogp"][i, t].item(), (pr[y].log() - pb[y].log()).item(), abs_tol=1e-5)
            assert math.isclose(m["kl"][i, t].item(), sum(pr[v] * (pr[v] / pb[v]).log() for v in range(5)).item(), abs_tol=1e-5)
            assert math.isclose(m["entropy_base"][i, t].item(), -(pb * pb.log()).sum().item(), abs_tol=1e-5)
            assert math.isclose(m["entropy_rl"][i, t].item(), -(pr * pr.log()).sum().item(), abs_tol=1e-5)
    assert all(v.shape == (2, 3) for v in m.values())


def test_replacement_gate_fires_exactly_where_the_criterion_holds():
    x = torch.tensor([-1.0, -0.3, 0.0, 0.5])
    assert replacement_gate("dlogp", -0.3, dlogp=x).tolist() == [True, True, False, False]
    assert replacement_gate("kl", 0.0, kl=x).tolist() == [False, False, True, True]
    assert replacement_gate("entropy", 0.5, entropy=x).tolist() == [False, False, False, True]
    assert replacement_gate("random", 0.0, rand=x).tolist() == [True, True, False, False]


def test_replacement_gate_rejects_missing_input_or_unknown_criterion():
    with pytest.raises(ValueError):
        replacement_gate("kl", 0.1, dlogp=torch.zeros(2))
    with pytest.raises(ValueError):
        replacement_gate("magnitude", 0.1, dlogp=torch.zeros(2))


def test_separability_auc_hand_example_with_ties():
    # a = [1, 2, 3], b = [0, 2]: pairs a>b: (1,0) (2,0) (3,0) (3,2) = 4, tie (2,2) = 0.5 -> 4.5 / 6
    a, b = torch.tensor([1.0, 2, 3]), torch.tensor([0.0, 2])
    assert math.isclose(separability(a, b), 0.75)
    assert math.isclose(separability(b, a), 0.25)
    assert math.isclose(separability(torch.tensor([5.0, 6]), torch.tensor([1.0, 2, 3])), 1.0)
    assert math.isclose(separability(torch.ones(3), torch.ones(4)), 0.5)


def test_separability_matches_pairwise_count():
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 6, (30,), generator=g).float()
    b = torch.randint(0, 6, (20,), generator=g).float()
    pairwise = ((a[:, None] > b[None]).double() + 0.5 * (a[:, None] == b[None]).double()).mean().item()
    assert math.isclose(separability(a, b), pairwise, rel_tol=1e-12)


def test_histogram_overlap_identical_and_disjoint():
    x = torch.tensor([0.0, 1, 2, 3])
    assert math.isclose(histogram_overlap(x, x.clone(), bins=4), 1.0, rel_tol=1e-9)
    assert histogram_overlap(torch.tensor([0.0, 0.1]), torch.tensor([0.9, 1.0]), bins=4) == 0.0
    # bins [0,1) [1,2]: a = (2, 0) / 2, b = (1, 1) / 2 -> min = 0.5 + 0
    assert math.isclose(histogram_overlap(torch.tensor([0.0, 0.5]), torch.tensor([0.0, 2.0]), bins=2), 0.5)


# ----------------------------------------------------------------------------- Paper 2


def test_r2_is_one_for_exactly_linear_trajectories_of_either_sign():
    steps = torch.arange(0, 1400, 100)
    vals = torch.stack([0.5 + 1e-3 * steps, 2.0 - 3e-5 * steps])
    assert torch.allclose(r2_vs_step(vals, steps), torch.ones(2, dtype=torch.float64))


def test_r2_hand_value_and_nan_for_constant_rows():
    # y = (0, 1, 3) vs x = (0, 1, 2): sxy = 3, sxx = 2, syy = 42/9 -> R^2 = 9 / (2 * 42/9) = 81/84
    r2 = r2_vs_step(torch.tensor([[0.0, 1, 3], [1.0, 2, 1], [4.0, 4, 4]]), torch.tensor([0, 1, 2]))
    assert math.isclose(r2[0].item(), 81 / 84, rel_tol=1e-12)
    assert r2[1].item() == 0.0
    assert math.isnan(r2[2].item())


def test_r2_of_iid_noise_is_near_zero():
    g = torch.Generator().manual_seed(2)
    r2 = r2_vs_step(torch.randn(2000, 20, generator=g), torch.arange(20))
    assert r2.mean() < 0.15  # E[R^2] = 1 / (K - 1) ~ 0.053 under the null


def test_weight_filter_drops_still_and_few_valued_entries():
    traj = torch.tensor([
        [0.0, 0.0, 0.0, 0.0, 1e-5],      # range 1e-5 <= 1e-4: drop
        [0.0, 1.0, 0.0, 1.0, 0.0],       # only 2 distinct values: drop
        [0.0, 1.0, 2.0, 2.0, 2.0],       # 3 distinct values: drop
        [0.0, 1.0, 2.0, 3.0, 3.0],       # 4 distinct, range 3: keep
        [0.0, 1e-3, 2e-3, 3e-3, 4e-3],   # 5 distinct, range 4e-3: keep
    ])
    assert weight_r2_filter(traj).tolist() == [False, False, False, True, True]


def test_logprob_filter_keeps_tokens_that_move_more_than_threshold():
    lp = torch.tensor([[-1.0, -5.0, -0.7], [-1.0, -3.0, -0.9], [-0.5, 0.0, -1.0]])
    assert logprob_r2_filter(lp).tolist() == [True, False, True]


def test_sample_size_rule():
    assert [n_sample(n) for n in (10, 1000, 50_000, 100_000, 100_001)] == [10, 50, 50, 100, 101]


def test_sample_entries_are_distinct_in_range_and_reproducible():
    idx = sample_entries(1000, 50, torch.Generator().manual_seed(3))
    assert idx.shape == (50,) and idx.unique().numel() == 50 and 0 <= idx.min() and idx.max() < 1000
    assert torch.equal(idx, sample_entries(1000, 50, torch.Generator().manual_seed(3)))


# ----------------------------------------------------------------------------- pass@k


def test_pass_at_k_hand_values():
    assert math.isclose(pass_at_k(4, 1, 2), 0.5)       # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert math.isclose(pass_at_k(5, 2, 2), 0.7)       # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert math.isclose(pass_at_k(10, 3, 1), 0.3)      # k = 1: c / n
    assert pass_at_k(3, 2, 2) == 1.0                   # n - c < k
    assert pass_at_k(8, 0, 4) == 0.0
    assert math.isclose(pass_at_k(64, 5, 16), 1 - math.comb(59, 16) / math.comb(64, 16), rel_tol=1e-12)


def test_pass_at_k_rejects_impossible_arguments():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)
