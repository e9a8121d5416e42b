"""
Splitting a GRPO update. Over micro-batches (rows grouped by length) and, with torch.distributed on CPU
(gloo, two processes), over two ranks each with half of the prompt groups, it gives the weights of the
single-process update on the whole batch (the global loss normaliser, the gradient all-reduce, ranks left
with no rows); and train.py runs under two ranks.
"""
import copy
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import train
from nanorlvr.infra import checkpoint as ckpt
from nanorlvr import lora
from nanorlvr.infra import dist
from nanorlvr.infra.common import UsageError
from nanorlvr.grpo import GRPOConfig, Rollout, grpo_update, micro_batches
from nanorlvr.model import GPT, GPTConfig
from nanorlvr.logprobs import completion_logprobs, pack

P, G, MAX_NEW = 4, 4, 8
# name: (config overrides, optimizer, rank 1 gets only equal-reward groups). n_minibatches > 1 is left out:
# each rank then draws its own minibatches, so the steps match one process only in distribution.
CASES = {
    "token-mean-sgd": (dict(), "sgd", False),
    "seqmean-micro-lowprob-sgd": (dict(loss_agg="seq-mean-token-mean", micro_batch=2, reweight="lowprob"), "sgd", False),
    "dr-grpo-micro-sgd": (dict(loss_agg="seq-sum-constant", scale_std=False, micro_batch=3), "sgd", False),
    "adamw-mu2-kl-topp": (dict(mu=2, kl_coef=0.1, top_p=0.9, grad_clip=1.0), "adamw", False),
    "rank1-has-no-rows": (dict(), "sgd", True),
    # LoRA rank 2 (B made non-zero, so A has a gradient too); the KL reference is the base (adapters off)
    "lora-adamw-kl": (dict(kl_coef=0.1, grad_clip=1.0), "adamw", False),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(case):
    """The model, optimizer, config and whole-batch rollout of a case (identical in every process)."""
    over, opt_name, rank1_flat = CASES[case]
    cfg = GRPOConfig(**{"group_size": G, "max_new_tokens": MAX_NEW, "grad_clip": 1e9, **over})
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_embd=32, n_head=2))
    ref = copy.deepcopy(model).eval() if cfg.kl_coef else None
    g = torch.Generator().manual_seed(1)
    if case.startswith("lora"):
        lora.add_adapters(model, rank=2, alpha=32, seed=0)
        with torch.no_grad():
            for m in lora.adapters(model).values():
                m.lora_B.copy_(0.05 * torch.randn(m.lora_B.shape, generator=g))
        ref = lora.BaseView(model)
    N = P * G
    prompts = [torch.randint(0, 256, (int(torch.randint(2, 7, (1,), generator=g)),), generator=g).tolist()
               for _ in range(P)]
    prompts = [p for p in prompts for _ in range(G)]
    lens = torch.randint(1, MAX_NEW + 1, (N,), generator=g)
    completions = [torch.randint(0, 256, (int(n),), generator=g).tolist() for n in lens]
    truncated = (lens == MAX_NEW) & (torch.rand(N, generator=g) < 0.5)
    rewards = torch.tensor([1., 0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1, 0])
    if rank1_flat:
        rewards[N // 2:] = 1.0  # rank 1's groups all have equal rewards: zero advantage, no rows
    idx, plen, clen = pack(prompts, completions)
    with torch.no_grad():
        old_logp, mask = completion_logprobs(model, idx, plen, clen)
    old_logp = (old_logp + 0.1 * torch.randn(old_logp.shape, generator=g)) * mask  # ratios off 1: clipping
    roll = Rollout(prompts, completions, old_logp, truncated, rewards, 0.0, 0.0)
    if opt_name == "sgd":  # plain SGD, lr 1: the weight change IS the gradient (Adam would hide a scale error)
        opt = torch.optim.SGD(lora.trainable(model), lr=1.0)
    else:  # AdamW with a large eps: g / (sqrt(v) + eps) is ~ g / eps for small g, so an element whose gradient
        # is zero up to rounding moves by ~0, not by +-lr in whichever direction its last bit points
        opt = torch.optim.AdamW(lora.trainable(model), lr=1e-2, betas=(0.9, 0.95), eps=1e-3)
    return model, opt, cfg, roll, ref


def rows_of(roll, rank, world):
    n = len(roll.prompts) // world
    sl = slice(rank * n, (rank + 1) * n)
    return Rollout(roll.prompts[sl], roll.completions[sl], roll.old_logp[sl], roll.truncated[sl], roll.rewards[sl], 0, 0)


def update(case, rank=0, world=1):
    model, opt, cfg, roll, ref = setup(case)
    stats = grpo_update(model, opt, rows_of(roll, rank, world), cfg, ref)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, stats


def test_micro_batches_hold_rows_of_similar_length_longest_first():
    lens = torch.tensor([3, 9, 1, 8, 2, 7])
    chunks = micro_batches(torch.arange(6), 2, lens)
    assert [c.tolist() for c in chunks] == [[1, 3], [5, 0], [4, 2]]  # lengths (9, 8), (7, 3), (2, 1)
    assert [c.tolist() for c in micro_batches(torch.tensor([4, 0, 2]), 0, lens)] == [[4, 0, 2]]  # no micro-batching


@pytest.mark.parametrize("case", ["seqmean-micro-lowprob-sgd", "dr-grpo-micro-sgd"])
def test_micro_batched_update_equals_the_whole_batch_update(case):
    torch.set_num_threads(1)
    micro, _ = update(case)
    model, opt, cfg, roll, ref = setup(case)
    assert cfg.micro_batch and len({len(c) for c in roll.completions}) > 1  # chunks really regroup rows
    cfg.micro_batch = 0
    grpo_update(model, opt, roll, cfg, ref)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(micro[k], v, rtol=1e-5, atol=1e-6, msg=f"{case} {k}")


TINY = ["--n_layer=1", "--n_embd=32", "--n_head=2", "--n_ops=1", "--max_num=9", "--p_direct=0", "--n_train=200", "--n_test=16",
        "--n_eval=16", "--eval_k=2", "--group_size=4", "--max_new_tokens=16", "--lr=3e-3", "--warmup=1",
        "--threads=1", "--verify_workers=1", "--prompts_per_step=4"]


def _worker(rank, world, port, out, train_args):
    """Both two-rank runs in one spawn (starting processes is most of the cost): the update cases, then train.py."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    dist.init("cpu")
    torch.save({case: update(case, rank, world) for case in CASES}, f"{out}/rank{rank}.pt")
    train.main(train_args)  # joins the group made above (and, at its end, destroys it)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    base = [f"--data_dir={d}/data", f"--base_dir={d}/base"]
    train.main(TINY + base + ["--stage=sft", "--sft_steps=60", "--sft_batch=32"])
    mp.spawn(_worker, args=(2, free_port(), str(d), TINY + base + ["--stage=grpo", "--steps=2", f"--out_dir={d}/out"]),
             nprocs=2)
    return d


def test_two_ranks_take_the_single_process_step(two_ranks):
    ranks = [torch.load(two_ranks / f"rank{r}.pt") for r in range(2)]
    torch.set_num_threads(1)
    for case in CASES:
        single, stats = update(case)
        assert "skipped" not in stats and stats.get("rows_used", 0) > 0, (case, stats)
        init = setup(case)[0].state_dict()
        assert any(not torch.equal(single[k], init[k]) for k in single), f"{case}: the update changed nothing"
        for r, got in enumerate(ranks):
            weights, rstats = got[case]
            for k in single:
                torch.testing.assert_close(weights[k], single[k], rtol=1e-5, atol=1e-6, msg=f"{case} rank {r} {k}")
            # the loss is reported for the whole batch on every rank
            assert rstats["loss"] == pytest.approx(stats["loss"], rel=1e-5, abs=1e-7), case


def test_train_py_under_two_ranks(two_ranks):
    run = two_ranks / "out/grpo"
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [0, 2]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 2]  # rank 0 alone wrote: eval, two steps, final eval
    assert all(type(r["step"]) is int and type(r.get("rows_used", 0)) is int for r in rows)
    assert all(r["eval"]["n"] == 16 for r in rows if "eval" in r)  # both shards of the evaluation combined
    summary = json.loads((two_ranks / "out/summary.json").read_text())
    assert 0.0 <= summary["final_greedy_acc"] <= 1.0


def test_bad_world_splits_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(dist, "world", lambda: 3)
    monkeypatch.setattr(dist, "barrier", lambda: None)
    (tmp_path / "config.json").write_text("{}")  # a base folder (what the flags are checked against)
    with pytest.raises(UsageError, match="--prompts_per_step=4: must be a multiple of the 3 ranks"):
        train.setup(train.parse_config(train.TrainConfig, TINY + ["--stage=grpo", f"--base_dir={tmp_path}",
                                                                f"--data_dir={tmp_path}/data"]), "cpu")
