"""grpo.grpo_update on a tiny model: the number of optimizer steps --n_minibatches gives, what a non-finite
loss skips (and what it leaves applied), and micro-batch statistics that are token means like the
whole-batch ones."""
import pytest
import torch

from nanorlvr import grpo, grpo_loss
from nanorlvr.grpo import GRPOConfig, Rollout, grpo_update
from nanorlvr.logprobs import completion_logprobs, pack
from nanorlvr.model import GPT, GPTConfig

NEW = 8


def setup(rewards, group_size, **over):
    """A model, SGD on it (lr 1), and a rollout of len(rewards) rows with completions of different lengths
    and old log-probs off the model's (ratios off 1: some clipping)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_embd=32, n_head=2))
    g = torch.Generator().manual_seed(1)
    n = len(rewards)
    prompts = [[1 + i // group_size, 2, 3] for i in range(n)]
    completions = [torch.randint(0, 256, (int(k),), generator=g).tolist()
                   for k in torch.randint(1, NEW + 1, (n,), generator=g)]
    idx, plen, clen = pack(prompts, completions)
    with torch.no_grad():
        old, mask = completion_logprobs(model, idx, plen, clen)
    old = (old + 0.3 * torch.randn(old.shape, generator=g)) * mask
    roll = Rollout(prompts, completions, old, torch.zeros(n, dtype=torch.bool), torch.tensor(rewards), 0.0, 0.0)
    cfg = GRPOConfig(group_size=group_size, max_new_tokens=NEW, grad_clip=1e9, **over)
    return model, torch.optim.SGD(model.parameters(), lr=1.0), roll, cfg


def count_steps(optimizer):
    steps, real = [], optimizer.step
    optimizer.step = lambda *a, **k: (steps.append(1), real(*a, **k))[1]
    return steps


def test_n_minibatches_gives_exactly_that_many_optimizer_steps():
    # one group of 5 with one correct sample: 5 rows with a non-zero advantage; 4 minibatches -> 4 steps
    # (chunks of ceil(5 / 4) = 2 rows gave 3), and the default one minibatch -> 1
    for k in (4, 1):
        model, opt, roll, cfg = setup([1., 0, 0, 0, 0], 5, n_minibatches=k)
        steps = count_steps(opt)
        stats = grpo_update(model, opt, roll, cfg)
        assert len(steps) == k and "skipped" not in stats and stats["rows_used"] == 5


def test_a_non_finite_loss_skips_its_optimizer_step_and_the_later_ones_and_says_which_stay_applied(monkeypatch):
    model, opt, roll, cfg = setup([1., 0, 0, 0, 1, 0, 1, 0], 4, n_minibatches=2, mu=2)
    real, calls = grpo_loss.policy_loss, []

    def policy_loss(*a, **k):  # the second minibatch's loss is nan
        loss, s = real(*a, **k)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 2 else loss), s
    monkeypatch.setattr(grpo.grpo_loss, "policy_loss", policy_loss)
    steps = count_steps(opt)
    stats = grpo_update(model, opt, roll, cfg)
    assert len(steps) == 1 and len(calls) == 2  # the first step taken, nothing after the bad one computed
    assert stats["skipped"] == ("non-finite loss nan in optimizer step 2 of 4: it and the later ones skipped, "
                                "the 1 before it applied")
    assert "loss" in stats and "grad_norm" in stats  # the statistics of the step that was taken
    assert all(p.grad is None for p in model.parameters())  # the bad step's gradient is not left behind


def test_a_non_finite_first_loss_skips_the_whole_step(monkeypatch):
    model, opt, roll, cfg = setup([1., 0, 0, 0, 1, 0, 1, 0], 4)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr(grpo.grpo_loss, "policy_loss", lambda *a, **k: (torch.tensor(float("inf")), {}))
    stats = grpo_update(model, opt, roll, cfg)
    assert stats["skipped"] == "non-finite loss inf: step skipped" and "loss" not in stats
    assert all(torch.equal(v, init[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_micro_batch_statistics_are_token_means_like_the_whole_batch_ones(agg):
    # micro-batches of 3 rows hold different numbers of tokens: their statistics weighted by tokens equal
    # the whole batch's token means (a plain mean of the chunks' means does not)
    rewards = [1., 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0]
    stats = {}
    for micro in (0, 3):
        model, opt, roll, cfg = setup(rewards, 4, micro_batch=micro, loss_agg=agg)
        stats[micro] = grpo_update(model, opt, roll, cfg)
    assert stats[0]["clip_frac"] > 0  # the comparison is not of zeros
    for key in ("clip_frac", "entropy", "approx_kl", "ratio_mean"):
        assert stats[3][key] == pytest.approx(stats[0][key], rel=1e-5, abs=1e-7), key
    assert stats[3]["loss"] == pytest.approx(stats[0]["loss"], rel=1e-5, abs=1e-7)
