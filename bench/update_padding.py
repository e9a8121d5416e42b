"""
Padding in the GRPO update: micro-batches of rows grouped by length, longest first (what grpo.grpo_update
does) against micro-batches in batch order (the naive way). Each micro-batch is padded to its
longest row, so the order decides how many padding tokens the forward and backward compute.

Completion lengths are drawn from a lognormal (median --median tokens, log-spread --sigma, capped at
--new_tokens, where a row counts as truncated): a stand-in for chain-of-thought lengths, not measured ones.
Prints the tokens each order computes for the shape of docs/scaling.md's recipe (256 rows, micro-batch 8), then
times one update of a small model on this machine at a scaled-down shape, both orders, a few times each.

    python bench/update_padding.py [--rows=256 --micro_batch=8 --median=300 --sigma=0.6 --new_tokens=1024]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nanorlvr import grpo  # noqa: E402
from nanorlvr.model import GPT, GPTConfig  # noqa: E402
from nanorlvr.logprobs import completion_logprobs, pack  # noqa: E402


GROUPED = grpo.micro_batches


def in_order(rows, micro, seq_lens=None):
    """The naive micro-batches: rows in batch order (micro_batches without the lengths)."""
    return GROUPED(rows, micro)


def lengths(n, median, sigma, cap, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.exp(torch.randn(n, generator=g) * sigma) * median
    return x.round().clamp(1, cap).long()


def computed_tokens(seq_lens, micro, chunks):
    """Tokens the update computes: each micro-batch's rows padded to its longest."""
    return sum(len(c) * int(seq_lens[c].max()) for c in chunks(torch.arange(len(seq_lens)), micro, seq_lens))


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--micro_batch", type=int, default=8)
    ap.add_argument("--prompt_len", type=int, default=128)
    ap.add_argument("--median", type=float, default=300)
    ap.add_argument("--sigma", type=float, default=0.6)
    ap.add_argument("--new_tokens", type=int, default=1024)
    ap.add_argument("--scale", type=int, default=8, help="CPU timing: lengths divided by this")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    comp = lengths(args.rows, args.median, args.sigma, args.new_tokens, seed=0)
    seq = comp + args.prompt_len
    real = int(seq.sum())
    print(f"{args.rows} rows, micro-batch {args.micro_batch}: completions median {int(comp.median())}, "
          f"mean {comp.float().mean():.0f}, max {int(comp.max())} tokens, {(comp == args.new_tokens).float().mean():.0%} "
          f"at the cap; prompt {args.prompt_len}; {real:,} real tokens")
    for name, chunks in (("in batch order", in_order), ("grouped by length", GROUPED)):
        t = computed_tokens(seq, args.micro_batch, chunks)
        print(f"  {name:18s} computes {t:,} tokens ({t / real:.2f}x the real ones)")

    # one update of a small model at lengths / scale, on this machine
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=4, n_embd=256, n_head=4, vocab_size=2048, max_seq_len=1024))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay put: every timed update is the same
    n, P, new = args.rows // 4, args.prompt_len // args.scale, args.new_tokens // args.scale
    clen = lengths(n, args.median / args.scale, args.sigma, new, seed=1)
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, 2048, (P,), generator=g).tolist() for _ in range(n)]
    completions = [torch.randint(0, 2048, (int(c),), generator=g).tolist() for c in clen]
    idx, plen, cl = pack(prompts, completions)
    with torch.no_grad():
        old = completion_logprobs(model, idx, plen, cl)[0]
    rewards = torch.zeros(n)
    rewards[::2] = 1.0
    roll = grpo.Rollout(prompts, completions, old, torch.zeros(n, dtype=torch.bool), rewards, 0.0, 0.0)
    cfg = grpo.GRPOConfig(group_size=8, max_new_tokens=new, mask_truncated=False, micro_batch=args.micro_batch)
    times = {"in batch order": [], "grouped by length": []}
    for _ in range(args.repeats):
        for name, chunks in (("in batch order", in_order), ("grouped by length", GROUPED)):
            grpo.micro_batches = chunks
            t = time.perf_counter()
            grpo.grpo_update(model, opt, roll, cfg)
            times[name].append(time.perf_counter() - t)
    grpo.micro_batches = GROUPED
    print(f"CPU ({torch.get_num_threads()} threads), {n} rows of {P} + median {int(clen.median())} (max "
          f"{int(clen.max())}) tokens, 4 x 256 model, micro-batch {args.micro_batch}, median of {args.repeats}:")
    for name, ts in times.items():
        t = computed_tokens(plen + cl, args.micro_batch, in_order if name == "in batch order" else GROUPED)
        print(f"  {name:18s} {statistics.median(ts):.2f} s  ({t:,} tokens computed)")
    ratio = statistics.median(times["in batch order"]) / statistics.median(times["grouped by length"])
    print(f"  grouped by length is {ratio:.2f}x faster")


if __name__ == "__main__":
    main()
